"""What every study returns: its cells (one row per run and score), their summary, paired differences, a chart.

A study trains (or reuses) ordinary runs from a base `TrainConfig` and what varies; `Study.run`
finds the run folder of one cell by the study's keys (a double fine-tuning study's route and seed,
a multi-task study's seed and task, a sweep's factor values and seed).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from artlab.plots import readable_title
from artlab.runs import runs_root
from artlab.training import TrainConfig

#: Training from random weights needs a larger step than fine-tuning (the scratch route's learning rate).
SCRATCH_LR = 0.05
#: The fine-tuning settings: a run that does not fine-tune (off-the-shelf, scratch) keeps their defaults.
FINE_TUNING = ("freeze", "lr", "backbone_lr_mult")


@dataclass(kw_only=True)
class Study:
    """A study's runs and what it made of them.

    `cells`: one row per run (and score), with its `run` name; `summary`: mean and spread per
    setting; `difference`: the paired differences (empty where nothing pairs); `figure`; `report`:
    the HTML page, its tables beside it; `keys`: the columns `run` takes; `runs`: run names by key.
    """

    cells: pd.DataFrame
    summary: pd.DataFrame
    difference: pd.DataFrame = field(default_factory=pd.DataFrame)
    figure: go.Figure
    report: Path
    runs_dir: Path | None = None
    keys: tuple[str, ...] = ()
    runs: dict[tuple, str] = field(default_factory=dict)

    def run(self, *key: Any, **named: Any) -> Path:
        """The run folder of one cell, by its values of `keys` (in order or by name; missing trailing ones None)."""
        values = dict(zip(self.keys, key)) | named
        if len(key) > len(self.keys) or set(values) - set(self.keys):
            raise TypeError(f"run() takes {', '.join(self.keys)}; got {key} and {sorted(named)}")
        wanted = tuple(values.get(name) for name in self.keys)
        if wanted not in self.runs:
            raise KeyError(f"no run for {dict(zip(self.keys, wanted))}; this study has "
                           + ", ".join(f"{name}: {sorted({k[i] for k in self.runs}, key=repr)}"
                                       for i, name in enumerate(self.keys)))
        return runs_root(self.runs_dir) / self.runs[wanted]

    @staticmethod
    def index(cells: pd.DataFrame, keys: tuple[str, ...]) -> dict[tuple, str]:
        """Run names by the values of `keys` in each row of `cells` (the first row of each key)."""
        runs: dict[tuple, str] = {}
        for row in cells[[*keys, "run"]].itertuples(index=False):
            runs.setdefault(tuple(row[:-1]), row[-1])
        return runs


def route_config(base: TrainConfig, strategy: str, scratch_lr: float = SCRATCH_LR, **changes: Any) -> TrainConfig:
    """`base` trained with `strategy`: off-the-shelf and scratch keep the fine-tuning settings' defaults (scratch
    with `scratch_lr`), so their runs do not depend on them."""
    defaults = TrainConfig()
    reset = {} if strategy == "fine_tune" else {name: getattr(defaults, name) for name in FINE_TUNING}
    if strategy == "scratch":
        reset["lr"] = scratch_lr
    return replace(base, strategy=strategy, **reset, **changes)


def spread(cells: pd.DataFrame, by: list[str], metrics: list[str], named: bool = True) -> pd.DataFrame:
    """Per setting (`by`, in first-seen order): each metric's mean and sample sd over the finished cells, and
    their number (`seeds`; `failed` too when the cells have a `status`). `named`: "<metric> mean" columns,
    else "mean" and "sd" (one metric)."""
    finished = cells["status"] == "finished" if "status" in cells else pd.Series(True, index=cells.index)
    rows = []
    for _, part in cells.groupby([cells[column].map(repr) for column in by], sort=False):
        done = part[finished[part.index]]
        row = {column: part[column].iloc[0] for column in by}
        for metric in metrics:
            prefix = f"{metric} " if named else ""
            row |= {f"{prefix}mean": done[metric].mean(), f"{prefix}sd": done[metric].std(ddof=1)}
        row["seeds"] = len(done)
        if "status" in cells:
            row["failed"] = len(part) - len(done)
        rows.append(row)
    return keep_values(pd.DataFrame(rows), rows, by)


def paired(cells: pd.DataFrame, setting: str, pair: tuple[str, str], value: str, names: tuple[str, str, str],
           by: tuple[str, ...] = ()) -> pd.DataFrame:
    """Per seed (and per `by`): the `value` of the two settings of `pair` side by side and their difference.

    `names`: the columns of the two settings and of the difference, e.g. ("double", "single", "double - single").
    """
    table = cells.pivot_table(index=[*by, "seed"], columns=setting, values=value).reset_index()
    table = table[[*by, "seed", *pair]].rename(columns=dict(zip(pair, names))).rename_axis(columns=None)
    table[names[2]] = table[names[0]] - table[names[1]]
    return table


def keep_values(table: pd.DataFrame, rows: list[dict], columns: list[str]) -> pd.DataFrame:
    """The columns holding each row's value as given: pandas turns a None among numbers (source_classes null =
    all classes, top_n null) into NaN, which would read and chart as "nan"."""
    for column in columns:
        values = [row[column] for row in rows]
        if any(value is None for value in values):
            table[column] = pd.Series(values, index=table.index, dtype=object)
    return table


def bar_chart(summary: pd.DataFrame, x: str, title: str, y_title: str, mean: str = "mean", sd: str = "sd",
              group: str | None = None) -> go.Figure:
    """Bars of `mean` per `x` (one series per `group`), with `sd` as error bars and the means as percentages."""
    parts = summary.groupby(group, sort=False) if group else [(None, summary)]
    figure = go.Figure([go.Bar(name=name, x=part[x], y=part[mean], error_y={"type": "data", "array": part[sd]},
                               text=[f"{v:.1%}" for v in part[mean]], textposition="outside")
                        for name, part in parts])
    figure.update_layout(title=title, yaxis={"title": y_title, "range": [0, 1.1]},
                         **({"barmode": "group"} if group else {}))
    return readable_title(figure)  # "double-...-apart: test accuracy per route (...)" wraps instead of being cut
