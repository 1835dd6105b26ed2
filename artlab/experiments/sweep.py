"""Factor sweeps: the product of a grid of TrainConfig values (and of numbers of source classes), over seeds.

    result = sweep(TrainConfig(data="../shared/data/genres", task="label", epochs=3),
                   grid={"freeze": [0, 5, 10, 15, 18], "lr": [0.01, 0.001]})
    result.cells, result.table, result.figure

Each (combination, seed) is a cell: an ordinary run named from the sweep's name and its factor
values, so an interrupted sweep resumes, a finished cell is never trained again, and a failed cell
is recorded with its error and tried again on the next call. The derived factor "source_classes"
trains a source stage on the N largest classes first (one run per N and seed) and starts every
target cell of that N from it. Cells train in worker processes ("spawn"), as many as fit the cores.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import multiprocessing
import os
import typing
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from artlab import plots
from artlab.data.loading import usable_cores
from artlab.io import write_csv, write_yaml
from artlab.progress import progress, tqdm
from artlab.runs import HEADLINE_METRICS, Run, check_name, runs_root
from artlab.training import TrainConfig, train
from artlab.training.api import COLLECTION_FIELDS, changes_since_recorded, prepare_collection
from artlab.training.config import plain_name

SOURCE_CLASSES = "source_classes"  # the derived factor: train the source stage on the N largest classes
NOT_FACTORS = ("name", "seed")  # cells are named by the sweep; seeds are their own argument
#: What a cell reports: a single-task run's headline test metrics, a multi-task run's mean score over its tasks.
METRICS = (*HEADLINE_METRICS, "mean_score")


@dataclass
class Sweep:
    """Every cell (`cells`: one row per combination and seed), their mean/sd/n per combination (`table`), a chart.

    Files: `cells.csv`, `summary.csv`, `sweep.yaml` (the specification) and `sweep.html` in `folder`.
    """

    name: str
    factors: list[str]
    cells: pd.DataFrame
    table: pd.DataFrame
    figure: go.Figure
    folder: Path
    metric: str

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
        return self.folder.parent.parent / done.loc[done[metric].idxmax(), "run"]


@dataclass
class _Cell:
    factors: dict[str, Any]
    seed: int
    config: TrainConfig
    source: str | None = None  # the name of the source run it starts from


def sweep(base: TrainConfig | dict, grid: dict[str, Sequence], seeds: Sequence[int] = (0,),
          workers: int | None = None, runs_dir: str | Path | None = None, source: TrainConfig | dict | None = None,
          name: str | None = None) -> Sweep:
    """Train (or reuse) every cell of the grid's product over `seeds`; tabulate, chart and write the results.

    `grid` maps TrainConfig fields, or "source_classes" (needs `source`, the source stage's config),
    to lists of values. `workers`: processes training at once (default: half the cores; 1 trains
    in this process). Cells that fail are recorded with their error and retried on the next call.
    """
    base = _config(base, "base")
    grid = check_grid(grid)
    seeds = [int(s) for s in ([seeds] if isinstance(seeds, int) else seeds)]
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    if SOURCE_CLASSES in grid and source is None:
        raise ValueError(f"the grid factor {SOURCE_CLASSES!r} needs source= (a TrainConfig of the source stage)")
    if source is not None and "init_from" in grid:
        raise ValueError("the grid factor 'init_from' cannot be combined with source= (every cell starts from its "
                         "source run)")
    source = _config(source, "source") if source is not None else None
    name = check_name(name or base.name or default_name(base, list(grid), source))
    root = runs_root(runs_dir)
    sources, cells = plan(base, grid, seeds, source, name, root)
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    with progress(total=len(sources) + len(cells), desc=f"sweep {name}", unit="run") as bar:
        outcomes = _execute(list(sources.values()), root, workers, bar)
        ready = []
        for cell in cells:
            if cell.source is None or outcomes[cell.source]["status"] == "finished":
                ready.append(cell.config)
            else:  # its source stage failed: nothing to start from
                outcomes[cell.config.name] = {"status": "failed", "error": f"source run {cell.source} failed: "
                                                                           f"{outcomes[cell.source]['error']}"}
                bar.update()
        outcomes |= _execute(ready, root, workers, bar)
    factors = list(grid)
    table = _cells_table(cells, outcomes, factors)
    summary = summarise(table, factors)
    metric = next((m for m in METRICS if f"{m} mean" in summary), "accuracy")
    figure = sweep_figure(summary, factors, metric, title=name)
    folder = root / "sweeps" / name
    result = Sweep(name, factors, table, summary, figure, folder, metric)
    _write(result, {"base": base.to_dict(), "grid": grid, "seeds": seeds,
                    "source": source.to_dict() if source else None, "name": name})
    return result


def check_grid(grid: dict[str, Sequence]) -> dict[str, list]:
    """The grid with each factor checked (a TrainConfig field or "source_classes") and its values as a list."""
    if not isinstance(grid, dict) or not grid:
        raise ValueError(f"grid must map at least one TrainConfig field (or {SOURCE_CLASSES!r}) to a list of values")
    allowed = [f.name for f in fields(TrainConfig) if f.name not in NOT_FACTORS]
    checked = {}
    for key, values in grid.items():
        if key in NOT_FACTORS:
            raise ValueError(f"grid: {key!r} cannot be a factor (cells are named from the sweep; pass seeds=[...])")
        if key != SOURCE_CLASSES and key not in allowed:
            raise ValueError(f"grid: unknown factor {key!r}; choose from the TrainConfig fields {allowed} "
                             f"or {SOURCE_CLASSES!r}")
        if isinstance(values, str | bytes | dict) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"grid[{key!r}] must be a non-empty list of values, not {values!r}")
        checked[key] = [_coerce(key, v) for v in values]
        if key == SOURCE_CLASSES and any(v is not None and (not isinstance(v, int) or v < 2) for v in checked[key]):
            raise ValueError(f"grid[{SOURCE_CLASSES!r}] holds numbers of classes (2 or more, or null for all), "
                             f"not {values!r}")
    return checked


def _coerce(key: str, value: Any) -> Any:
    """YAML reads `1e-3` as a string: turn such strings into the number a float field expects."""
    hints = typing.get_type_hints(TrainConfig)
    if key in hints and isinstance(value, str) and float in (hints[key], *typing.get_args(hints[key])):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _config(value: TrainConfig | dict, what: str) -> TrainConfig:
    """A TrainConfig from a config or a mapping of its fields (YAML), with `what` named in any error."""
    if isinstance(value, TrainConfig):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a TrainConfig or a mapping of its fields, not {type(value).__name__}")
    try:
        return TrainConfig.from_dict({k: _coerce(k, v) for k, v in value.items()})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: {exc}") from None


def default_name(base: TrainConfig, factors: list[str], source: TrainConfig | None = None) -> str:
    """`sweep-<data>[-<task>]-<strategy>-<factors>-<digest>`: the digest of every other setting tells apart
    sweeps whose bases differ (a quick and a full one), so their cells never meet under one run name."""
    data = Path(str(base.data).rstrip("/")).stem
    task = f"-{base.task}" if base.task else ""
    settings = {k: v for k, v in base.to_dict().items() if k not in (*factors, *NOT_FACTORS)}
    settings["source"] = source.to_dict() if source else None
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:6]
    return plain_name(f"sweep-{data}{task}-{base.strategy}-{'-'.join(factors)}-{digest}")


def _label(factor: str, value: Any) -> str:
    """A factor value as it appears in run names and chart axes (0.001, 10, all)."""
    if value is None:
        return "all" if factor == SOURCE_CLASSES else "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def plan(base: TrainConfig, grid: dict[str, list], seeds: list[int], source: TrainConfig | None, name: str,
         root: Path) -> tuple[dict[str, TrainConfig], list[_Cell]]:
    """The source runs (by name) and the cells, in grid order; run names checked to be distinct."""
    sources: dict[str, TrainConfig] = {}
    cells = []
    for values in itertools.product(*grid.values()):
        factors = dict(zip(grid, values))
        fields_ = {k: v for k, v in factors.items() if k != SOURCE_CLASSES}
        tag = "-".join(f"{k}{_label(k, v)}" for k, v in factors.items())
        for seed in seeds:
            source_name = None
            extra = {}
            if source is not None:
                top_n = factors.get(SOURCE_CLASSES, source.top_n)
                source_name = plain_name(f"{name}-source-{'top' + str(top_n) if top_n else 'all'}-seed{seed}")
                sources.setdefault(source_name, _make(source, f"source of {tag}", name=source_name, seed=seed,
                                                      top_n=top_n))
                extra = {"init_from": str(root / source_name)}
            config = _make(base, tag, name=plain_name(f"{name}-{tag}-seed{seed}"), seed=seed, **fields_, **extra)
            cells.append(_Cell(factors, seed, config, source_name))
    names = [c.config.name for c in cells] + list(sources)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"grid values give the same run name twice ({repeated[:3]}); make the values distinct "
                         f"or the sweep name shorter")
    return sources, cells


def _make(config: TrainConfig, tag: str, **changes) -> TrainConfig:
    try:
        return replace(config, **changes)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"grid cell {tag}: {exc}") from None


def default_workers() -> int:
    """As many worker processes as fit the usable cores: half of them, each training with two threads."""
    return max(1, usable_cores() // 2)


def _execute(configs: list[TrainConfig], root: Path, workers: int, bar: tqdm) -> dict[str, dict]:
    """Each config's outcome by run name: finished runs read back, the others trained (in workers when > 1)."""
    outcomes, pending, collections, changed = {}, [], {}, {}
    for config in configs:
        reused = _reused(config, root)
        if reused is None:
            pending.append(config)
        else:
            outcomes[config.name], trained_with = reused
            changed[config.name] = _changes(Run.named(config.name, root), trained_with, collections)
            bar.update()
    _warn_changed({name: changes for name, changes in changed.items() if changes})
    if workers == 1 or len(pending) <= 1:
        for config in pending:
            outcomes[config.name] = run_cell(config.to_dict(), str(root))
            bar.update()
        return outcomes
    count = min(workers, len(pending))
    pool = ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                               initargs=(max(1, usable_cores() // count),))
    try:
        futures = {pool.submit(run_cell, config.to_dict(), str(root)): config.name for config in pending}
        for future in as_completed(futures):
            try:
                outcomes[futures[future]] = future.result()
            except Exception as exc:  # noqa: BLE001 - a dead worker breaks the pool: the cells still pending fail
                # with it (BrokenProcessPool), not the sweep; they are trained again on the next call
                outcomes[futures[future]] = {"status": "failed", "error": f"worker process failed: {_one_line(exc)}"}
            bar.update()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return outcomes


def _start_worker(threads: int) -> None:
    """In each worker: its share of the cores, and no per-run progress bars interleaving with the sweep's."""
    import torch

    torch.set_num_threads(threads)
    os.environ["TQDM_DISABLE"] = "1"  # read by artlab.progress at each bar


def _reused(config: TrainConfig, root: Path) -> tuple[dict, TrainConfig] | None:
    """A finished run's outcome and config (its task resolved) when it was trained with this very config, else
    None (train() decides)."""
    run = Run.named(config.name, root)
    if not run.finished:
        return None
    try:
        saved, wanted = run.config(), config.to_dict()
        wanted["task"] = wanted["task"] if wanted["task"] is not None else saved.get("task")
        return (_outcome(run.metrics()), TrainConfig.from_dict(saved)) if saved == wanted else None
    except (OSError, ValueError):  # a damaged folder: train() says what is wrong with it
        return None


def _changes(run: Run, config: TrainConfig, collections: dict[str, Any]) -> str:
    """How the collection differs now from what a finished cell's run recorded ("" when it does not); each
    collection is prepared once per sweep (`collections`, by the config fields that decide it)."""
    key = json.dumps({name: getattr(config, name) for name in COLLECTION_FIELDS}, sort_keys=True, default=str)
    if key not in collections:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # about the collection itself: train() says them when it trains
                collections[key] = prepare_collection(config)
        except (OSError, ValueError, KeyError) as exc:
            collections[key] = f"the collection cannot be prepared now ({_one_line(exc)})"
    prepared = collections[key]
    return prepared if isinstance(prepared, str) else changes_since_recorded(run, config, prepared)


def _warn_changed(changed: dict[str, str]) -> None:
    """One warning for the finished cells reused on a collection that has changed since they were trained."""
    if changed:
        name, changes = next(iter(changed.items()))
        warnings.warn(f"{len(changed)} finished cell(s) of the sweep are reused as trained, on the collection as it "
                      f"was (run {name}: {changes}); their rows do not describe the collection as it is now: give "
                      f"the sweep another name, or remove those runs, to train them again", stacklevel=3)


def run_cell(config: dict, runs_dir: str) -> dict:
    """Train (or resume) one run; a failure becomes its one-line error, so the sweep goes on."""
    try:
        result = train(TrainConfig(**config), runs_dir, resume=True)
    except Exception as exc:  # noqa: BLE001 - recorded in the cell's row and retried on the next call
        return {"status": "failed", "error": _one_line(exc)}
    return _outcome(result.metrics)


def _outcome(metrics: dict) -> dict:
    return {"status": "finished", "test images": metrics.get("n_images"),
            **{k: metrics[k] for k in METRICS if k in metrics}}


def _one_line(exc: BaseException) -> str:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return f"{type(exc).__name__}: {text.strip().splitlines()[0] if text.strip() else ''}".rstrip(": ")


def _cells_table(cells: list[_Cell], outcomes: dict[str, dict], factors: list[str]) -> pd.DataFrame:
    """One row per cell: factors, seed, status, metrics, run name(s) and error, in grid order."""
    rows = []
    for cell in cells:
        outcome = outcomes[cell.config.name]
        rows.append({**cell.factors, "seed": cell.seed, **outcome, "run": cell.config.name,
                     **({"source run": cell.source} if cell.source else {})})
    table = _keep_values(pd.DataFrame(rows), [cell.factors for cell in cells], factors)
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
    metrics = [m for m in METRICS if m in cells]
    rows = []
    for _, part in cells.groupby([cells[f].map(repr) for f in factors], sort=False):
        done = part[part["status"] == "finished"]
        row = {f: part[f].iloc[0] for f in factors}
        for metric in metrics:
            row |= {f"{metric} mean": done[metric].mean(), f"{metric} sd": done[metric].std(ddof=1)}
        rows.append(row | {"seeds": len(done), "failed": len(part) - len(done)})
    return _keep_values(pd.DataFrame(rows), rows, factors)


def _keep_values(table: pd.DataFrame, rows: list[dict], factors: list[str]) -> pd.DataFrame:
    """The factor columns holding each row's value as given: pandas turns a None among numbers (source_classes
    null = all classes, top_n null) into NaN, which would read and chart as "nan"."""
    for factor in factors:
        values = [row[factor] for row in rows]
        if any(value is None for value in values):
            table[factor] = pd.Series(values, index=table.index, dtype=object)
    return table


def _numeric(values: pd.Series) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def _ordered_labels(factor: str, values: pd.Series) -> list[str]:
    """The distinct values of a factor as axis labels: numbers ascending, anything else in grid order."""
    unique = list({repr(v): v for v in values}.values())
    if _numeric(pd.Series(unique, dtype=object)):
        unique.sort()
    return [_label(factor, v) for v in unique]


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
        label = ", ".join(f"{f}={_label(f, part[f].iloc[0])}" for f in others) or metric
        figure.add_trace(go.Scatter(
            x=part[x] if numeric else part[x].map(lambda v: _label(x, v)), y=part[f"{metric} mean"],
            error_y={"type": "data", "array": part[f"{metric} sd"].fillna(0)}, mode="lines+markers", name=label,
            customdata=part[["seeds"]], hovertemplate=f"{x}=%{{x}}: %{{y:.3f}} (%{{customdata[0]}} seeds)"))
    positive = numeric and (table[x].astype(float) > 0).all()
    wide = positive and table[x].astype(float).max() / table[x].astype(float).min() >= 100
    figure.update_layout(title=title, xaxis={"title": x, "type": "log" if wide else "-"},
                         yaxis={"title": f"test {metric}"}, legend_title=", ".join(others))
    return figure


def _heatmap(table: pd.DataFrame, factors: list[str], metric: str, x: str, y: str, title: str) -> go.Figure:
    others = [f for f in factors if f not in (x, y)]
    mean, sd = f"{metric} mean", f"{metric} sd"
    frame = table.assign(_x=table[x].map(lambda v: _label(x, v)), _y=table[y].map(lambda v: _label(y, v)))
    cells = frame.groupby(["_y", "_x"], sort=False)[[mean, sd]].mean()
    columns, rows = _ordered_labels(x, table[x]), _ordered_labels(y, table[y])
    z = cells[mean].unstack("_x").reindex(index=rows, columns=columns)
    spread = cells[sd].unstack("_x").reindex(index=rows, columns=columns)
    text = [[("" if pd.isna(m) else f"{m:.3f}" + ("" if pd.isna(s) or others else f" ± {s:.3f}"))
             for m, s in zip(z_row, s_row)] for z_row, s_row in zip(z.to_numpy(), spread.to_numpy())]
    figure = go.Figure(go.Heatmap(z=z.to_numpy(), x=columns, y=rows, text=text, texttemplate="%{text}",
                                  colorscale="Viridis", colorbar={"title": metric}))
    note = f" (averaged over {', '.join(others)})" if others else ""
    figure.update_layout(title=title + note, xaxis={"title": x, "type": "category"},
                         yaxis={"title": y, "type": "category"})
    return figure


def _write(result: Sweep, spec: dict) -> None:
    """cells.csv, summary.csv, sweep.yaml and an offline HTML page (chart and tables) in the sweep's folder."""
    folder = result.folder
    write_csv(folder / "cells.csv", result.cells)
    write_csv(folder / "summary.csv", result.table)
    write_yaml(folder / "sweep.yaml", spec)
    failed = result.cells[result.cells["status"] != "finished"]
    sections = [("", result.figure), ("Per combination (mean and sd over seeds)", result.table)]
    if len(failed):
        sections.append((f"{len(failed)} failed cell(s): they are tried again on the next call",
                         failed[[*result.factors, "seed", "run", "error"]]))
    sections += [("Every cell", result.cells), ("Settings", str(spec))]
    plots.write_html_report(folder / "sweep.html", f"Sweep {result.name}", sections)
