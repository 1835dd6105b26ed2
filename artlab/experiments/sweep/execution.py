"""Running a sweep: each cell's run trained in worker processes ("spawn"), or reused when finished, and the
results written beside the runs."""

from __future__ import annotations

import itertools
import json
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from artlab.experiments.report import reports_folder, write_report
from artlab.experiments.study import Study
from artlab.experiments.sweep.chart import Sweep, cells_table, summarise, sweep_figure
from artlab.experiments.sweep.grid import METRICS, SOURCE_CLASSES, check_grid, default_name, plan
from artlab.io import usable_cores, write_yaml
from artlab.progress import progress, tqdm
from artlab.runs import Run, check_name, runs_root
from artlab.training import Reuse, TrainConfig, prepare_collection, reusable, train
from artlab.training.api import keep_apart, kept_out
from artlab.training.config import COLLECTION_FIELDS


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
    if source is not None:
        source = keep_apart(source, targets(base, grid))
    name = name or base.name
    if name and source is not None and source.keep_out:  # runs trained before the guard may hold the leak
        name = f"{name}-apart"
    name = check_name(name or default_name(base, list(grid), source))
    root = runs_root(runs_dir)
    sources, cells = plan(base, grid, seeds, source, name, root)
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    clock = _Clock.announce(name, [*sources.values(), *(cell.config for cell in cells)], root, workers)
    with progress(total=len(sources) + len(cells), desc=f"sweep {name}", unit="run") as bar:
        outcomes = _execute(list(sources.values()), root, workers, bar, clock)
        ready = []
        for cell in cells:
            if cell.source is None or outcomes[cell.source]["status"] == "finished":
                ready.append(cell.config)
            else:  # its source stage failed: nothing to start from
                outcomes[cell.config.name] = {"status": "failed", "error": f"source run {cell.source} failed: "
                                                                           f"{outcomes[cell.source]['error']}"}
                bar.update()
        outcomes |= _execute(ready, root, workers, bar, clock)
    factors = list(grid)
    table = cells_table(cells, outcomes, factors)
    summary = summarise(table, factors)
    metric = next((m for m in METRICS if f"{m} mean" in summary), "accuracy")
    figure = sweep_figure(summary, factors, metric, title=name)
    folder = reports_folder(reports_dir, runs_dir, "sweeps") / name
    result = Sweep(cells=table, summary=summary, figure=figure, report=folder / "sweep.html", runs_dir=root,
                   keys=(*factors, "seed"), runs=Study.index(table, (*factors, "seed")), name=name, factors=factors,
                   metric=metric)
    kept = {run: kept_out(Run.named(run, root)) for run in sources}
    _write(result, {"base": base.to_dict(), "grid": grid, "seeds": seeds,
                    "source": source.to_dict() if source else None, "name": name,
                    **({"kept out of the source runs": kept} if any(kept.values()) else {})})
    return result


def targets(base: TrainConfig, grid: dict[str, list]) -> list[TrainConfig]:
    """The distinct target collections a grid trains on (its factors that decide the images and split)."""
    factors = {k: v for k, v in grid.items() if k in COLLECTION_FIELDS and k not in ("seed", "keep_out")}
    combos = itertools.product(*factors.values())
    return [replace(base, **dict(zip(factors, values))) for values in combos]


