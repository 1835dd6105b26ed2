"""Every analysis from one forward pass per network: CKA sums and both networks' top-k lists fed together.

Each batch of images is decoded once (or read from the decoded-image cache) and run through the
ImageNet network, the fine-tuned one and, for the CKA baseline, a random one; each network's
activation maps are pooled both ways at once (CKA features and the channel scores of top-k).
Memory stays flat in the number of images: the CKA sums are feature x feature, the top-k lists
k per channel.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import nn

from artlab import models
from artlab.analysis.cka import MIN_IMAGES, CKAFeed
from artlab.analysis.topk import TopK, TopKStream, check_k
from artlab.features import Feed, Outputs, forward_pass


@dataclass
class OnePass:
    """What one pass measured: CKA of base x tuned (every layer pair) and base vs random (same layer), top-k lists."""

    cka: pd.DataFrame | None = None
    cka_random: pd.DataFrame | None = None
    tops: dict[str, TopK] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


def one_pass(base: nn.Module, tuned: nn.Module, paths: list[str], layers: list[str], *, cka: bool = True,
             k: int | None = 100, random: nn.Module | None = None, cka_pool: str = "avg", cka_grid: int = 2,
             image_size: int = 128, batch_size: int = 32, device: torch.device | str = "cpu",
             num_workers: int | None = None, compile: bool = False) -> OnePass:
    """CKA (base vs tuned, every layer pair; base vs `random`, same layer) and the top-k lists of base and tuned.

    `cka=False` or `k=None` leave that part out (and `random` is only run for CKA). The CKA tables
    have linear_cka's columns; the top-k lists are keyed "base" and "tuned".
    """
    if base is tuned or (random is not None and random in (base, tuned)):
        raise ValueError("one_pass compares different networks: base, tuned (and random) are the same module; "
                         "pass a copy (copy.deepcopy) to compare a network with itself")
    if cka and len(paths) < MIN_IMAGES:
        raise ValueError(f"CKA needs at least {MIN_IMAGES} images, got {len(paths)}")
    if k is not None:
        check_k(k)
        k = min(k, len(paths))
    device = torch.device(device)
    pools = ({"cka": models.pooling(cka_pool, **({"grid": cka_grid} if cka_pool == "grid" else {}))} if cka else {}) \
        | ({"topk": "relu_avg"} if k is not None else {})
    if not pools:
        return OnePass()
    feeds = [Feed("base", base, layers, models.several(**pools)), Feed("tuned", tuned, layers, models.several(**pools))]
    consumers = []
    n = len(layers)
    if cka:
        ys = [("tuned", layer) for layer in layers]
        pairs = list(itertools.product(range(n), range(n)))
        if random is not None:
            feeds.append(Feed("random", random, layers, models.several(cka=pools["cka"])))
            ys += [("random", layer) for layer in layers]
            pairs += [(i, n + i) for i in range(n)]
        sums = CKAFeed([("base", layer) for layer in layers], ys, pairs, device, cka_pool, key="cka")
        consumers.append(sums)
    tops = {name: TopKStream(layers, k, name, key="topk") for name in ("base", "tuned")} if k is not None else {}
    consumers += list(tops.values())

    def feed_all(rows: torch.Tensor, outputs: Outputs) -> None:
        for consumer in consumers:
            consumer(rows, outputs)

    dataset = forward_pass(feeds, paths, image_size, device, feed_all, batch_size, "analyses (one pass)",
                           num_workers, compile)
    result = OnePass(tops={name: stream.result(paths) for name, stream in tops.items()},
                     failures=dict(dataset.failures))
    if cka:
        table = sums.table(dataset)
        result.cka = table[table["depth_b"] < n].reset_index(drop=True)
        if random is not None:
            baseline = table[table["depth_b"] >= n]
            result.cka_random = baseline.assign(depth_b=baseline["depth_b"] - n).reset_index(drop=True)
    return result
