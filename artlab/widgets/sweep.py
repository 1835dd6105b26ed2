"""The sweep explorer: pick a metric and the factor(s) to plot; lines over one factor or a heatmap of two."""

from __future__ import annotations

import plotly.graph_objects as go

from artlab.experiments.sweep import Sweep
from artlab.widgets.base import Explorer, expect, small_table

LINES = "(lines)"  # the heatmap-axis choice that draws lines over the x factor instead


class SweepExplorer(Explorer):
    """State: `metric`, `x` (a factor) and `y` (a second factor for a heatmap, or None for lines).

    Each (metric, x, y) chart is drawn once.
    """

    title = "factor sweep"

    def __init__(self, sweep: Sweep, metric: str | None = None, x: str | None = None, y: str | None = None):
        expect(sweep, Sweep, "SweepExplorer", "a Sweep, as artlab.sweep(...) returns it")
        super().__init__()
        self.sweep = sweep
        self.metric, self.x, self.y = sweep.metric, sweep.factors[0], None
        self._charts: dict[tuple[str, str, str | None], go.Figure] = {}
        if x is None and y is None and len(sweep.factors) == 2:
            x, y = sweep.factors
        self.select(metric=metric, x=x, y=y or LINES)

    def select(self, metric: str | None = None, x: str | None = None, y: str | None = None) -> None:
        """Change the metric, the x factor, or the heatmap's y factor (`"(lines)"` for lines; `x` itself too)."""
        if metric is not None:
            if metric not in self.sweep.metrics:
                raise KeyError(f"no metric {metric!r}; choose from {self.sweep.metrics}")
            self.metric = metric
        for axis in (x, y):
            if axis not in (None, LINES) and axis not in self.sweep.factors:
                raise KeyError(f"no factor {axis!r}; choose from {self.sweep.factors}")
        if x is not None:
            self.x = x
        if y is not None:
            self.y = None if y == LINES else y
        if self.y == self.x:
            self.y = None
        self.refresh()

    def chart(self) -> go.Figure:
        key = (self.metric, self.x, self.y)
        if key not in self._charts:
            self.computed["chart"] += 1
            self._charts[key] = self.sweep.chart(self.metric, self.x, self.y)
        return self._charts[key]

    def view(self) -> list[object]:
        cells = self.sweep.cells
        facts = small_table({"sweep": self.sweep.name, "factors": ", ".join(self.sweep.factors),
                             "cells finished": int((cells["status"] == "finished").sum()),
                             "cells failed": int((cells["status"] != "finished").sum()),
                             "files": str(self.sweep.folder)})
        return [self.chart(), facts, self.sweep.table]

    def controls(self) -> list[object]:
        import ipywidgets as widgets

        metric = widgets.Dropdown(options=self.sweep.metrics, value=self.metric, description="metric")
        x = widgets.Dropdown(options=self.sweep.factors, value=self.x, description="x axis")
        y = widgets.Dropdown(options=[LINES, *self.sweep.factors], value=self.y or LINES, description="heatmap y")
        metric.observe(lambda change: self.select(metric=change["new"]), names="value")
        x.observe(lambda change: self.select(x=change["new"]), names="value")
        y.observe(lambda change: self.select(y=change["new"]), names="value")
        return [metric, x, y]
