"""Every analysis from one forward pass per network: CKA sums and both networks' top-k lists fed together.

Each batch of images is decoded once (or read from the decoded-image cache) and run through the
ImageNet network, the fine-tuned one and, for the CKA baseline, a random one; each network's
activation maps are pooled both ways at once (CKA features and the channel scores of top-k).
Memory stays flat in the number of images: the CKA sums are feature x feature, the top-k lists
k per channel.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import nn

from artlab import models
from artlab.analysis.cka import MIN_IMAGES, CKAFeed
from artlab.analysis.options import CkaOptions, PassOptions
from artlab.analysis.topk import TopK, TopKStream, check_k
from artlab.cache import cache_dir, digest, json_tensor, load_first_checked, save_checked, tensor_json
from artlab.data.standins import fingerprints
from artlab.features import Feed, Outputs, forward_pass
from artlab.io import load_tensors, save_tensors

#: Bumped when what a pass measures changes, so older cached passes are not served.
PASS_VERSION = 1


@dataclass
class OnePass:
    """What one pass measured: CKA of base x tuned (every layer pair) and base vs random (same layer), top-k lists."""

    cka: pd.DataFrame | None = None
    cka_random: pd.DataFrame | None = None
    tops: dict[str, TopK] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


def one_pass(base: nn.Module, tuned: nn.Module, paths: list[str], layers: list[str], *,
             cka: bool | CkaOptions = True, k: int | None = 100, random: nn.Module | None = None,
             options: PassOptions = PassOptions()) -> OnePass:
    """CKA (base vs tuned, every layer pair; base vs `random`, same layer) and the top-k lists of base and tuned.

    `cka`: True (the default CkaOptions), CkaOptions (how maps become CKA features) or False; `cka=False`
    or `k=None` leave that part out (and `random` is only run for CKA). `options`: how the pass runs.
    The CKA tables have linear_cka's columns; the top-k lists are keyed "base" and "tuned".
    """
    if base is tuned or (random is not None and random in (base, tuned)):
        raise ValueError("one_pass compares different networks: base, tuned (and random) are the same module; "
                         "pass a copy (copy.deepcopy) to compare a network with itself")
    measure = CkaOptions() if cka is True else (cka or None)  # how CKA pools, or None: no CKA
    if measure and len(paths) < MIN_IMAGES:
        raise ValueError(f"CKA needs at least {MIN_IMAGES} images, got {len(paths)}")
    if k is not None:
        check_k(k)
        k = min(k, len(paths))
    device = torch.device(options.device)
    pools = ({"cka": measure.pooling()} if measure else {}) | ({"topk": "relu_avg"} if k is not None else {})
    if not pools:
        return OnePass()
    feeds = [Feed("base", base, layers, models.pools(**pools)), Feed("tuned", tuned, layers, models.pools(**pools))]
    consumers = []
    n = len(layers)
    if measure:
        ys = [("tuned", layer) for layer in layers]
        pairs = list(itertools.product(range(n), range(n)))
        if random is not None:
            feeds.append(Feed("random", random, layers, models.pools(cka=pools["cka"])))
            ys += [("random", layer) for layer in layers]
            pairs += [(i, n + i) for i in range(n)]
        sums = CKAFeed([("base", layer) for layer in layers], ys, pairs, device, measure.pool, key="cka")
        consumers.append(sums)
    tops = {name: TopKStream(layers, k, name, key="topk") for name in ("base", "tuned")} if k is not None else {}
    consumers += list(tops.values())

    def feed_all(rows: torch.Tensor, outputs: Outputs) -> None:
        for consumer in consumers:
            consumer(rows, outputs)

    dataset = forward_pass(feeds, paths, options.image_size, device, feed_all, options.batch_size,
                           "analyses (one pass)", options.num_workers, options.compile)
    result = OnePass(tops={name: stream.result(paths) for name, stream in tops.items()},
                     failures=dict(dataset.failures))
    if measure:
        table = sums.table(dataset)
        result.cka = table[table["depth_b"] < n].reset_index(drop=True)
        if random is not None:
            baseline = table[table["depth_b"] >= n]
            result.cka_random = baseline.assign(depth_b=baseline["depth_b"] - n).reset_index(drop=True)
    return result


def cached_pass(spec: dict, paths: list[str], measure: Callable[[], OnePass]) -> OnePass:
    """The pass described by `spec` (the networks' weights ids, layers, CKA options, k, image size) over `paths`,
    from the cache (`<cache>/analyses/`, keyed by `spec` and the images' contents, checked on read) or measured
    and stored. A pass that could not read every image is not stored (the image may be readable later)."""
    entries = [cache_dir() / "analyses" / f"{digest(spec | {'images': images, 'version': PASS_VERSION})}.safetensors"
               for images in fingerprints(paths)]  # stand-ins: their originals' pass first (`artlab.data.standins`)
    stored = load_first_checked(entries, "analyses", load_tensors)
    if stored is not None:
        return _from_tensors(stored, paths)
    result = measure()
    if not result.failures:
        save_checked(entries[-1], _to_tensors(result), {}, "analyses", save_tensors)
    return result


def _to_tensors(result: OnePass) -> dict[str, torch.Tensor]:
    """A pass as tensors: every top-k list, and the CKA tables and list layouts as JSON bytes (so the entry's
    checksum covers them too)."""
    tensors, layout = {}, {"tops": {}, "cka": None, "cka_random": None}
    for name, top in result.tops.items():
        layout["tops"][name] = {"k": top.k, "layers": top.layers}
        for i, layer in enumerate(top.layers):
            tensors[f"{name}.{i}.scores"], tensors[f"{name}.{i}.indices"] = top.scores[layer], top.indices[layer]
    for table in ("cka", "cka_random"):
        frame = getattr(result, table)
        layout[table] = frame.to_json(orient="split") if frame is not None else None
    tensors["layout"] = json_tensor(layout)
    return tensors


def _from_tensors(tensors: dict[str, torch.Tensor], paths: list[str]) -> OnePass:
    layout = tensor_json(tensors["layout"])
    tops = {name: TopK(list(paths), top["k"], {layer: tensors[f"{name}.{i}.scores"] for i, layer in
                                               enumerate(top["layers"])},
                       {layer: tensors[f"{name}.{i}.indices"] for i, layer in enumerate(top["layers"])})
            for name, top in layout["tops"].items()}
    tables = {t: pd.read_json(io.StringIO(layout[t]), orient="split") if layout[t] else None
              for t in ("cka", "cka_random")}
    return OnePass(tables["cka"], tables["cka_random"], tops)
