"""What fine-tuning changed: parameter, feature-space and maximal-activation analyses of two networks.

    from artlab.analysis import Comparison, analyze
    result = analyze(Comparison("runs/peopleart-style-fine_tune-mobilenet_v2-128px", k=50))
    result.tables["cka"], result.figures["cka.per_layer"], result.report

Each analysis is registered under its name in `ANALYSES` and returns its tables and figures;
figures are keyed by stable ids (`"cka.per_layer"`, `"topk.overlap"`, ...), their human title
inside. Tables are tidy DataFrames written as CSV to `<run>/analysis/` beside an HTML report.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from torch import nn

from artlab import models, plots
from artlab.analysis.onepass import OnePass, cached_pass, one_pass
from artlab.analysis.options import CkaOptions, PassOptions
from artlab.analysis.params import block_changes, filter_changes, layer_changes, most_changed
from artlab.analysis.topk import TopK, class_entropy, collection_entropy, dead_kernels, overlap, per_layer
from artlab.data.layouts import load
from artlab.io import write_csv
from artlab.models import ModelCard
from artlab.runs import RANDOM, Network, Run, run_collection


@dataclass
class Comparison:
    """Which two networks to compare, on which images, and with which settings.

    `pretrained`: 'imagenet' (the architecture's ImageNet weights), 'random' (an untrained
    network), another run folder, or any network `artlab.runs.Network.of` takes. `data`: the
    images to analyse (default: the fine-tuned run's own collection). `cka_pool` turns an
    activation map into CKA features: 'avg', 'grid' (`cka_grid` x `cka_grid` cells) or 'flatten'.
    `task`: whose classes measure the class concentration of the top-k images (default: the
    fine-tuned run's first task). CKA and top-k
    come from one forward pass per network; `compile` runs the networks through torch.compile
    (it pays only on large collections: compiling takes tens of seconds).
    """

    finetuned: str | Path
    pretrained: str | Path | Network = "imagenet"
    data: str | None = None
    what: tuple[str, ...] = ("params", "cka", "topk")
    k: int = 100
    max_images: int | None = None
    image_size: int | None = None
    layers: list[str] | None = None
    cka_pool: str = "avg"
    cka_grid: int = 2
    batch_size: int = 32
    device: str | torch.device = "cpu"
    seed: int = 0
    task: str | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        self.what = (self.what,) if isinstance(self.what, str) else tuple(self.what)
        unknown = set(self.what) - set(ANALYSES)
        if unknown:
            raise ValueError(f"unknown analyses {sorted(unknown)}; choose from {tuple(ANALYSES)}")


@dataclass
class Findings:
    """What one analysis returns: tidy tables and figures by stable id (and top-k lists to browse)."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, go.Figure] = field(default_factory=dict)
    tops: dict[str, TopK] = field(default_factory=dict)


@dataclass
class Analysis(Findings):
    """The findings of every analysis of one comparison, and the report page that shows them.

    After a 'topk' analysis, `tops` holds each network's top-k lists and `labels` the images'
    classes, for browsing (artlab.widgets.topk_browser).
    """

    comparison: Comparison | None = None
    report: Path | None = None
    labels: np.ndarray | None = None
    networks: dict[str, nn.Module] = field(default_factory=dict, repr=False)  # compared, by name (base first)

    def figure(self, figure_id: str) -> go.Figure:
        """A figure by its stable id, with an error that lists the ids there are."""
        if figure_id not in self.figures:
            raise KeyError(f"no figure {figure_id!r}; this analysis has {sorted(self.figures)}")
        return self.figures[figure_id]


class Context:
    """What every analysis receives: the two networks, their names, the layers and (lazily) the images."""

    def __init__(self, comparison: Comparison):
        self.comparison = comparison
        self.run = Run(comparison.finetuned)
        self.card: ModelCard = self.run.card()
        if not self.run.finished:
            warnings.warn(f"run {self.run.name} has not finished training: analysing its best model so far",
                          stacklevel=3)
        self.spec = models.arch(self.card.arch)
        self.task = comparison.task or self.card.tasks[0]
        if comparison.data is None and self.task not in self.card.tasks:
            raise ValueError(f"run {self.run.name} has no task {self.task!r}; its tasks are {list(self.card.tasks)}")
        tuned, base = Network.of(self.run, self.card.arch), Network.of(comparison.pretrained, self.card.arch)
        self.weights = {"base": base.weights_id, "tuned": tuned.weights_id}
        self.tuned, self.tuned_name = tuned.build(), tuned.name
        self.base, self.base_name = base.build(), base.name
        self.layers = list(comparison.layers or self.spec.layers)
        models.check_layers(self.spec, self.layers)
        self.image_size = comparison.image_size or self.card.image_size
        self.device = torch.device(comparison.device)
        self.skipped = pd.DataFrame(columns=["path", "reason"])  # filled when the images are read

    @property
    def forward_options(self) -> dict:
        return {"image_size": self.image_size, "batch_size": self.comparison.batch_size, "device": self.device}

    @cached_property
    def images(self) -> tuple[list[str], np.ndarray]:
        """The images to analyse (the run's own collection by default) and one label each for the task."""
        c = self.comparison
        collection = run_collection(self.run, self.card) if c.data is None else \
            load(c.data).labelled(self.task).check_images()
        if self.task not in collection.multi_label:
            raise KeyError(f"{c.data or self.run.path} has no task {self.task!r}; its tasks are {collection.tasks}")
        collection = collection.labelled(self.task)  # a multi-task run's images without this task's label: left out
        table = collection.table
        if c.max_images is not None and len(table) > c.max_images:
            table = table.sample(n=c.max_images, random_state=c.seed).sort_index()
        labels = table[self.task].map(lambda v: v[0] if isinstance(v, tuple) else v).to_numpy()
        self.skipped = collection.skipped
        return table["path"].tolist(), labels

    @cached_property
    def passes(self) -> OnePass:
        """CKA sums and top-k lists of every requested analysis, from one forward pass per network."""
        return self.measure(tuple(need for need in ("cka", "topk") if need in self.comparison.what))

    def measure(self, needs: tuple[str, ...]) -> OnePass:
        """One pass over the images feeding `needs` ('cka': with the random-network baseline; 'topk')."""
        c = self.comparison
        paths, _ = self.images
        random = Network.of(RANDOM, self.spec.name) if "cka" in needs else None
        cka = CkaOptions(c.cka_pool, c.cka_grid) if "cka" in needs else False
        k = c.k if "topk" in needs else None
        spec = self.weights | {"random": random and random.weights_id, "layers": self.layers, "k": k,
                               "cka": cka and asdict(cka), "size": self.image_size}
        return cached_pass(spec, paths, lambda: one_pass(
            self.base, self.tuned, paths, self.layers, cka=cka, k=k, random=random and random.build(),
            options=PassOptions(compile=c.compile, **self.forward_options)))

    def measured(self, need: str) -> OnePass:
        """The shared pass when it covers `need`, else a pass for `need` alone (an analysis called on its own)."""
        return self.passes if need in self.comparison.what else self.measure((need,))


ANALYSES: dict[str, Callable[[Context], Findings]] = {}


def register(name: str) -> Callable[[Callable[[Context], Findings]], Callable[[Context], Findings]]:
    """Register an analysis under `name`: a function of a Context returning Findings."""
    def decorator(function: Callable[[Context], Findings]) -> Callable[[Context], Findings]:
        ANALYSES[name] = function
        return function

    return decorator


@register("params")
def params_analysis(ctx: Context) -> Findings:
    """Relative change, Frobenius norm and correlation of every convolution filter, per layer and block."""
    filters = filter_changes(ctx.base, ctx.tuned, ctx.spec.layers)
    convs = layer_changes(ctx.base, ctx.tuned, ctx.spec.layers, filters)
    blocks = block_changes(convs)
    figure = plots.layer_curves(blocks.assign(model=f"{ctx.tuned_name} vs {ctx.base_name}"), "relative_change",
                                "Relative change of the weights per layer: mean |W_ft - W_pre| / mean |W_pre|",
                                y_label="relative change")
    return Findings(tables={"params_filters": filters, "params_layers": convs, "params_blocks": blocks,
                            "params_most_changed": most_changed(filters, 20)},
                    figures={"params.per_layer": figure})


@register("cka")
def cka_analysis(ctx: Context) -> Findings:
    """Linear CKA per layer and layer x layer, with a random-network baseline."""
    measured = ctx.measured("cka")
    matrix = measured.cka
    diagonal = matrix[matrix["layer_a"] == matrix["layer_b"]].assign(comparison=f"{ctx.base_name} vs {ctx.tuned_name}")
    baseline = measured.cka_random.assign(comparison=f"{ctx.base_name} vs random init")
    per_layer_cka = pd.concat([diagonal, baseline], ignore_index=True).rename(columns={"layer_a": "layer"})
    title = f"Linear CKA per layer (same layer in both networks): {ctx.base_name} vs {ctx.tuned_name}, and vs random"
    per_layer_figure = plots.layer_curves(per_layer_cka, "cka", title, color="comparison", y_label="linear CKA")
    matrix_figure = plots.cka_heatmap(
        matrix, title=f"Linear CKA, layer x layer: {ctx.base_name} (rows) vs {ctx.tuned_name} (columns)")
    return Findings(tables={"cka": per_layer_cka.drop(columns=["layer_b", "depth_b"]), "cka_matrix": matrix},
                    figures={"cka.per_layer": per_layer_figure, "cka.matrix": matrix_figure})


@register("topk")
def topk_analysis(ctx: Context) -> Findings:
    """Top-k images per channel for both networks: overlap, class concentration, dead kernels, a gallery."""
    _, labels = ctx.images
    measured = ctx.measured("topk")
    tops = {ctx.base_name: measured.tops["base"], ctx.tuned_name: measured.tops["tuned"]}
    shared = overlap(tops[ctx.base_name], tops[ctx.tuned_name])
    entropy = pd.concat([class_entropy(top, labels).assign(model=name) for name, top in tops.items()],
                        ignore_index=True)
    dead = pd.concat([dead_kernels(top).assign(model=name) for name, top in tops.items()], ignore_index=True)
    entropy_layers = pd.concat([per_layer(entropy[entropy["model"] == name], "entropy_bits").assign(model=name)
                                for name in tops], ignore_index=True)
    overlap_layers = per_layer(shared, "overlap_pct")
    k_used = tops[ctx.base_name].k
    figures = {
        "topk.overlap": plots.layer_curves(
            overlap_layers.assign(model=f"{ctx.base_name} vs {ctx.tuned_name}"), "mean",
            f"Top-{k_used} overlap between the two networks: mean share of a channel's top-{k_used} images in common",
            y_label="overlap (%)"),
        "topk.entropy": plots.layer_curves(
            entropy_layers, "mean", f"Class concentration of the top-{k_used} images: mean entropy of the "
                                    f"{ctx.task} classes among a channel's top-{k_used} (lower = more concentrated)",
            reference=collection_entropy(labels), reference_label="whole collection", y_label="entropy (bits)"),
        "topk.gallery": _most_concentrated_gallery(ctx, tops[ctx.tuned_name], entropy, labels)}
    return Findings(tables={"topk_overlap": shared, "topk_overlap_layers": overlap_layers, "topk_entropy": entropy,
                            "topk_entropy_layers": entropy_layers,
                            "dead_kernels": dead.assign(dead_channels=dead["dead_channels"].map(json.dumps))},
                    figures=figures, tops=tops)


def _most_concentrated_gallery(ctx: Context, top: TopK, entropy: pd.DataFrame, labels: np.ndarray) -> go.Figure:
    """The top images of the deepest layer's most class-concentrated channel of the fine-tuned network."""
    deep = entropy[(entropy["model"] == ctx.tuned_name) & (entropy["layer"] == ctx.layers[-1])]
    best = deep.sort_values(["entropy_bits", "channel"]).iloc[0]
    shown = top.indices[best["layer"]][int(best["channel"])].tolist()[:15]
    return plots.gallery([top.paths[i] for i in shown], [str(labels[i]) for i in shown],
                         f"Most class-concentrated channel of {best['layer']} in {ctx.tuned_name}: channel "
                         f"{int(best['channel'])} (entropy {best['entropy_bits']:.2f} bits)")


def analyze(comparison: Comparison | str | Path, out_dir: str | Path | None = None) -> Analysis:
    """Run the comparison's analyses and write their tables and an HTML report.

    `comparison` may be a run folder alone: it is then compared with its ImageNet weights with
    the default settings. Output goes to `<run>/analysis/` unless `out_dir` is given.
    """
    comparison = comparison if isinstance(comparison, Comparison) else Comparison(comparison)
    ctx = Context(comparison)
    result = Analysis(comparison=comparison, networks={ctx.base_name: ctx.base, ctx.tuned_name: ctx.tuned})
    for name in comparison.what:
        findings = ANALYSES[name](ctx)
        result.tables |= findings.tables
        result.figures |= findings.figures
        result.tops |= findings.tops
    if result.tops:
        result.labels = ctx.images[1]
    if len(ctx.skipped):  # images the analysis could not use (missing since training, broken, no label for the task)
        result.tables["skipped_images"] = ctx.skipped.reset_index(drop=True)
    out_dir = Path(out_dir) if out_dir is not None else ctx.run.path / "analysis"
    _save(result, out_dir, f"{ctx.tuned_name} vs {ctx.base_name}")
    return result


def several(analyses: dict[str, Analysis], table: str, y: str, title: str | None = None) -> go.Figure:
    """One chart of a per-layer table across several comparisons, e.g. fine-tuned with different frozen depths.

    `table`: a per-layer table name (params_blocks, cka, topk_overlap_layers, topk_entropy_layers);
    `y`: its column to plot (relative_change, cka, mean, ...).
    """
    frames = []
    for name, analysis in analyses.items():
        if table not in analysis.tables:
            raise KeyError(f"analysis {name!r} has no table {table!r}; it has {sorted(analysis.tables)}")
        frame = analysis.tables[table]
        frame = frame[frame["model"] != frame["model"].iloc[0]] if table == "topk_entropy_layers" else frame
        frame = frame[~frame["comparison"].str.endswith("random init")] if "comparison" in frame else frame
        frames.append(frame.assign(model=name))
    return plots.layer_curves(pd.concat(frames, ignore_index=True), y, title or f"{table}: {y}")


SUMMARY_TABLES = ("params_blocks", "topk_overlap_layers", "topk_entropy_layers", "skipped_images")


def _save(result: Analysis, out_dir: Path, title: str) -> None:
    """Every table as CSV, and one HTML page with the figures (titled inside) and the per-layer summaries."""
    for name, table in result.tables.items():
        write_csv(out_dir / f"{name}.csv", table)
    summaries = [(name, result.tables[name]) for name in SUMMARY_TABLES if name in result.tables]
    if "cka" in result.tables:
        summaries.append(("cka", result.tables["cka"][["comparison", "layer", "cka", "cka_debiased", "n_images"]]))
    sections = [("", figure) for figure in result.figures.values()]
    sections += [(f"Table: {name}", table) for name, table in summaries]
    page = out_dir / report_name(result.comparison.what)
    result.report = plots.write_html_report(page, f"What changed: {title}", sections)


def report_name(what: tuple[str, ...]) -> str:
    """report.html for every analysis, else named by those run (report-topk.html), so that one never overwrites
    another (the CSVs are named by analysis already)."""
    every = Comparison.__dataclass_fields__["what"].default
    return "report.html" if set(what) == set(every) else f"report-{'-'.join(sorted(set(what)))}.html"
