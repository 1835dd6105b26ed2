"""Multi-task against single-task learning (Sabatelli et al.'s Rijksmuseum follow-up: artist, material, type).

    study = multitask_study(TrainConfig(data="../shared/data/peopleart", min_images=20), ["style", "artist"])
    study.summary, study.difference, study.figure

For every seed, one network learns all the tasks (one backbone, one head per task) and one
network per task learns that task alone, with the same epochs and freezing and the multi-task run's
split (`split_from`); each task is then scored on the same test images. Every network is an
ordinary run in the run store, so an interrupted study resumes and a finished run is never
trained again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from artlab.experiments.report import reports_folder, write_study
from artlab.runs import runs_root
from artlab.training import TrainConfig, train
from artlab.training.config import plain_name
from artlab.training.metrics import headline

SETTINGS = ("multi-task", "single-task")


@dataclass
class MultiTaskStudy:
    """Each (seed, setting, task) score (`cells`), mean and spread (`summary`), multi minus single per seed."""

    cells: pd.DataFrame
    summary: pd.DataFrame
    difference: pd.DataFrame
    figure: go.Figure
    report: Path
    runs_dir: Path | None = None

    def run(self, seed: int = 0, task: str | None = None) -> Path:
        """The run folder of the multi-task network of `seed`, or of the single-task network of `task`."""
        setting = SETTINGS[0] if task is None else SETTINGS[1]
        cells = self.cells[(self.cells["setting"] == setting) & (self.cells["seed"] == seed)]
        cells = cells if task is None else cells[cells["task"] == task]
        if cells.empty:
            raise KeyError(f"no {setting} run for seed {seed}{f' and task {task!r}' if task else ''}; seeds: "
                           f"{sorted(set(self.cells['seed']))}, tasks: {sorted(set(self.cells['task']))}")
        return runs_root(self.runs_dir) / cells["run"].iloc[0]


def multitask_study(base: TrainConfig | dict, tasks: list[str], seeds: tuple[int, ...] = (0, 1, 2),
                    task_weights: list[float] | None = None, runs_dir: str | Path | None = None,
                    reports_dir: str | Path | None = None, name: str | None = None) -> MultiTaskStudy:
    """Train (or reuse) one multi-task network and one single-task network per task for each seed."""
    base = TrainConfig.from_dict(base) if isinstance(base, dict) else base
    if len(tasks) < 2:
        raise ValueError(f"a multi-task study needs at least two tasks, not {tasks}")
    if base.strategy == "off_the_shelf":
        raise ValueError("a multi-task study trains networks: use strategy fine_tune or scratch")
    stem = Path(str(base.data).rstrip("/")).stem
    name = name or plain_name(f"multitask-{stem}-{'+'.join(tasks)}-{base.arch}-{base.image_size}px")
    rows = []
    for seed in seeds:
        multi = train(replace(base, name=f"{name}-all-seed{seed}", task=list(tasks), task_weights=task_weights,
                              seed=seed), runs_dir, resume=True)
        for task in tasks:
            single = train(replace(base, name=f"{name}-{task}-seed{seed}", task=task, task_weights=None, seed=seed,
                                   split_from=str(multi.run.path)), runs_dir, resume=True)
            rows.append(_row(SETTINGS[0], seed, task, multi.run.name, multi.metrics["tasks"][task]))
            rows.append(_row(SETTINGS[1], seed, task, single.run.name, single.metrics))
    cells = pd.DataFrame(rows)
    summary, difference = summarise(cells)
    figure = study_figure(summary, f"{name}: test score per task (mean and standard deviation over "
                                   f"{len(seeds)} seed(s))")
    report = _write(cells, summary, difference, figure, reports_folder(reports_dir, runs_dir) / name, base, tasks,
                    seeds)
    return MultiTaskStudy(cells, summary, difference, figure, report, Path(runs_root(runs_dir)))


def _row(setting: str, seed: int, task: str, run: str, metrics: dict) -> dict:
    return {"setting": setting, "seed": seed, "task": task, "run": run, "test images": metrics["n_images"],
            "score": headline(metrics), "metric": "mAP" if "mAP" in metrics else "accuracy"}


def summarise(cells: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean and sample standard deviation per (task, setting); the paired difference multi - single per seed."""
    grouped = cells.groupby(["task", "setting"], sort=False)["score"]
    summary = pd.DataFrame({"mean": grouped.mean(), "sd": grouped.std(ddof=1), "seeds": grouped.size()}).reset_index()
    paired = cells.pivot_table(index=["task", "seed"], columns="setting", values="score").reset_index()
    paired["multi - single"] = paired[SETTINGS[0]] - paired[SETTINGS[1]]
    return summary, paired.rename_axis(columns=None)


def study_figure(summary: pd.DataFrame, title: str) -> go.Figure:
    """Grouped bars: each task's score alone and within the multi-task network, with the spread over seeds."""
    figure = go.Figure([go.Bar(name=setting, x=part["task"], y=part["mean"], error_y={"type": "data",
                                                                                      "array": part["sd"]},
                               text=[f"{v:.1%}" for v in part["mean"]], textposition="outside")
                        for setting, part in summary.groupby("setting", sort=False)])
    figure.update_layout(title=title, barmode="group", yaxis={"title": "test score (accuracy or mAP)",
                                                              "range": [0, 1.1]})
    return figure


def _write(cells: pd.DataFrame, summary: pd.DataFrame, difference: pd.DataFrame, figure: go.Figure, stem: Path,
           base: TrainConfig, tasks: list[str], seeds: tuple[int, ...]) -> Path:
    """The study's tables and report page, with its settings and each task's mean gain in words."""
    gains = difference.groupby("task", sort=False)["multi - single"]
    text = (f"tasks {tasks}, seeds {list(seeds)}; data {base.data}, {base.strategy}, {base.arch} at "
            f"{base.image_size} px, {base.epochs} epochs, freeze {base.freeze}, lr {base.lr}. Multi minus single: "
            + "; ".join(f"{task} {gain.mean():+.1%}" for task, gain in gains) + ".")
    return write_study(stem, figure, cells, summary, difference, "Multi-task minus single-task, per seed", text)
