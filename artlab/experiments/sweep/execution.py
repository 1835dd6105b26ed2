"""Running a sweep: each cell's run trained in worker processes ("spawn"), or reused when finished, and the
results written beside the runs."""

from __future__ import annotations

import json
import multiprocessing
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from artlab.data.loading import usable_cores
from artlab.experiments.report import reports_folder, write_report
from artlab.experiments.study import Study
from artlab.experiments.sweep.chart import Sweep, cells_table, summarise, sweep_figure
from artlab.experiments.sweep.grid import METRICS, SOURCE_CLASSES, check_grid, default_name, plan
from artlab.io import write_yaml
from artlab.progress import progress, tqdm
from artlab.runs import check_name, runs_root
from artlab.training import Reuse, TrainConfig, prepare_collection, reusable, train


def sweep(base: TrainConfig | dict, grid: dict[str, Sequence], seeds: Sequence[int] = (0,),
          workers: int | None = None, runs_dir: str | Path | None = None, reports_dir: str | Path | None = None,
          source: TrainConfig | dict | None = None, name: str | None = None) -> Sweep:
    """Train (or reuse) every cell of the grid's product over `seeds`; tabulate, chart and write the results.

    `grid` maps TrainConfig fields, or "source_classes" (needs `source`, the source stage's config),
    to lists of values. `workers`: processes training at once (default: half the cores; 1 trains
    in this process). Cells that fail are recorded with their error and retried on the next call.
    The files go to `<reports_dir>/<name>/` (default: `sweeps/<name>/` in the runs folder).
    """
    base = TrainConfig.coerce(base, "base")
    grid = check_grid(grid)
    seeds = [int(s) for s in ([seeds] if isinstance(seeds, int) else seeds)]
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    if SOURCE_CLASSES in grid and source is None:
        raise ValueError(f"the grid factor {SOURCE_CLASSES!r} needs source= (a TrainConfig of the source stage)")
    if source is not None and "init_from" in grid:
        raise ValueError("the grid factor 'init_from' cannot be combined with source= (every cell starts from its "
                         "source run)")
    source = TrainConfig.coerce(source, "source") if source is not None else None
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
    table = cells_table(cells, outcomes, factors)
    summary = summarise(table, factors)
    metric = next((m for m in METRICS if f"{m} mean" in summary), "accuracy")
    figure = sweep_figure(summary, factors, metric, title=name)
    folder = reports_folder(reports_dir, runs_dir, "sweeps") / name
    result = Sweep(cells=table, summary=summary, figure=figure, report=folder / "sweep.html", runs_dir=root,
                   keys=(*factors, "seed"), runs=Study.index(table, (*factors, "seed")), name=name, factors=factors,
                   metric=metric)
    _write(result, {"base": base.to_dict(), "grid": grid, "seeds": seeds,
                    "source": source.to_dict() if source else None, "name": name})
    return result


def default_workers() -> int:
    """As many worker processes as fit the usable cores: half of them, each training with two threads."""
    return max(1, usable_cores() // 2)


def _execute(configs: list[TrainConfig], root: Path, workers: int, bar: tqdm) -> dict[str, dict]:
    """Each config's outcome by run name: finished runs read back, the others trained (in workers when > 1)."""
    outcomes, pending, collections, changed = {}, [], {}, {}
    for config in configs:
        reused = reusable(config, root)
        if reused is None:
            pending.append(config)
        else:
            outcomes[config.name] = _outcome(reused.run.metrics())
            changed[config.name] = _changes(reused, collections)
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


def _changes(reused: Reuse, collections: dict[str, Any]) -> str:
    """How the collection differs now from what a finished cell's run recorded ("" when it does not); each
    collection is prepared once per sweep (`collections`, by the config fields that decide it)."""
    key = json.dumps(reused.config.collection_settings(), sort_keys=True, default=str)
    if key not in collections:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # about the collection itself: train() says them when it trains
                collections[key] = prepare_collection(reused.config)
        except (OSError, ValueError, KeyError) as exc:
            collections[key] = f"the collection cannot be prepared now ({_one_line(exc)})"
    prepared = collections[key]
    return prepared if isinstance(prepared, str) else reused.changes(prepared)


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


def _write(result: Sweep, spec: dict) -> None:
    """cells.csv, summary.csv, sweep.yaml and an offline HTML page (chart and tables) in the sweep's folder."""
    cells_csv, summary_csv, spec_yaml, _ = result.files
    write_yaml(spec_yaml, spec)
    failed = result.cells[result.cells["status"] != "finished"]
    sections = [("", result.figure), ("Per combination (mean and sd over seeds)", result.table)]
    if len(failed):
        sections.append((f"{len(failed)} failed cell(s): they are tried again on the next call",
                         failed[[*result.factors, "seed", "run", "error"]]))
    sections += [("Every cell", result.cells), ("Settings", str(spec))]
    write_report(result.report, f"Sweep {result.name}", sections, {cells_csv: result.cells, summary_csv: result.table})
