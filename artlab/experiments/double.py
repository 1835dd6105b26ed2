"""Double fine-tuning as one study (Gonthier et al. 2020): ImageNet -> a medium art collection -> a small target.

    study = double_finetune(TrainConfig(data="../shared/data/peopleart", task="style", top_n=10),
                            TrainConfig(data="../shared/data/genres", task="label"), seeds=(0, 1, 2))
    study.summary, study.difference, study.figure

For every seed, the source stage is fine-tuned once, then five routes are trained on the same
target split: off-the-shelf on ImageNet features, off-the-shelf on the source stage's features,
single fine-tuning, double fine-tuning and scratch (`routes=` trains some of them only). With
`shared_source=True` one source stage, kept apart from every seed's validation and test images,
serves all seeds: on a 10,000-image source it is most of the study's time. Every cell is an ordinary
run in the run store, so an interrupted study resumes and a finished cell is never trained again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from artlab.analysis import Analysis, Comparison, analyze
from artlab.cache import digest
from artlab.experiments.report import reports_folder, write_study
from artlab.experiments.study import SCRATCH_LR, Study, bar_chart, paired, route_config, spread
from artlab.runs import runs_root
from artlab.training import RunResult, TrainConfig, train
from artlab.training.api import keep_apart, kept_out
from artlab.training.config import plain_name
from artlab.training.metrics import HEADLINE_METRICS, headline_name

ROUTES = ("off-the-shelf (ImageNet)", "off-the-shelf (after source)", "fine-tune", "double fine-tune", "scratch")
#: The route strategies, in ROUTES order, and whether each starts from the source stage.
_ROUTES = (("off_the_shelf", False), ("off_the_shelf", True), ("fine_tune", False), ("fine_tune", True),
           ("scratch", False))
#: The run name of each route, after the study's name.
_NAMES = ("off_the_shelf", "off_the_shelf_source", "fine_tune", "double_fine_tune", "scratch")

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


def double_finetune(source: TrainConfig | dict | str, target: TrainConfig | dict | str,
                    seeds: tuple[int, ...] = (0, 1, 2), scratch_lr: float | None = None,
                    runs_dir: str | Path | None = None, reports_dir: str | Path | None = None, name: str | None = None,
                    routes: Sequence[str] | None = None, shared_source: bool = False, **shared: Any) -> Study:
    """Train (or reuse) the source stage and the target routes for each seed; tabulate and chart them.

    `source` and `target`: how to train on each collection (a config, a mapping of its fields, or a
    collection path); `shared`: fields set on both (arch, image_size, device, ...); `scratch_lr`: the
    scratch route's learning rate (default: the target mapping's `scratch_lr`, else 0.05); `routes`:
    which of ROUTES to train (default None: all; a run's name does not depend on it, so studies of some routes
    and of all share their runs), the source stage only when one of them starts from it. The
    difference double minus single is paired when both fine-tunings are among them (else empty);
    `shared_source`: one source stage (with the first seed) for every seed, instead of one per seed. The
    paired differences then measure the target side only: the one source network's luck is in all of them.
    """
    chosen = _routes(routes if routes is not None else ROUTES)
    source, _ = _stage(source, "source", shared)
    target, given_lr = _stage(target, "target", shared)
    scratch_lr = scratch_lr if scratch_lr is not None else given_lr if given_lr is not None else SCRATCH_LR
    if source.arch != target.arch:
        raise ValueError(f"the source stage ({source.arch}) and the target ({target.arch}) need one architecture")
    stems = [Path(str(stage.data).rstrip("/")).stem for stage in (source, target)]
    name = name or plain_name(f"double-{stems[0]}-to-{stems[1]}-{target.arch}-{target.image_size}px")
    source = keep_apart(source, [target], seeds=seeds if shared_source else None)
    if source.keep_out:  # runs of its own: any trained before the guard may have learned the target's test images
        name = f"{name}-apart"
    needs_source = any(after_source for route, (_, after_source) in zip(ROUTES, _ROUTES) if route in chosen)
    shared_tag = "-shared" + "-".join(map(str, seeds))  # other seeds: another source stage (it keeps them out)
    if len(shared_tag) > 24:  # many seeds: a short digest of them keeps run names within their limit
        shared_tag = f"-shared{len(seeds)}seeds-{digest(list(seeds), 8)}"
    one_source = train(route_config(source, "fine_tune", name=f"{name}-source{shared_tag}", seed=seeds[0]), runs_dir,
                       resume=True) if needs_source and shared_source else None
    rows = []
    for seed in seeds:
        first = one_source or (train(route_config(source, "fine_tune", name=f"{name}-source-seed{seed}", seed=seed),
                                     runs_dir, resume=True) if needs_source else None)
        for route, (strategy, after_source), run_name in zip(ROUTES, _ROUTES, _NAMES):
            if route not in chosen:
                continue
            from_source = shared_tag if after_source and shared_source else ""  # another source: other runs
            config = route_config(target, strategy, scratch_lr, name=f"{name}-{run_name}{from_source}-seed{seed}",
                                  seed=seed, **({"init_from": str(first.run.path)} if after_source else {}))
            rows.append(_row(route, seed, train(config, runs_dir, resume=True)))
        if first is not None:  # the shared stage under every seed, so that each seed's stage changes can be read
            rows.append(_row("source stage", seed, first) | {"kept out": kept_out(first.run)})
    cells = pd.DataFrame(rows)
    metric = headline_name(cells[cells["route"] != "source stage"].dropna(axis=1, how="all"))
    summary = spread(cells.drop_duplicates("run"), ["route"], [metric])  # a shared source stage counted once
    both = ROUTES[3] in chosen and ROUTES[2] in chosen
    difference = paired(cells, "route", (ROUTES[3], ROUTES[2]), metric,
                        ("double", "single", "double - single")) if both else pd.DataFrame()
    figure = bar_chart(summary, "route", f"{name}: test {metric} per route (mean and standard deviation over "
                                         f"{len(seeds)} seed(s))", f"{metric} mean", f"{metric} mean", f"{metric} sd")
    gain_note = ""
    if both:
        gain = difference["double - single"]
        sd = f" (sd {gain.std(ddof=1):.1%})" if len(gain) > 1 else ""
        gain_note = f" Double minus single fine-tuning: {gain.mean():+.1%}{sd} over {len(gain)} seed(s)."
    trained = "" if len(chosen) == len(ROUTES) else f"; routes {list(chosen)}"
    stages = "; one source stage for every seed" if shared_source else ""
    settings = (f"source: {_settings(source)}; target: {_settings(target)}; scratch lr {scratch_lr}; seeds "
                f"{list(seeds)}{trained}{stages}.{gain_note} {_kept_out_note(cells, shared_source)}").rstrip()
    report_name = f"{name}{shared_tag}" if shared_source else name
    report = write_study(reports_folder(reports_dir, runs_dir) / report_name, figure, cells, summary, difference,
                         "Double minus single fine-tuning, per seed", settings)
    return Study(cells=cells, summary=summary, difference=difference, figure=figure, report=report,
                 runs_dir=Path(runs_root(runs_dir)), keys=("route", "seed"), runs=Study.index(cells, ("route", "seed")))


def _routes(routes: Sequence[str]) -> tuple[str, ...]:
    """The routes asked for, checked against ROUTES (at least one, none unknown), in ROUTES order."""
    asked = [routes] if isinstance(routes, str) else list(routes)
    unknown = [route for route in asked if route not in ROUTES]
    if unknown or not asked:
        raise ValueError(f"routes must name one or more of {list(ROUTES)}, not {unknown or asked}")
    return tuple(route for route in ROUTES if route in asked)


def _stage(value: TrainConfig | dict | str, what: str, shared: dict) -> tuple[TrainConfig, float | None]:
    """A stage's config with the shared fields set, and the `scratch_lr` its mapping gives (a YAML stage may
    also nest fields under `options`)."""
    scratch_lr = None
    if isinstance(value, dict):
        value = dict(value)
        scratch_lr = value.pop("scratch_lr", None)
        value |= value.pop("options", None) or {}
    config = TrainConfig.coerce(value, what)
    try:
        return replace(config, data=str(config.data), **shared), scratch_lr
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: {exc}") from None


def _kept_out_note(cells: pd.DataFrame, shared_source: bool = False) -> str:
    """What the leak guard did, in a sentence."""
    if "kept out" not in cells:
        return ""  # no source stage trained: no route starts from it
    kept = cells.loc[cells["route"] == "source stage", ["seed", "kept out"]]
    if not kept["kept out"].any():
        return "The source stage shares no image file with the target's validation and test splits."
    if shared_source:
        seeds = ", ".join(str(seed) for seed in kept["seed"])
        return (f"Images of the target's validation and test splits (seeds {seeds}) found in the source collection "
                f"were kept out of the shared source stage: {int(kept['kept out'].iloc[0])}.")
    counts = ", ".join(f"{int(n)} (seed {seed})" for seed, n in kept.itertuples(index=False))
    return (f"Images of the target's validation and test splits found in the source collection were kept out of "
            f"the source stage: {counts}.")


def _settings(config: TrainConfig) -> dict:
    """The fields a config sets apart from the defaults (its name and seed are the study's)."""
    defaults = TrainConfig().to_dict()
    return {k: v for k, v in config.to_dict().items() if v != defaults[k] and k not in ("name", "seed", "keep_out")}


def _row(route: str, seed: int, result: RunResult) -> dict:
    return {"route": route, "seed": seed, "run": result.run.name, "test images": result.metrics["n_images"],
            **{k: result.metrics[k] for k in HEADLINE_METRICS if k in result.metrics}}
