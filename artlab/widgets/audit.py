"""The audit explorer: pick a label column, see a run's accuracy per group with intervals and the gap."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from artlab.experiments.audit import Audit, audit
from artlab.runs import Run, as_run
from artlab.training import Predictions, predictions
from artlab.widgets.base import Explorer, expect, one_of, small_table


class AuditExplorer(Explorer):
    """State: `by` (the column) and `min_size`; each (column, size) audit is computed once."""

    title = "bias audit"

    def __init__(self, run: Run | str | Path, by: str | None = None, min_size: int = 10, split: str = "test",
                 task: str | None = None):
        expect(run, (Run, str, os.PathLike), "AuditExplorer", "a finished run: its folder or a Run")
        super().__init__()
        self.run, self.split, self.min_size, self.task = as_run(run), split, min_size, task
        header = pd.read_csv(self.run.file("split.csv"), nrows=0).columns
        self.columns = [c for c in header if c not in ("path", "split", "signature")]
        if not self.columns:
            raise ValueError(f"{self.run.name} records no label column to group by")
        self.by = by or self.columns[0]

    def select(self, by: str | None = None, min_size: int | None = None) -> None:
        self.by = self.by if by is None else one_of(by, self.columns, "column")
        if min_size is not None:
            self.min_size = int(min_size)
        self.refresh()

    def result(self) -> Audit:
        """The audit of the current column and size, from the run's predictions."""
        return self.cached("audit", (self.by, self.min_size), lambda: audit(
            self.run, self.by, self.split, self.min_size, task=self.task, scored=self.predictions()))

    def predictions(self) -> Predictions:
        """The run's scores on the split: one forward pass per explorer, not one per click (a click on another
        column or size then answers at once)."""
        return self.cached("predictions", (self.split, self.task),
                           lambda: predictions(self.run, self.split, task=self.task))

    def view(self) -> list[object]:
        result = self.result()
        gap = f"{result.gap:.1%}" if result.gap is not None else "n/a"
        facts = small_table({"groups": len(result.table), "flagged (too small)": int(result.table["small"].sum()),
                             "best - worst accuracy": gap})
        return [result.figure, facts, result.table]

    def controls(self) -> list[object]:
        import ipywidgets as widgets

        by = widgets.Dropdown(options=self.columns, value=self.by, description="group by")
        size = widgets.BoundedIntText(value=self.min_size, min=1, max=10_000, description="min. images")
        by.observe(lambda change: self.select(by=change["new"]), names="value")
        size.observe(lambda change: self.select(min_size=change["new"]), names="value")
        return [by, size]
