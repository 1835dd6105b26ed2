"""Off-the-shelf vs fine-tuning vs scratch on one collection (Sabatelli et al. 2018): runs, table, chart, report."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from artlab.experiments.report import reports_folder, write_report
from artlab.experiments.study import SCRATCH_LR, Study, route_config
from artlab.plots import readable_title
from artlab.runs import runs_root
from artlab.training import STRATEGIES, RunResult, TrainConfig, train
from artlab.training.metrics import HEADLINE_METRICS

#: The comparison's settings where they differ from TrainConfig's: the synthetic collection's artists, 8 epochs.
BASE = {"data": "synthetic", "task": "artist", "epochs": 8}


@dataclass(kw_only=True)
class StrategyComparison(Study):
    """A study of one run per strategy (`results`); its `cells`, also `table`, are also its summary."""

    results: dict[str, RunResult]

    @property
    def table(self) -> pd.DataFrame:
        """The test metrics of each strategy's run."""
        return self.cells


def results_table(results: dict[str, RunResult]) -> pd.DataFrame:
    """One row per strategy/run: the headline test metrics and the run folder."""
    rows = []
    for label, result in results.items():
        row = {"strategy": label, "test images": result.metrics["n_images"]}
        row.update({k: round(result.metrics[k], 4) for k in HEADLINE_METRICS if k in result.metrics})
        row["run"] = result.run.name
        rows.append(row)
    return pd.DataFrame(rows)


def chance_level(results: dict[str, RunResult], table: pd.DataFrame) -> float | None:
    """The accuracy of guessing among the fine-tuned run's classes (None without accuracies to compare)."""
    classes = len(results["fine_tune"].metrics.get("classes", []))
    return 1 / classes if classes and "accuracy" in table else None


def strategy_chart(table: pd.DataFrame, title: str, chance: float | None = None) -> go.Figure:
    """Grouped bars of the test metrics per strategy, with the chance level as a dashed line."""
    import plotly.express as px

    metrics = [c for c in HEADLINE_METRICS if c in table]
    long = table.melt(id_vars="strategy", value_vars=metrics, var_name="metric", value_name="score")
    fig = px.bar(long, x="strategy", y="score", color="metric", barmode="group", title=title, text_auto=".2f",
                 range_y=[0, 1])
    if chance is not None:
        fig.add_hline(y=chance, line_dash="dash", annotation_text=f"chance {chance:.0%}")
    return readable_title(fig)


def run_strategies(base: TrainConfig | dict | None = None, runs_dir: str | Path | None = None,
                   reports_dir: str | Path | None = None, scratch_lr: float = SCRATCH_LR,
                   **changes: Any) -> StrategyComparison:
    """Train (or reuse) one run per strategy on the same collection, task and split, and report them.

    The runs: `base` (default: the synthetic collection's artists, 8 epochs) with `changes`
    (TrainConfig fields, e.g. data=..., freeze=5), each named as `artlab train` names it;
    off-the-shelf and scratch keep the fine-tuning settings' defaults, scratch learns at
    `scratch_lr`. The report goes to `reports_dir` (default: `reports/` beside the run folders).
    """
    base = TrainConfig.coerce(base, "base") if base is not None else TrainConfig(**BASE)
    base = replace(base, name="", **changes)
    base = replace(base, data=str(base.data))
    results = {strategy: train(route_config(base, strategy, scratch_lr), runs_dir=runs_dir, resume=True)
               for strategy in STRATEGIES}
    table = results_table(results)
    task = base.task or TrainConfig.from_dict(results["fine_tune"].run.config()).task
    tag = Path(base.data).stem or "data"
    title = f"{tag}, task {task}: off-the-shelf vs fine-tuning vs scratch ({base.arch}, {base.image_size} px)"
    fig = strategy_chart(table, title, chance_level(results, table))
    stem = reports_folder(reports_dir, runs_dir) / f"strategies-{tag}-{task}"
    report = write_report(stem.with_suffix(".html"), stem.name, [("", fig), ("Every run", table)],
                          {stem.with_suffix(".csv"): table}, markdown=table)
    return StrategyComparison(cells=table, summary=table, figure=fig, report=report,
                              runs_dir=Path(runs_root(runs_dir)), keys=("strategy",),
                              runs={(s,): result.run.name for s, result in results.items()}, results=results)


def compare_strategies(base: TrainConfig | dict | None = None, runs_dir: str | Path | None = None,
                       reports_dir: str | Path | None = None, **changes: Any) -> tuple[pd.DataFrame, Path]:
    """Off-the-shelf vs fine-tuning vs scratch: (table, report path). See `run_strategies` for everything."""
    comparison = run_strategies(base, runs_dir, reports_dir, **changes)
    return comparison.table, comparison.report


def strategy_variant(comparison: StrategyComparison, strategy: str = "fine_tune", **changes) -> RunResult:
    """Train (or reuse) one more run like the comparison's `strategy` run, with `changes` (e.g. freeze=5).

    The run goes beside the comparison's runs and is named as `artlab train` names it (an
    off-the-shelf run on another layer has the layer in its name).
    """
    from artlab.training.config import default_name

    if strategy not in comparison.results:
        raise KeyError(f"no {strategy!r} run in this comparison; it has {sorted(comparison.results)}")
    base = comparison.results[strategy].run
    saved = TrainConfig.from_dict(base.config())
    config = replace(saved, **changes)
    if config != saved:  # another run: named from its own settings
        config = replace(config, name=default_name(config))
    return train(config, runs_dir=base.path.parent, resume=True)
