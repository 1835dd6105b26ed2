"""Double fine-tuning as one study (Gonthier et al. 2020): ImageNet -> a medium art collection -> a small target.

    study = double_finetune(Stage("../shared/data/peopleart", "style", top_n=10),
                            Stage("../shared/data/genres", "label"), seeds=(0, 1, 2))
    study.summary, study.difference, study.figure

For every seed, the source stage is fine-tuned once, then five routes are trained on the same
target split: off-the-shelf on ImageNet features, off-the-shelf on the source stage's features,
single fine-tuning, double fine-tuning and scratch. Every cell is an ordinary run in the run store,
so an interrupted study resumes and a finished cell is never trained again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from artlab.analysis import Analysis, Comparison, analyze
from artlab.experiments.report import reports_folder, write_study
from artlab.runs import HEADLINE_METRICS, runs_root
from artlab.training import RunResult, TrainConfig, train
from artlab.training.config import plain_name

ROUTES = ("off-the-shelf (ImageNet)", "off-the-shelf (after source)", "fine-tune", "double fine-tune", "scratch")


@dataclass
class Stage:
    """One collection and how to train on it; the source stage's task may differ from the target's."""

    data: str
    task: str | None = None
    epochs: int = 10
    freeze: int = 0
    lr: float = 0.01
    backbone_lr_mult: float = 0.1
    top_n: int | None = None
    min_images: int = 0
    scratch_lr: float = 0.05  # training from random weights needs a larger step
    options: dict = field(default_factory=dict)  # any other TrainConfig field, e.g. {"layout": "wikiart"}

    @classmethod
    def of(cls, value: Stage | dict | str) -> Stage:
        """A Stage from a Stage, a mapping (YAML) or a collection path."""
        if isinstance(value, Stage):
            return value
        if isinstance(value, str):
            return cls(value)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in value.items() if k in known},
                   options={**value.get("options", {}), **{k: v for k, v in value.items() if k not in known}})


@dataclass
class Study:
    """Every cell's metrics (`cells`), their mean and spread per route (`summary`), double minus single per seed."""

    cells: pd.DataFrame
    summary: pd.DataFrame
    difference: pd.DataFrame
    figure: go.Figure
    report: Path
    runs_dir: Path | None = None

    def run(self, route: str, seed: int) -> Path:
        """The run folder of one cell ("source stage" or one of ROUTES)."""
        cell = self.cells[(self.cells["route"] == route) & (self.cells["seed"] == seed)]
        if cell.empty:
            raise KeyError(f"no {route!r} run for seed {seed}; routes: {sorted(set(self.cells['route']))}, "
                           f"seeds: {sorted(set(self.cells['seed']))}")
        return runs_root(self.runs_dir) / cell["run"].iloc[0]


#: What each stage changed: (name, network compared, network it started from).
STAGE_CHANGES = (("ImageNet -> source", "source stage", "imagenet"),
                 ("source -> target (double)", ROUTES[3], "source stage"),
                 ("ImageNet -> target (double)", ROUTES[3], "imagenet"),
                 ("ImageNet -> target (single)", ROUTES[2], "imagenet"))


def stage_changes(study: Study, seed: int = 0, what: tuple[str, ...] = ("params", "cka", "topk"),
                  max_images: int | None = 500, **options) -> dict[str, Analysis]:
    """The analyses of what each stage changed between ImageNet, the source stage and the target networks.

    Each comparison runs on the compared network's own images (the source collection for the
    source stage, the target collection otherwise) and writes its tables and report under
    `<study report>-changes-seed<seed>/`; chart them together with `analysis.several`, e.g.
    `several(changes, "cka", "cka")`.
    """
    folder = study.report.with_name(f"{study.report.stem}-changes-seed{seed}")
    changes = {}
    for name, tuned, start in STAGE_CHANGES:
        pretrained = "imagenet" if start == "imagenet" else str(study.run(start, seed))
        changes[name] = analyze(Comparison(str(study.run(tuned, seed)), pretrained=pretrained, what=what,
                                           max_images=max_images, **options), out_dir=folder / plain_name(name))
    return changes


def _config(stage: Stage, name: str, strategy: str, seed: int, shared: dict, **extra) -> TrainConfig:
    settings = {"data": str(stage.data), "task": stage.task, "epochs": stage.epochs, "top_n": stage.top_n,
                "min_images": stage.min_images, "seed": seed, "strategy": strategy, **shared, **stage.options}
    if strategy == "fine_tune":
        settings |= {"freeze": stage.freeze, "lr": stage.lr, "backbone_lr_mult": stage.backbone_lr_mult}
    if strategy == "scratch":
        settings |= {"lr": stage.scratch_lr}
    return TrainConfig(name=name, **(settings | extra))


