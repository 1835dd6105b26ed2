"""Parameter space: how much each convolution filter moved between two networks of one architecture.

For every kernel (one output filter of a Conv2d, shape in_channels/groups x kh x kw):
    relative_change = mean|W_ft - W_pre| / mean|W_pre|
    frobenius       = ||W_ft - W_pre||_F
    pearson         = correlation between the flattened kernels
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn


def _block_of(module_name: str, layers: tuple[str, ...]) -> str | None:
    """The analysed layer (block) a module belongs to: the longest analysed name that prefixes it."""
    matches = [layer for layer in layers if module_name == layer or module_name.startswith(layer + ".")]
    return max(matches, key=len) if matches else None


def filter_changes(pretrained: nn.Module, finetuned: nn.Module, layers: tuple[str, ...] = ()) -> pd.DataFrame:
    """One row per convolution filter: layer, block, filter, relative_change, frobenius, pearson.

    `layers` (an architecture's analysed layers) fills the `block` column, so filters can be
    summarised per analysed layer as well as per convolution.
    """
    tuned = dict(finetuned.named_modules())
    frames = []
    for name, module in pretrained.named_modules():
        if not isinstance(module, nn.Conv2d):
            continue
        if name not in tuned or tuned[name].weight.shape != module.weight.shape:
            raise ValueError(f"the two networks differ at {name!r}: compare models of one architecture")
        before = module.weight.detach().double().flatten(1)
        after = tuned[name].weight.detach().double().flatten(1)
        diff = after - before
        relative = diff.abs().mean(1) / before.abs().mean(1).clamp_min(1e-12)
        frames.append(pd.DataFrame({
            "layer": name, "block": _block_of(name, layers), "filter": range(len(before)),
            "relative_change": relative.numpy(), "frobenius": diff.norm(dim=1).numpy(),
            "pearson": _rowwise_pearson(before, after).numpy(),
            "kernel_size": "x".join(map(str, module.kernel_size)), "weights_per_filter": before.shape[1]}))
    if not frames:
        raise ValueError("no convolution layers found")
    return pd.concat(frames, ignore_index=True)


def _rowwise_pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each row of `a` with the same row of `b` (NaN for a constant row)."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    denominator = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(denominator > 0, (a * b).sum(1) / denominator.clamp_min(1e-300), torch.nan)


def layer_changes(pretrained: nn.Module, finetuned: nn.Module, layers: tuple[str, ...] = (),
                  filters: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per convolution: the layer-wide relative change and Frobenius norm, the mean filter correlation.

    The layer-wide relative change is mean|dW| / mean|W| over all the layer's weights (not the mean
    of per-filter ratios, which small filters would dominate). Pass `filters` (from
    filter_changes) when you already have them, to avoid computing them again.
    """
    tuned = dict(finetuned.named_modules())
    rows = []
    for name, module in pretrained.named_modules():
        if isinstance(module, nn.Conv2d):
            before, after = module.weight.detach().double(), tuned[name].weight.detach().double()
            change, size = float((after - before).abs().sum()), float(before.abs().sum())
            rows.append({"layer": name, "block": _block_of(name, layers), "relative_change": change / size,
                         "frobenius": float((after - before).norm()), "weights": before.numel(),
                         "abs_change_sum": change, "abs_weight_sum": size})
    table = pd.DataFrame(rows)
    filters = filter_changes(pretrained, finetuned, layers) if filters is None else filters
    per_filter = filters.groupby("layer", sort=False)["pearson"].mean()
    table["mean_filter_pearson"] = table["layer"].map(per_filter)
    table.insert(0, "depth", range(len(table)))
    return table


def block_changes(layer_table: pd.DataFrame) -> pd.DataFrame:
    """Relative change per analysed layer (block): sum|dW| / sum|W| over all its convolutions."""
    table = layer_table.dropna(subset=["block"])
    grouped = table.groupby("block", sort=False)
    out = pd.DataFrame({"relative_change": grouped["abs_change_sum"].sum() / grouped["abs_weight_sum"].sum(),
                        "frobenius": grouped["frobenius"].apply(lambda f: float((f ** 2).sum() ** 0.5)),
                        "convolutions": grouped.size()}).reset_index().rename(columns={"block": "layer"})
    out.insert(0, "depth", range(len(out)))
    return out


def most_changed(filters: pd.DataFrame, n: int = 10, by: str = "relative_change") -> pd.DataFrame:
    """The `n` filters that moved most (to choose which ones to visualise)."""
    if by not in ("relative_change", "frobenius", "pearson"):
        raise ValueError(f"rank by relative_change, frobenius or pearson, not {by!r}")
    return filters.sort_values(by, ascending=by == "pearson", kind="stable").head(n).reset_index(drop=True)
