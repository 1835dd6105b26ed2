"""Maximal-activation images: the top-k images of every channel of every analysed layer, in one pass.

An image's score for a channel is the spatial mean of the channel's activation after ReLU. The
top-k lists are merged batch by batch (streaming), so memory holds k scores per channel, never
the activations of the whole collection. Ties are broken towards the lower image index, so the
lists are deterministic. From the lists: overlap between two networks, class concentration
(entropy of the classes among a channel's top-k) and dead kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from artlab.features import Feed, forward_pass

MAX_K = 1000


@dataclass
class TopK:
    """Per layer: `scores` (channels x k, descending) and `indices` (image indices into `paths`)."""

    paths: list[str]
    k: int
    scores: dict[str, torch.Tensor]
    indices: dict[str, torch.Tensor]

    @property
    def layers(self) -> list[str]:
        return list(self.scores)

    def images(self, layer: str, channel: int) -> list[str]:
        """The paths of a channel's top-k images, best first."""
        return [self.paths[i] for i in self.indices[layer][channel].tolist()]


def _merge(scores: torch.Tensor, indices: torch.Tensor, new_scores: torch.Tensor, new_indices: torch.Tensor,
           k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the k best of (running lists + a batch) per channel; equal scores go to the lower index."""
    all_scores = torch.cat([scores, new_scores], dim=1)
    all_indices = torch.cat([indices, new_indices], dim=1)
    in_order = indices.numel() == 0 or bool(new_indices.min() > indices.max())
    if not in_order or not bool((new_indices[:, 1:] > new_indices[:, :-1]).all()):
        # the running lists are ordered by (score, index); a batch of later images in order keeps that for free
        by_index = torch.argsort(all_indices, dim=1, stable=True)
        all_scores, all_indices = all_scores.gather(1, by_index), all_indices.gather(1, by_index)
    order = torch.argsort(all_scores, dim=1, descending=True, stable=True)[:, :k]
    return all_scores.gather(1, order), all_indices.gather(1, order)


class TopKStream:
    """Running top-k lists of every channel of several layers, merged batch by batch (a `forward_pass` consumer).

    Reads `outputs[feed][layer]` (or `[key]` of it when the feed pools several ways); the channel
    scores must be the spatial mean after ReLU ('relu_avg').
    """

    def __init__(self, layers: list[str], k: int, feed: str = "model", key: str | None = None):
        self.layers, self.k, self.feed, self.key = list(layers), k, feed, key
        self.scores: dict[str, torch.Tensor] = {}
        self.indices: dict[str, torch.Tensor] = {}

    def __call__(self, rows: torch.Tensor, outputs: dict) -> None:
        for layer in self.layers:
            output = outputs[self.feed][layer]
            batch = (output if self.key is None else output[self.key]).T.float()  # channels x batch
            ids = rows.to(batch.device).expand(len(batch), -1)
            if layer not in self.scores:
                self.scores[layer] = batch.new_empty((len(batch), 0))
                self.indices[layer] = ids.new_empty((len(batch), 0))
            self.scores[layer], self.indices[layer] = _merge(self.scores[layer], self.indices[layer], batch, ids,
                                                             self.k)

    def result(self, paths: list[str]) -> TopK:
        """The lists as a TopK on the CPU (plain tensors, whatever mode the pass ran in). Its `k` is what each
        list holds: fewer than asked when fewer images could be read (an overlap is a share of k)."""
        kept = min((i.shape[1] for i in self.indices.values()), default=self.k)
        return TopK(list(paths), min(self.k, kept), {n: s.cpu().clone() for n, s in self.scores.items()},
                    {n: i.cpu().clone() for n, i in self.indices.items()})


def check_k(k: int) -> None:
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k must be between 1 and {MAX_K}, not {k}")


def top_images(model: nn.Module, paths: list[str], layers: list[str], k: int = 100, image_size: int = 128,
               batch_size: int = 32, device: torch.device | str = "cpu", num_workers: int | None = None) -> TopK:
    """The top-k images of every channel of every layer, in a single pass over `paths`."""
    check_k(k)
    stream = TopKStream(layers, min(k, len(paths)))
    forward_pass([Feed("model", model, layers, "relu_avg")], paths, image_size, device, stream, batch_size,
                 "top-k images", num_workers)
    return stream.result(paths)


def overlap(a: TopK, b: TopK) -> pd.DataFrame:
    """Per layer and channel: the percentage of images shared by the two networks' top-k lists."""
    if a.paths != b.paths or a.k != b.k:
        raise ValueError("compare top-k lists computed on the same images with the same k")
    rows = []
    for depth, layer in enumerate(a.layers):
        for channel, (x, y) in enumerate(zip(a.indices[layer].tolist(), b.indices[layer].tolist())):
            rows.append({"layer": layer, "depth": depth, "channel": channel,
                         "overlap_pct": 100.0 * len(set(x) & set(y)) / a.k})
    return pd.DataFrame(rows)


def _entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return max(0.0, float(-(p * np.log2(p)).sum()))  # no "-0.0" for a single class


def class_entropy(top: TopK, labels: list[str] | np.ndarray) -> pd.DataFrame:
    """Per layer and channel: the entropy (bits) of the classes among the top-k images (lower = more concentrated).

    Also the most frequent class and its share. `labels` holds one class per image of `top.paths`.
    """
    labels = np.asarray(labels)
    if len(labels) != len(top.paths):
        raise ValueError(f"{len(labels)} labels for {len(top.paths)} images")
    classes, codes = np.unique(labels, return_inverse=True)
    rows = []
    for depth, layer in enumerate(top.layers):
        for channel, ids in enumerate(top.indices[layer].numpy()):
            counts = np.bincount(codes[ids], minlength=len(classes))
            rows.append({"layer": layer, "depth": depth, "channel": channel, "entropy_bits": _entropy_bits(counts),
                         "top_class": classes[counts.argmax()], "top_class_share": counts.max() / len(ids)})
    return pd.DataFrame(rows)


def collection_entropy(labels: list[str] | np.ndarray) -> float:
    """Entropy (bits) of the class distribution of the whole collection: the no-concentration reference."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    return _entropy_bits(counts)


def dead_kernels(top: TopK) -> pd.DataFrame:
    """Per layer: channels with no positive response on any image (their best score is 0)."""
    rows = []
    for depth, layer in enumerate(top.layers):
        dead = (top.scores[layer][:, 0] <= 0).nonzero().flatten().tolist()
        rows.append({"layer": layer, "depth": depth, "channels": len(top.scores[layer]), "dead": len(dead),
                     "dead_channels": dead})
    return pd.DataFrame(rows)


def per_layer(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """Mean, median and spread of a per-channel column, one row per layer (in depth order)."""
    grouped = table.groupby(["depth", "layer"], sort=True)[column]
    return grouped.agg(["mean", "median", "std", "min", "max"]).reset_index()
