"""Comparisons of strategies as tables and plotly charts (the demo and the benchmarks use these)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from artlab.analysis.figures import write_figure
from artlab.runs import RUNS_DIR, atomic_path
from artlab.train import RunResult, TrainConfig, train

METRIC_COLUMNS = ("accuracy", "balanced_accuracy", "top3_accuracy", "mAP")


def results_table(results: dict[str, RunResult]) -> pd.DataFrame:
    """One row per strategy/run: the headline test metrics and the run folder."""
    rows = []
    for label, result in results.items():
        row = {"strategy": label, "test images": result.metrics["n_images"]}
        row.update({k: round(result.metrics[k], 4) for k in METRIC_COLUMNS if k in result.metrics})
        row["run"] = result.run.name
        rows.append(row)
    return pd.DataFrame(rows)


def strategy_chart(table: pd.DataFrame, title: str, chance: float | None = None):
    """Grouped bars of the test metrics per strategy, with the chance level as a dashed line."""
    import plotly.express as px

    metrics = [c for c in METRIC_COLUMNS if c in table]
    long = table.melt(id_vars="strategy", value_vars=metrics, var_name="metric", value_name="score")
    fig = px.bar(long, x="strategy", y="score", color="metric", barmode="group", title=title, text_auto=".2f",
                 range_y=[0, 1])
    if chance is not None:
        fig.add_hline(y=chance, line_dash="dash", annotation_text=f"chance {chance:.0%}")
    return fig


def write_report(table: pd.DataFrame, fig, stem: Path) -> Path:
    """Write `<stem>.csv`, `<stem>.md` and `<stem>.html` atomically; returns the HTML path."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(stem.with_suffix(".csv")) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(stem.with_suffix(".md")) as tmp:
        tmp.write_text(markdown_table(table))
    return write_figure(fig, stem.with_suffix(".html"))


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (pandas' own needs the optional tabulate package)."""
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def compare_strategies(data: str = "synthetic", task: str = "artist", epochs: int = 8, image_size: int = 128,
                       arch: str = "mobilenet_v2", runs_dir: str | Path = RUNS_DIR, reports_dir: str | Path = "reports",
                       freeze: int = 0, top_n: int | None = None, seed: int = 0,
                       **overrides) -> tuple[pd.DataFrame, Path]:
    """Off-the-shelf vs fine-tuning vs scratch on one collection and task; finished runs are reused."""
    tag = Path(str(data)).stem or "data"
    settings = {"off_the_shelf": {}, "fine_tune": {"freeze": freeze, "lr": 0.01},
                "scratch": {"lr": 0.05}}
    results = {}
    for strategy, extra in settings.items():
        config = TrainConfig(name=f"{tag}-{task}-{strategy}-{arch}-{image_size}px", data=str(data), task=task,
                             strategy=strategy, arch=arch, epochs=epochs, image_size=image_size, top_n=top_n,
                             seed=seed, **(extra | overrides))
        results[strategy] = train(config, runs_dir=runs_dir, resume=True)
    table = results_table(results)
    n_classes = len(results["fine_tune"].metrics.get("classes", [])) or None
    chance = 1 / n_classes if n_classes and "accuracy" in table else None
    title = f"{tag}, task {task}: off-the-shelf vs fine-tuning vs scratch ({arch}, {image_size} px)"
    fig = strategy_chart(table, title, chance)
    html = write_report(table, fig, Path(reports_dir) / f"strategies-{tag}-{task}")
    return table, html