def default_workers() -> int:
    """As many worker processes as fit the usable cores: half of them, each training with two threads."""
    return max(1, usable_cores() // 2)


#: A sweep of more runs than this says how many before it starts, and how long they will take once one has trained.
LARGE_SWEEP = 100


@dataclass
class _Clock:
    """A large sweep's time: the first trained run measures how long each takes; one line then says the rest."""

    name: str
    to_train: int
    start: float = 0.0
    said: bool = False

    @classmethod
    def announce(cls, name: str, configs: list[TrainConfig], root: Path, workers: int) -> _Clock | None:
        """For a sweep of more than LARGE_SWEEP runs, one line before it starts: how many runs, how many of them
        to train (finished ones are reused when their settings match), and how many at a time."""
        if len(configs) <= LARGE_SWEEP:
            return None
        finished = [run for run in (Run(root / config.name) for config in configs) if run.finished]
        to_train, took = len(configs) - len(finished), _time_per_run(finished)
        at_once = max(1, min(workers, to_train))
        when = (f"about {_duration(took * math.ceil(to_train / at_once))} on this machine (its finished runs took "
                f"about {_duration(took)} each)" if took is not None else
                "each is a whole training run: the time is estimated once the first has trained")
        tqdm.write(f"sweep {name}: {len(configs)} runs ({to_train} to train, {len(finished)} already finished), "
                   f"{at_once} at a time; {when}", file=sys.stderr)
        return cls(name, to_train, said=took is not None)

    def starting(self) -> None:
        if not self.said:
            self.start = time.perf_counter()

    def trained(self, at_once: int) -> None:
        """A run has trained: after the first, say about how long the others will take at `at_once` at a time."""
        if self.said:
            return
        self.said = True
        seconds = time.perf_counter() - self.start
        left = max(0, self.to_train - 1)
        tqdm.write(f"sweep {self.name}: the first run trained in {_duration(seconds)}; about "
                   f"{_duration(seconds * math.ceil(left / max(1, at_once)))} more for the {left} left, "
                   f"{at_once} at a time, on this machine", file=sys.stderr)


def _time_per_run(finished: list[Run]) -> float | None:
    """The median time finished runs took, from their first file to their last (config.yaml to metrics.json;
    None when none can tell)."""
    times = []
    for run in finished[:50]:
        try:
            times.append(run.file("metrics.json").stat().st_mtime - run.file("config.yaml").stat().st_mtime)
        except OSError:
            continue
    times = sorted(t for t in times if t > 0)
    return times[len(times) // 2] if times else None


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 172_800 else f"{seconds / 86400:.1f} days"


def _execute(configs: list[TrainConfig], root: Path, workers: int, bar: tqdm,
             clock: _Clock | None = None) -> dict[str, dict]:
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
            if clock is not None:
                clock.starting()
            outcomes[config.name] = run_cell(config.to_dict(), str(root))
            bar.update()
            if clock is not None:
                clock.trained(1)
        return outcomes
    count = min(workers, len(pending))
    pool = ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                               initargs=(max(1, usable_cores() // count), os.getpid()))
    if clock is not None:
        clock.starting()
    try:
        with _terminate_stops():
            futures = {pool.submit(run_cell, config.to_dict(), str(root)): config.name for config in pending}
            for future in as_completed(futures):
                try:
                    outcomes[futures[future]] = future.result()
                except Exception as exc:  # noqa: BLE001 - a dead worker breaks the pool: the cells still pending
                    # fail with it (BrokenProcessPool), not the sweep; they are trained again on the next call
                    outcomes[futures[future]] = {"status": "failed",
                                                 "error": f"worker process failed: {_one_line(exc)}"}
                bar.update()
                if clock is not None:
                    clock.trained(count)
    except BaseException:  # stopped (Ctrl-C, TERM): the workers stop now, not after their cells; the runs they
        _stop_workers(pool)  # leave resume on the next call (their checkpoints are kept)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return outcomes


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Terminate a pool's worker processes now (the executor keeps them in `_processes`, pid -> Process)."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        if process.is_alive():
            process.terminate()


@contextmanager
def _terminate_stops() -> Iterator[None]:
    """While a pool trains, SIGTERM stops this process as Ctrl-C does (an exception, so the pool is shut down)
    rather than on the spot; in the main thread only (where Python runs signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _start_worker(threads: int, parent: int) -> None:
    """In each worker: death with the sweep's process, its share of the cores, and no per-run progress bars
    interleaving with the sweep's."""
    _die_with(parent)
    import torch

    torch.set_num_threads(threads)
    os.environ["TQDM_DISABLE"] = "1"  # read by artlab.progress at each bar
    tqdm.set_lock(threading.RLock())  # not tqdm's default, a semaphore that a stopped worker would leave behind


PR_SET_PDEATHSIG = 1  # from linux/prctl.h


def _die_with(parent: int) -> None:
    """On Linux, have the kernel kill this worker (SIGKILL) when the process that started it dies, however it
    dies (KILL included), so a stopped sweep leaves no orphan training its queue; elsewhere, nothing."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # no prctl in this libc: the worker may outlive a killed parent
        return
    if os.getppid() != parent:  # the parent died before prctl took effect: nobody is left to report to
        os._exit(1)


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
