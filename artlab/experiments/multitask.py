"""Multi-task against single-task learning (Sabatelli et al.'s Rijksmuseum follow-up: artist, material, type).

    study = multitask_study(TrainConfig(data="../shared/data/peopleart", min_images=20), ["style", "artist"])
    study.summary, study.difference, study.figure

For every seed, one network learns all the tasks (one backbone, one head per task) and one
network per task learns that task alone, with the same epochs and freezing and the multi-task run's
split (`split_from`); each task is then scored on the same test images. Every network is an
ordinary run in the run store, so an interrupted study resumes and a finished run is never
trained again. `study.run(seed)` is the multi-task network, `study.run(seed, task)` a single-task one.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd

from artlab.experiments.report import reports_folder, write_study
from artlab.experiments.study import Study, bar_chart, paired, spread
from artlab.runs import runs_root
from artlab.training import TrainConfig, train
from artlab.training.config import plain_name
from artlab.training.metrics import headline, headline_name

SETTINGS = ("multi-task", "single-task")


def multitask_study(base: TrainConfig | dict, tasks: list[str], seeds: tuple[int, ...] = (0, 1, 2),
                    task_weights: list[float] | None = None, runs_dir: str | Path | None = None,
                    reports_dir: str | Path | None = None, name: str | None = None) -> Study:
    """Train (or reuse) one multi-task network and one single-task network per task for each seed."""
    base = TrainConfig.coerce(base, "base")
    if len(tasks) < 2:
        raise ValueError(f"a multi-task study needs at least two tasks, not {tasks}")
    if base.strategy == "off_the_shelf":
        raise ValueError("a multi-task study trains networks: use strategy fine_tune or scratch")
    stem = Path(str(base.data).rstrip("/")).stem
    name = name or plain_name(f"multitask-{stem}-{'+'.join(tasks)}-{base.arch}-{base.image_size}px")
    rows, runs = [], {}
    for seed in seeds:
        multi = train(replace(base, name=f"{name}-all-seed{seed}", task=list(tasks), task_weights=task_weights,
                              seed=seed), runs_dir, resume=True)
        runs[seed, None] = multi.run.name
        for task in tasks:
            single = train(replace(base, name=f"{name}-{task}-seed{seed}", task=task, task_weights=None, seed=seed,
                                   split_from=str(multi.run.path)), runs_dir, resume=True)
            runs[seed, task] = single.run.name
            rows.append(_row(SETTINGS[0], seed, task, multi.run.name, multi.metrics["tasks"][task]))
            rows.append(_row(SETTINGS[1], seed, task, single.run.name, single.metrics))
    cells = pd.DataFrame(rows)
    summary = spread(cells, ["task", "setting"], ["score"], named=False)
    difference = paired(cells, "setting", SETTINGS, "score", (*SETTINGS, "multi - single"), by=("task",))
    figure = bar_chart(summary, "task", f"{name}: test score per task (mean and standard deviation over "
                                        f"{len(seeds)} seed(s))", "test score (accuracy or mAP)", group="setting")
    gains = difference.groupby("task", sort=False)["multi - single"]
    settings = (f"tasks {tasks}, seeds {list(seeds)}; data {base.data}, {base.strategy}, {base.arch} at "
                f"{base.image_size} px, {base.epochs} epochs, freeze {base.freeze}, lr {base.lr}. Multi minus single: "
                + "; ".join(f"{task} {gain.mean():+.1%}" for task, gain in gains) + ".")
    report = write_study(reports_folder(reports_dir, runs_dir) / name, figure, cells, summary, difference,
                         "Multi-task minus single-task, per seed", settings)
    return Study(cells=cells, summary=summary, difference=difference, figure=figure, report=report,
                 runs_dir=Path(runs_root(runs_dir)), keys=("seed", "task"), runs=runs)


def _row(setting: str, seed: int, task: str, run: str, metrics: dict) -> dict:
    return {"setting": setting, "seed": seed, "task": task, "run": run, "test images": metrics["n_images"],
            "score": headline(metrics), "metric": headline_name(metrics)}