def double_finetune(source: Stage | dict | str, target: Stage | dict | str, seeds: tuple[int, ...] = (0, 1, 2),
                    arch: str = "mobilenet_v2", image_size: int = 128, device: str = "auto",
                    runs_dir: str | Path | None = None, reports_dir: str | Path | None = None,
                    name: str | None = None) -> Study:
    """Train (or reuse) the source stage and the five target routes for each seed; tabulate and chart them."""
    source, target = Stage.of(source), Stage.of(target)
    shared = {"arch": arch, "image_size": image_size, "device": device}
    stems = [Path(str(stage.data).rstrip("/")).stem for stage in (source, target)]
    name = name or plain_name(f"double-{stems[0]}-to-{stems[1]}-{arch}-{image_size}px")
    rows = []
    for seed in seeds:
        stage1 = train(_config(source, f"{name}-source-seed{seed}", "fine_tune", seed, shared), runs_dir, resume=True)
        first = str(stage1.run.path)
        routes = {
            ROUTES[0]: _config(target, f"{name}-off_the_shelf-seed{seed}", "off_the_shelf", seed, shared),
            ROUTES[1]: _config(target, f"{name}-off_the_shelf_source-seed{seed}", "off_the_shelf", seed, shared,
                               init_from=first),
            ROUTES[2]: _config(target, f"{name}-fine_tune-seed{seed}", "fine_tune", seed, shared),
            ROUTES[3]: _config(target, f"{name}-double_fine_tune-seed{seed}", "fine_tune", seed, shared,
                               init_from=first),
            ROUTES[4]: _config(target, f"{name}-scratch-seed{seed}", "scratch", seed, shared),
        }
        for route, config in routes.items():
            rows.append(_row(route, seed, train(config, runs_dir, resume=True)))
        rows.append(_row("source stage", seed, stage1))
    cells = pd.DataFrame(rows)
    summary, difference = summarise(cells)
    figure = study_figure(summary, f"{name}: test accuracy per route (mean and standard deviation over "
                                   f"{len(seeds)} seed(s))")
    report = _write(cells, summary, difference, figure, reports_folder(reports_dir, runs_dir) / name, source, target,
                    seeds)
    return Study(cells, summary, difference, figure, report, Path(runs_root(runs_dir)))


def _row(route: str, seed: int, result: RunResult) -> dict:
    return {"route": route, "seed": seed, "run": result.run.name, "test images": result.metrics["n_images"],
            **{k: result.metrics[k] for k in HEADLINE_METRICS if k in result.metrics}}


def summarise(cells: pd.DataFrame, metric: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean and sample standard deviation per route, and the paired difference double - single per seed."""
    metric = metric or ("accuracy" if "accuracy" in cells else "mAP")
    grouped = cells.groupby("route", sort=False)[metric]
    summary = pd.DataFrame({"mean": grouped.mean(), "sd": grouped.std(ddof=1), "seeds": grouped.size()})
    summary = summary.reindex([r for r in (*ROUTES, "source stage") if r in summary.index]).reset_index()
    by_route = cells.pivot(index="seed", columns="route", values=metric)
    difference = pd.DataFrame({"seed": by_route.index, "double": by_route[ROUTES[3]].to_numpy(),
                               "single": by_route[ROUTES[2]].to_numpy()})
    difference["double - single"] = difference["double"] - difference["single"]
    return summary.rename(columns={"mean": f"{metric} mean", "sd": f"{metric} sd"}), difference


def study_figure(summary: pd.DataFrame, title: str) -> go.Figure:
    """Bars per route with the standard deviation over seeds as error bars."""
    mean, sd = summary.columns[1], summary.columns[2]
    figure = go.Figure(go.Bar(x=summary["route"], y=summary[mean], error_y={"type": "data", "array": summary[sd]},
                              text=[f"{v:.1%}" for v in summary[mean]], textposition="outside"))
    figure.update_layout(title=title, yaxis={"title": mean, "range": [0, 1.1]})
    return figure


def _write(cells: pd.DataFrame, summary: pd.DataFrame, difference: pd.DataFrame, figure: go.Figure, stem: Path,
           source: Stage, target: Stage, seeds: tuple[int, ...]) -> Path:
    """The study's tables and report page, with its settings and the mean gain in words."""
    gain = difference["double - single"]
    spread = f" (sd {gain.std(ddof=1):.1%})" if len(gain) > 1 else ""
    text = (f"source: {asdict(source)}; target: {asdict(target)}; seeds {list(seeds)}. Double minus single "
            f"fine-tuning: {gain.mean():+.1%}{spread} over {len(gain)} seed(s).")
    return write_study(stem, figure, cells, summary, difference, "Double minus single fine-tuning, per seed", text)
