"""Bias audit: how a run's accuracy differs between groups of artworks (per artist, per medium, photos vs paintings).

    result = audit("runs/<name>", by="artist")        # any column of the run's split.csv
    result.table, result.gap, result.figure

Each group's accuracy comes with a 95% Wilson score interval (sound for small groups and for
accuracies near 0 or 1); groups smaller than `min_size` are flagged, never hidden; the gap is
between the best and the worst group large enough to count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from artlab import plots
from artlab.io import write_csv
from artlab.runs import Run, as_run
from artlab.training import Predictions, predictions

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(correct: int, total: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (Wilson 1927): never outside [0, 1], fine for small n."""
    if total == 0:
        return float("nan"), float("nan")
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Audit:
    """One row per group (size, correct, accuracy and its interval, flag), the best-worst gap, a chart."""

    by: str
    table: pd.DataFrame
    gap: float | None
    figure: go.Figure
    files: list[Path]
    task: str | None = None  # the task audited, for a multi-task run (None for a single-task one)


def group_accuracy(groups: pd.Series, correct: pd.Series, min_size: int = 10) -> pd.DataFrame:
    """Accuracy per group with its Wilson interval; groups below `min_size` are flagged `small`."""
    frame = pd.DataFrame({"group": groups.fillna("(none)").astype(str).to_numpy(), "correct": correct.to_numpy()})
    rows = []
    for group, part in frame.groupby("group", sort=True):
        n, k = len(part), int(part["correct"].sum())
        low, high = wilson_interval(k, n)
        rows.append({"group": group, "images": n, "correct": k, "accuracy": k / n, "ci_low": low, "ci_high": high,
                     "small": n < min_size})
    return pd.DataFrame(rows).sort_values(["small", "accuracy"], ascending=[True, False], kind="stable") \
        .reset_index(drop=True)


def audit(run: Run | str | Path, by: str, split: str = "test", min_size: int = 10,
          out_dir: str | Path | None = None, task: str | None = None, scored: Predictions | None = None) -> Audit:
    """Per-group test accuracy of a single-label run (or one `task` of a multi-task run), grouped by any
    column of its split.csv.

    Writes `<run>/audit/<split>-by-<column>.csv` and `.html` (`<split>-<task>-by-<column>` for one task of a
    multi-task run; under `out_dir` if given), so audits of other splits and tasks sit beside each other.
    `scored`: the run's `predictions(run, split, task=task)` when the caller has them already (an explorer
    auditing several columns and sizes computes them once), else they are computed here.
    """
    run = as_run(run)
    if not run.finished:
        raise ValueError(f"run {run.path} has not finished training (no metrics.json): an audit describes a "
                         f"finished run; finish it first (artlab train ... --resume)")
    scored = predictions(run, split, task=task) if scored is None else scored
    if scored.multi_label:
        raise ValueError(f"{run.path} is multi-label: the audit compares accuracies of single-label runs")
    recorded = run.split_table()
    if by not in recorded:
        columns = [c for c in recorded.columns if c not in ("path", "split", "signature")]
        raise KeyError(f"{run.name} has no column {by!r} to group by; its split.csv has {columns}")
    group_of = dict(zip(recorded["path"], recorded[by].replace("", None)))
    groups = pd.Series([group_of.get(p) for p in scored.paths], dtype=object)
    correct = pd.Series(scored.scores.argmax(axis=1) == scored.targets)
    table = group_accuracy(groups, correct, min_size)
    several = len(run.card().tasks) > 1
    audited = scored.task or task if several else None
    counted = table[~table["small"]]
    gap = float(counted["accuracy"].max() - counted["accuracy"].min()) if len(counted) >= 2 else None
    what = f"{audited} {split}" if audited else split
    figure = audit_figure(table, f"{run.name}: {what} accuracy per {by} (95% Wilson intervals; grey: fewer than "
                                 f"{min_size} images)")
    out = Path(out_dir) if out_dir is not None else run.path / "audit"
    stem = out / f"{split}-{audited + '-' if audited else ''}by-{by}"
    write_csv(stem.with_suffix(".csv"), table)
    html = plots.write_figure(figure, stem.with_suffix(".html"))
    return Audit(by, table, gap, figure, [stem.with_suffix(".csv"), html], audited)


def audit_figure(table: pd.DataFrame, title: str) -> go.Figure:
    """Accuracy per group as bars with their intervals; small groups in grey."""
    colours = ["#bbbbbb" if small else "#3b6ea5" for small in table["small"]]
    figure = go.Figure(go.Bar(
        x=table["group"], y=table["accuracy"], marker_color=colours,
        error_y={"type": "data", "symmetric": False, "array": table["ci_high"] - table["accuracy"],
                 "arrayminus": table["accuracy"] - table["ci_low"]},
        customdata=table[["images", "correct"]], hovertemplate="%{x}: %{y:.1%} (%{customdata[1]} of "
                                                               "%{customdata[0]})<extra></extra>"))
    figure.update_layout(title=title, yaxis={"title": "accuracy", "range": [0, 1.05]}, xaxis_tickangle=-45)
    return plots.readable_title(figure)  # the run's name and what is shown: wrapped, not cut at the edge
