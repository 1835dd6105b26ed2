"""What fine-tuning changed: parameter, feature-space and maximal-activation analyses of two networks.

    from artlab.analysis import analyze
    result = analyze("runs/peopleart-style-fine_tune-mobilenet_v2-128px")   # vs its ImageNet weights
    result.tables["cka"], result.report

Tables are tidy DataFrames written as CSV to `<run>/analysis/` beside an HTML report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from torch import nn

from artlab import models
from artlab.analysis import figures
from artlab.analysis.cka import linear_cka
from artlab.analysis.params import block_changes, filter_changes, layer_changes, most_changed
from artlab.analysis.topk import TopK, class_entropy, collection_entropy, dead_kernels, overlap, per_layer, top_images
from artlab.runs import Run, atomic_path, load_tensors

ANALYSES = ("params", "cka", "topk")


@dataclass
class Analysis:
    """The tables (by name), figures (by heading) and the report path of one comparison.

    After a 'topk' analysis, `tops` holds each network's top-k lists and `labels` the images'
    classes, for browsing (artlab.widgets.topk_browser).
    """

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, object] = field(default_factory=dict)
    report: Path | None = None
    tops: dict[str, TopK] = field(default_factory=dict)
    labels: np.ndarray | None = None


def _network(source: str, arch_name: str) -> tuple[nn.Module, str]:
    """'imagenet' (the architecture's pretrained weights), 'random' (an untrained init) or a run folder."""
    from artlab.train import load_network

    if source == "imagenet":
        return models.build(arch_name, pretrained=True), "ImageNet"
    if source == "random":
        torch.manual_seed(0)
        return models.build(arch_name, pretrained=False), "random init"
    return load_network(source), Run(source).name


def _images(run: Run, data: str | None, task: str, max_images: int | None, seed: int) -> tuple[list[str], np.ndarray]:
    """The images to analyse (the run's own collection by default) and their labels for `task`."""
    from artlab.data.collection import load
    from artlab.train import run_collection

    collection = run_collection(run) if data is None else load(data).labelled(task).check_images()
    if task not in collection.multi_label:
        raise KeyError(f"{data or run.path} has no task {task!r}; its tasks are {collection.tasks}")
    table = collection.table
    if max_images is not None and len(table) > max_images:
        table = table.sample(n=max_images, random_state=seed).sort_index()
    labels = table[task].map(lambda v: v[0] if isinstance(v, tuple) and v else v).fillna("?").to_numpy()
    return table["path"].tolist(), labels


def analyze(finetuned: str | Path, pretrained: str = "imagenet", data: str | None = None,
            what: tuple[str, ...] = ANALYSES, k: int = 100, max_images: int | None = None,
            image_size: int | None = None, layers: list[str] | None = None, batch_size: int = 32,
            device: str | torch.device = "cpu", out_dir: str | Path | None = None, seed: int = 0,
            cka_pool: str = "avg", cka_grid: int = 2) -> Analysis:
    """Compare a fine-tuned run's network with `pretrained` ('imagenet', 'random' or another run).

    what: any of 'params' (relative change, Frobenius norm, correlation per filter and layer),
    'cka' (linear CKA per layer, layer x layer, and a random-network baseline) and 'topk' (top-k
    overlap, class concentration of both networks, dead kernels). `cka_pool` turns each
    activation map into features for CKA: 'avg' (global average), 'grid' (cka_grid x cka_grid
    cells) or 'flatten'.
    """
    unknown = set(what) - set(ANALYSES)
    if unknown:
        raise ValueError(f"unknown analyses {sorted(unknown)}; choose from {ANALYSES}")
    run = Run(finetuned)
    _, meta = load_tensors(run.file("model.safetensors"))
    arch_name, task = meta.get("arch", ""), meta.get("task", "")
    tuned, tuned_name = _network(str(finetuned), arch_name)
    base, base_name = _network(pretrained, arch_name)
    layers = list(layers or models.arch(arch_name).layers)
    image_size = image_size or int(meta.get("image_size", 128))
    device = torch.device(device)
    result = Analysis()
    if "params" in what:
        _params(result, base, tuned, arch_name)
    if {"cka", "topk"} & set(what):
        paths, labels = _images(run, data, task, max_images, seed)
        options = {"image_size": image_size, "batch_size": batch_size, "device": device}
        if "cka" in what:
            _cka(result, base, tuned, arch_name, paths, layers, base_name, tuned_name,
                 options | {"pool": cka_pool, "grid": cka_grid})
        if "topk" in what:
            _topk(result, base, tuned, paths, labels, layers, k, base_name, tuned_name, task, options)
    out_dir = Path(out_dir) if out_dir is not None else run.path / "analysis"
    _save(result, out_dir, f"{tuned_name} vs {base_name}")
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
    return figures.layer_curves(pd.concat(frames, ignore_index=True), y, title or f"{table}: {y}")


def _params(result: Analysis, base: nn.Module, tuned: nn.Module, arch_name: str) -> None:
    analysed = models.arch(arch_name).layers
    filters = filter_changes(base, tuned, analysed)
    convs = layer_changes(base, tuned, analysed, filters)
    blocks = block_changes(convs)
    result.tables |= {"params_filters": filters, "params_layers": convs, "params_blocks": blocks,
                      "params_most_changed": most_changed(filters, 20)}
    result.figures["Relative change of the weights per layer"] = figures.layer_curves(
        blocks.assign(model="fine-tuned vs pretrained"), "relative_change",
        "mean |W_ft - W_pre| / mean |W_pre| per analysed layer", y_label="relative change")


def _cka(result: Analysis, base: nn.Module, tuned: nn.Module, arch_name: str, paths: list[str], layers: list[str],
         base_name: str, tuned_name: str, options: dict) -> None:
    matrix = linear_cka(base, tuned, paths, layers, cross=True, **options)
    diagonal = matrix[matrix["layer_a"] == matrix["layer_b"]].assign(comparison=f"{base_name} vs {tuned_name}")
    random_net, _ = _network("random", arch_name)
    baseline = linear_cka(base, random_net, paths, layers, **options).assign(comparison=f"{base_name} vs random init")
    per_layer_cka = pd.concat([diagonal, baseline], ignore_index=True).rename(columns={"layer_a": "layer"})
    result.tables |= {"cka": per_layer_cka.drop(columns=["layer_b", "depth_b"]), "cka_matrix": matrix}
    result.figures["Linear CKA per layer (same layer in both networks)"] = figures.layer_curves(
        per_layer_cka, "cka", "linear CKA with the pretrained network, per layer", color="comparison",
        y_label="linear CKA")
    result.figures["Linear CKA, layer x layer"] = figures.cka_heatmap(matrix)


def _topk(result: Analysis, base: nn.Module, tuned: nn.Module, paths: list[str], labels: np.ndarray,
          layers: list[str], k: int, base_name: str, tuned_name: str, task: str, options: dict) -> None:
    tops = {base_name: top_images(base, paths, layers, k=k, **options),
            tuned_name: top_images(tuned, paths, layers, k=k, **options)}
    shared = overlap(tops[base_name], tops[tuned_name])
    entropy = pd.concat([class_entropy(top, labels).assign(model=name) for name, top in tops.items()],
                        ignore_index=True)
    dead = pd.concat([dead_kernels(top).assign(model=name) for name, top in tops.items()], ignore_index=True)
    entropy_layers = pd.concat([per_layer(entropy[entropy["model"] == name], "entropy_bits").assign(model=name)
                                for name in tops], ignore_index=True)
    k_used = tops[base_name].k
    result.tops, result.labels = tops, labels
    result.tables |= {"topk_overlap": shared, "topk_overlap_layers": per_layer(shared, "overlap_pct"),
                      "topk_entropy": entropy, "topk_entropy_layers": entropy_layers,
                      "dead_kernels": dead.assign(dead_channels=dead["dead_channels"].map(json.dumps))}
    result.figures[f"Top-{k_used} overlap between the two networks"] = figures.layer_curves(
        per_layer(shared, "overlap_pct").assign(model=f"{base_name} vs {tuned_name}"), "mean",
        f"mean overlap of the top-{k_used} images per channel", y_label="overlap (%)")
    result.figures[f"Class concentration of the top-{k_used} images ({task})"] = figures.layer_curves(
        entropy_layers, "mean", f"mean entropy (bits) of the {task} classes among a channel's top-{k_used}",
        reference=collection_entropy(labels), reference_label="whole collection", y_label="entropy (bits)")
    deep = entropy[(entropy["model"] == tuned_name) & (entropy["layer"] == layers[-1])]
    best = deep.sort_values(["entropy_bits", "channel"]).iloc[0]
    top = tops[tuned_name]
    shown = top.indices[best["layer"]][int(best["channel"])].tolist()[:15]
    result.figures[f"Most class-concentrated channel of {best['layer']}"] = figures.gallery(
        [paths[i] for i in shown], [str(labels[i]) for i in shown],
        f"{tuned_name}: {best['layer']} channel {int(best['channel'])} (entropy {best['entropy_bits']:.2f} bits)")


def _save(result: Analysis, out_dir: Path, title: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, table in result.tables.items():
        with atomic_path(out_dir / f"{name}.csv") as tmp:
            table.to_csv(tmp, index=False)
    summaries = [(name, result.tables[name]) for name in ("params_blocks", "topk_overlap_layers", "topk_entropy_layers")
                 if name in result.tables]
    if "cka" in result.tables:
        summaries.append(("cka", result.tables["cka"][["comparison", "layer", "cka", "cka_debiased", "n_images"]]))
    sections = list(result.figures.items()) + [(f"Table: {name}", table) for name, table in summaries]
    result.report = figures.write_html_report(out_dir / "report.html", f"What changed: {title}", sections)
