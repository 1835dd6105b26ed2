"""Off-the-shelf vs fine-tuning vs scratch on one collection (Sabatelli et al. 2018): runs, table, chart, report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from artlab import plots
from artlab.io import write_csv, write_text
from artlab.runs import HEADLINE_METRICS, runs_root
from artlab.training import RunResult, TrainConfig, train

#: Per strategy: what differs from the shared settings (scratch needs a larger learning rate).
STRATEGY_SETTINGS = {"off_the_shelf": {}, "fine_tune": {"lr": 0.01}, "scratch": {"lr": 0.05}}


@dataclass
class StrategyComparison:
    """The runs of one comparison, their test metrics as a table, the chart and the report page."""

    results: dict[str, RunResult]
    table: pd.DataFrame
    figure: go.Figure
    report: Path


def results_table(results: dict[str, RunResult]) -> pd.DataFrame:
    """One row per strategy/run: the headline test metrics and the run folder."""
    rows = []
    for label, result in results.items():
        row = {"strategy": label, "test images": result.metrics["n_images"]}
        row.update({k: round(result.metrics[k], 4) for k in HEADLINE_METRICS if k in result.metrics})
        row["run"] = result.run.name
        rows.append(row)
    return pd.DataFrame(rows)


def strategy_chart(table: pd.DataFrame, title: str, chance: float | None = None) -> go.Figure:
    """Grouped bars of the test metrics per strategy, with the chance level as a dashed line."""
    import plotly.express as px

    metrics = [c for c in HEADLINE_METRICS if c in table]
    long = table.melt(id_vars="strategy", value_vars=metrics, var_name="metric", value_name="score")
    fig = px.bar(long, x="strategy", y="score", color="metric", barmode="group", title=title, text_auto=".2f",
                 range_y=[0, 1])
    if chance is not None:
        fig.add_hline(y=chance, line_dash="dash", annotation_text=f"chance {chance:.0%}")
    return fig


def write_report(table: pd.DataFrame, fig: go.Figure, stem: Path) -> Path:
    """Write `<stem>.csv`, `<stem>.md` and `<stem>.html` atomically; returns the HTML path."""
    write_csv(stem.with_suffix(".csv"), table)
    write_text(stem.with_suffix(".md"), plots.markdown_table(table))
    return plots.write_figure(fig, stem.with_suffix(".html"))


def run_strategies(data: str = "synthetic", task: str | None = "artist", epochs: int = 8, image_size: int = 128,
                   arch: str = "mobilenet_v2", runs_dir: str | Path | None = None,
                   reports_dir: str | Path | None = None,
                   freeze: int = 0, top_n: int | None = None, seed: int = 0, **overrides) -> StrategyComparison:
    """Train (or reuse) one run per strategy on the same collection, task and split, and report them.

    The report goes to `reports_dir` (default: a `reports` folder beside the run folders).
    """
    results = {}
    for strategy, extra in STRATEGY_SETTINGS.items():
        settings = {"freeze": freeze} if strategy == "fine_tune" else {}
        config = TrainConfig(data=str(data), task=task, strategy=strategy, arch=arch, epochs=epochs,
                             image_size=image_size, top_n=top_n, seed=seed, **(extra | settings | overrides))
        results[strategy] = train(config, runs_dir=runs_dir, resume=True)
    table = results_table(results)
    task = task or TrainConfig.from_dict(results["fine_tune"].run.config()).task
    n_classes = len(results["fine_tune"].metrics.get("classes", [])) or None
    chance = 1 / n_classes if n_classes and "accuracy" in table else None
    tag = Path(str(data)).stem or "data"
    title = f"{tag}, task {task}: off-the-shelf vs fine-tuning vs scratch ({arch}, {image_size} px)"
    fig = strategy_chart(table, title, chance)
    reports = Path(reports_dir) if reports_dir is not None else runs_root(runs_dir) / "reports"
    report = write_report(table, fig, reports / f"strategies-{tag}-{task}")
    return StrategyComparison(results, table, fig, report)


def compare_strategies(data: str = "synthetic", task: str | None = "artist", epochs: int = 8, image_size: int = 128,
                       arch: str = "mobilenet_v2", runs_dir: str | Path | None = None,
                       reports_dir: str | Path | None = None,
                       freeze: int = 0, top_n: int | None = None, seed: int = 0,
                       **overrides) -> tuple[pd.DataFrame, Path]:
    """Off-the-shelf vs fine-tuning vs scratch: (table, report path). See `run_strategies` for everything."""
    comparison = run_strategies(data, task, epochs, image_size, arch, runs_dir, reports_dir, freeze, top_n, seed,
                                **overrides)
    return comparison.table, comparison.report


def strategy_variant(comparison: StrategyComparison, strategy: str = "fine_tune", **changes) -> RunResult:
    """Train (or reuse) one more run like the comparison's `strategy` run, with `changes` (e.g. freeze=5).

    The run goes beside the comparison's runs and is named as `artlab train` names it (an
    off-the-shelf run on another layer has the layer in its name).
    """
    from dataclasses import replace

    from artlab.training.config import default_name

    if strategy not in comparison.results:
        raise KeyError(f"no {strategy!r} run in this comparison; it has {sorted(comparison.results)}")
    base = comparison.results[strategy].run
    saved = TrainConfig.from_dict(base.config())
    config = replace(saved, **changes)
    if config != saved:  # another run: named from its own settings
        config = replace(config, name=default_name(config))
    return train(config, runs_dir=base.path.parent, resume=True)
