"""A sweep's results: the table of its cells, their summary per combination, and its charts (lines or heatmap)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from artlab.experiments.study import Study, keep_values, spread
from artlab.experiments.sweep.grid import METRICS, Cell, label
from artlab.plots import readable_title
from artlab.runs import runs_root


@dataclass(kw_only=True)
class Sweep(Study):
    """Every cell (`cells`: one row per combination and seed), their mean/sd/n per combination (`summary`, also
    `table`), a chart. `run(*factor values, seed)` finds a cell's run.

    Files: `cells.csv`, `summary.csv`, `sweep.yaml` (the specification) and `sweep.html` (`report`) in `folder`.
    """

    name: str
    factors: list[str]
    metric: str

    @property
    def table(self) -> pd.DataFrame:
        return self.summary

    @property
    def folder(self) -> Path:
        return self.report.parent

    @property
    def metrics(self) -> list[str]:
        """The headline test metrics the cells report (the widget's choices)."""
        return [m for m in METRICS if f"{m} mean" in self.table]

    @property
    def files(self) -> list[Path]:
        return [self.folder / name for name in ("cells.csv", "summary.csv", "sweep.yaml", "sweep.html")]

    def chart(self, metric: str | None = None, x: str | None = None, y: str | None = None) -> go.Figure:
        """Lines of `metric` over factor `x` (one per value of the others), or a heatmap of `x` by `y`."""
        return sweep_figure(self.table, self.factors, metric or self.metric, x, y, self.name)

    def best_run(self, metric: str | None = None) -> Path:
        """The run folder of the finished cell with the highest `metric` (ties: the first in grid order)."""
        metric = metric or self.metric
        done = self.cells[self.cells["status"] == "finished"]
        if done.empty or metric not in done:
            raise ValueError(f"sweep {self.name} has no finished cell with a {metric!r}")
        return runs_root(self.runs_dir) / done.loc[done[metric].idxmax(), "run"]


def cells_table(cells: list[Cell], outcomes: dict[str, dict], factors: list[str]) -> pd.DataFrame:
    """One row per cell: factors, seed, status, metrics, run name(s) and error, in grid order."""
    rows = []
    for cell in cells:
        outcome = outcomes[cell.config.name]
        rows.append({**cell.factors, "seed": cell.seed, **outcome, "run": cell.config.name,
                     **({"source run": cell.source} if cell.source else {})})
    table = keep_values(pd.DataFrame(rows), [cell.factors for cell in cells], factors)
    if "error" not in table:
        table["error"] = None
    if not any(m in table for m in METRICS):  # every cell failed: an empty column to chart
        table["accuracy"] = float("nan")
    if "test images" in table:
        table["test images"] = table["test images"].astype("Int64")  # missing for failed cells
    ordered = [c for c in (*factors, "seed", "status", *METRICS, "test images", "run") if c in table]
    return table[ordered + [c for c in table.columns if c not in ordered]]


def summarise(cells: pd.DataFrame, factors: list[str]) -> pd.DataFrame:
    """Per factor combination (grid order): mean and sample sd of each metric over finished seeds, n, failures."""
    return spread(cells, factors, [m for m in METRICS if m in cells])


def _numeric(values: pd.Series) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def _ordered_labels(factor: str, values: pd.Series) -> list[str]:
    """The distinct values of a factor as axis labels: numbers ascending, anything else in grid order."""
    unique = list({repr(v): v for v in values}.values())
    if _numeric(pd.Series(unique, dtype=object)):
        unique.sort()
    return [label(factor, v) for v in unique]


def sweep_figure(table: pd.DataFrame, factors: list[str], metric: str = "accuracy", x: str | None = None,
                 y: str | None = None, title: str = "sweep") -> go.Figure:
    """One factor: lines over `x` (one per combination of the others) with sd error bars; two: a heatmap `x` by `y`.

    With neither given, two factors give a heatmap and any other number lines over the first factor.
    A heatmap of more than two factors averages over the others (said in the title).
    """
    if x is None and y is None and len(factors) == 2:
        x, y = factors
    x = x or factors[0]
    for axis in (x, y):
        if axis is not None and axis not in factors:
            raise KeyError(f"no factor {axis!r}; this sweep varies {factors}")
    if f"{metric} mean" not in table:
        raise KeyError(f"no metric {metric!r}; this sweep has {[c[:-5] for c in table if c.endswith(' mean')]}")
    seeds = int(table["seeds"].max()) if len(table) else 0
    if y is not None and y != x:
        return _heatmap(table, factors, metric, x, y, f"{title}: test {metric}, mean over {seeds} seed(s)")
    return _lines(table, factors, metric, x, f"{title}: test {metric}, mean and sd over {seeds} seed(s)")


def _lines(table: pd.DataFrame, factors: list[str], metric: str, x: str, title: str) -> go.Figure:
    others = [f for f in factors if f != x]
    numeric = _numeric(table[x])
    groups = table.groupby([table[f].map(repr) for f in others], sort=False) if others else [((), table)]
    figure = go.Figure()
    for _, part in groups:
        part = part.sort_values(x, key=lambda s: s.astype(float)) if numeric else part
        name = ", ".join(f"{f}={label(f, part[f].iloc[0])}" for f in others) or metric
        figure.add_trace(go.Scatter(
            x=part[x] if numeric else part[x].map(lambda v: label(x, v)), y=part[f"{metric} mean"],
            error_y={"type": "data", "array": part[f"{metric} sd"].fillna(0)}, mode="lines+markers", name=name,
            customdata=part[["seeds"]], hovertemplate=f"{x}=%{{x}}: %{{y:.3f}} (%{{customdata[0]}} seeds)"))
    positive = numeric and (table[x].astype(float) > 0).all()
    wide = positive and table[x].astype(float).max() / table[x].astype(float).min() >= 100
    figure.update_layout(title=title, xaxis={"title": x, "type": "log" if wide else "-"},
                         yaxis={"title": f"test {metric}"}, legend_title=", ".join(others))
    return readable_title(figure)  # "sweep-<name>: test accuracy, ...": wrapped, not cut at the figure's edge


def _heatmap(table: pd.DataFrame, factors: list[str], metric: str, x: str, y: str, title: str) -> go.Figure:
    others = [f for f in factors if f not in (x, y)]
    mean, sd = f"{metric} mean", f"{metric} sd"
    frame = table.assign(_x=table[x].map(lambda v: label(x, v)), _y=table[y].map(lambda v: label(y, v)))
    cells = frame.groupby(["_y", "_x"], sort=False)[[mean, sd]].mean()
    columns, rows = _ordered_labels(x, table[x]), _ordered_labels(y, table[y])
    z = cells[mean].unstack("_x").reindex(index=rows, columns=columns)
    sds = cells[sd].unstack("_x").reindex(index=rows, columns=columns)
    text = [[("" if pd.isna(m) else f"{m:.3f}" + ("" if pd.isna(s) or others else f" ± {s:.3f}"))
             for m, s in zip(z_row, s_row)] for z_row, s_row in zip(z.to_numpy(), sds.to_numpy())]
    figure = go.Figure(go.Heatmap(z=z.to_numpy(), x=columns, y=rows, text=text, texttemplate="%{text}",
                                  colorscale="Viridis", colorbar={"title": metric}))
    note = f" (averaged over {', '.join(others)})" if others else ""
    figure.update_layout(title=title + note, xaxis={"title": x, "type": "category"},
                         yaxis={"title": y, "type": "category"})
    return readable_title(figure)
