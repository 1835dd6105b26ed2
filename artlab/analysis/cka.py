"""Feature space: linear CKA between two networks' activations, streamed over mini-batches.

Linear CKA (Kornblith et al. 2019) compares representations X (n x p) and Y (n x q) of the same
images. Both estimators are computed from feature-space sums (X^T Y, column sums, row norms), so
memory depends on the feature sizes, never on the number of images:
    biased:    HSIC = ||Xc^T Yc||_F^2 on centred features
    debiased:  the unbiased HSIC estimator of Song et al. (2012), as in Kornblith et al.'s code
and CKA = HSIC(X, Y) / sqrt(HSIC(X, X) HSIC(Y, Y)). All sums are kept in float64.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
import torch
from torch import nn

from artlab.analysis.options import CkaOptions, PassOptions
from artlab.features import Feed, forward_pass

MIN_IMAGES = 4  # the debiased estimator divides by n - 3
MAX_FLATTEN_FEATURES = 16_384  # p x p float64 sums beyond this do not fit in memory: use a grid


class _Stats:
    """Running sums of one representation: n, column sums, squared row norms and their squares."""

    def __init__(self, dim: int, device: torch.device):
        self.n = 0
        self.sum = torch.zeros(dim, dtype=torch.float64, device=device)
        self.sq_rows = 0.0  # sum_i ||x_i||^2

    def update(self, x: torch.Tensor) -> None:
        self.n += len(x)
        self.sum += x.sum(0)
        self.sq_rows += float((x * x).sum())

    @property
    def mean(self) -> torch.Tensor:
        return self.sum / self.n


class _Pair:
    """Running cross sums of two representations X, Y of the same images."""

    def __init__(self, p: int, q: int, device: torch.device):
        self.xty = torch.zeros(p, q, dtype=torch.float64, device=device)  # X^T Y
        self.x_by_ny = torch.zeros(p, dtype=torch.float64, device=device)  # sum_i ||y_i||^2 x_i
        self.y_by_nx = torch.zeros(q, dtype=torch.float64, device=device)  # sum_i ||x_i||^2 y_i
        self.nx_ny = 0.0  # sum_i ||x_i||^2 ||y_i||^2

    def update(self, x: torch.Tensor, y: torch.Tensor, xty: torch.Tensor | None = None,
               nx: torch.Tensor | None = None, ny: torch.Tensor | None = None) -> None:
        """Add a batch; `xty` (X^T Y) and the squared row norms may be passed when already computed."""
        nx = (x * x).sum(1) if nx is None else nx
        ny = (y * y).sum(1) if ny is None else ny
        self.xty += x.T @ y if xty is None else xty
        self.x_by_ny += ny @ x
        self.y_by_nx += nx @ y
        self.nx_ny += float(nx @ ny)


def _hsic(pair: _Pair, sx: _Stats, sy: _Stats) -> tuple[float, float]:
    """HSIC of centred features from raw sums (the centring done algebraically): (biased, debiased), sharing the
    p x q product that dominates the cost."""
    n, mx, my = sx.n, sx.mean, sy.mean
    cross = pair.xty - n * torch.outer(mx, my)  # Xc^T Yc
    xty = float((cross * cross).sum())
    mx2, my2 = float(mx @ mx), float(my @ my)
    x_dot_mx_times_ny = float(pair.x_by_ny @ mx)  # sum_i (x_i . mx) ||y_i||^2
    y_dot_my_times_nx = float(pair.y_by_nx @ my)
    xm_ym = float(mx @ pair.xty @ my)  # sum_i (x_i . mx)(y_i . my)
    sum_x_dot_mx, sum_y_dot_my = n * mx2, n * my2
    # sum_i ||xc_i||^2 ||yc_i||^2, expanding ||x_i - mx||^2 = ||x_i||^2 - 2 x_i.mx + ||mx||^2
    rows = (pair.nx_ny - 2 * y_dot_my_times_nx + my2 * sx.sq_rows
            - 2 * x_dot_mx_times_ny + 4 * xm_ym - 2 * my2 * sum_x_dot_mx
            + mx2 * sy.sq_rows - 2 * mx2 * sum_y_dot_my + n * mx2 * my2)
    norm_x, norm_y = sx.sq_rows - n * mx2, sy.sq_rows - n * my2  # ||Xc||_F^2, ||Yc||_F^2
    return xty, xty - n / (n - 2) * rows + norm_x * norm_y / ((n - 1) * (n - 2))


def _is_constant(stats: _Stats, tolerance: float = 1e-10) -> bool:
    """Whether a representation does not vary across the images (centred norm ~ 0 relative to its size).

    Constant features of any value (0, 1, 1000) centre to zero exactly in theory; in floating point
    they leave rounding noise that would give an arbitrary CKA, so they are detected here instead.
    """
    centred = stats.sq_rows - stats.n * float(stats.mean @ stats.mean)  # ||X - mean||_F^2
    return centred <= tolerance * max(stats.sq_rows, 1e-300)


def _cka(cross: float, self_x: float, self_y: float) -> float:
    denominator = np.sqrt(max(self_x, 0.0) * max(self_y, 0.0))
    return float(cross / denominator) if denominator > 0 else float("nan")


class StreamingCKA:
    """Linear CKA between every pair (X_a, Y_b) of two lists of representations, fed batch by batch."""

    def __init__(self, dims_x: list[int], dims_y: list[int], pairs: list[tuple[int, int]], device: torch.device):
        self.pairs = pairs
        self.stats_x = [_Stats(d, device) for d in dims_x]
        self.stats_y = [_Stats(d, device) for d in dims_y]
        self.self_x = [_Pair(d, d, device) for d in dims_x]
        self.self_y = [_Pair(d, d, device) for d in dims_y]
        self.cross = {(a, b): _Pair(dims_x[a], dims_y[b], device) for a, b in pairs}
        self._partners = {a: tuple(b for a2, b in pairs if a2 == a) for a in dict.fromkeys(a for a, _ in pairs)}
        self._batch_ys: list[torch.Tensor] | None = None
        self._joins: dict[tuple[int, ...], torch.Tensor] = {}

    def update(self, xs: list[torch.Tensor], ys: list[torch.Tensor]) -> None:
        """Add one batch: the same images' representations, one tensor (n x dim) per layer of each side."""
        xs = [x.double() for x in xs]
        ys = [y.double() for y in ys]
        norms_x = [(x * x).sum(1) for x in xs]
        norms_y = [(y * y).sum(1) for y in ys]
        for stats, pair, x, nx in zip(self.stats_x, self.self_x, xs, norms_x):
            stats.update(x)
            pair.update(x, x, x.T @ x, nx, nx)
        for stats, pair, y, ny in zip(self.stats_y, self.self_y, ys, norms_y):
            stats.update(y)
            pair.update(y, y, y.T @ y, ny, ny)
        for a, partners in self._partners.items():  # one matrix product per X layer, against all its partners
            products = xs[a].T @ self._joined(ys, partners)
            start = 0
            for b in partners:
                width = ys[b].shape[1]
                self.cross[(a, b)].update(xs[a], ys[b], products[:, start:start + width], norms_x[a], norms_y[b])
                start += width

    def _joined(self, ys: list[torch.Tensor], partners: tuple[int, ...]) -> torch.Tensor:
        """The partners' features side by side (computed once per batch for each distinct set of partners)."""
        if self._batch_ys is not ys:
            self._batch_ys, self._joins = ys, {}
        if partners not in self._joins:
            self._joins[partners] = ys[partners[0]] if len(partners) == 1 else torch.cat([ys[b] for b in partners], 1)
        return self._joins[partners]

    def result(self) -> list[dict]:
        """For every pair: `cka` (biased) and `cka_debiased`."""
        n = self.stats_x[0].n if self.stats_x else 0
        if n < MIN_IMAGES:
            raise ValueError(f"CKA needs at least {MIN_IMAGES} images, got {n}")
        out, constant = [], set()
        # each layer's HSIC with itself once, not once per pair it is in (a matrix of L x L pairs needs 2 L)
        self_x = {a: _hsic(self.self_x[a], self.stats_x[a], self.stats_x[a]) for a in {a for a, _ in self.cross}}
        self_y = {b: _hsic(self.self_y[b], self.stats_y[b], self.stats_y[b]) for b in {b for _, b in self.cross}}
        for (a, b), pair in self.cross.items():
            sx, sy = self.stats_x[a], self.stats_y[b]
            row = {"a": a, "b": b, "n_images": n}
            flat = [name for name, stats in ((f"x[{a}]", sx), (f"y[{b}]", sy)) if _is_constant(stats)]
            hsic = None if flat else _hsic(pair, sx, sy)
            for i, key in enumerate(("cka", "cka_debiased")):  # biased, debiased
                row[key] = float("nan") if flat else _cka(hsic[i], self_x[a][i], self_y[b][i])
            constant.update(flat)
            out.append(row)
        if constant:
            warnings.warn(f"CKA is undefined for constant features ({', '.join(sorted(constant))} do not vary "
                          f"across the images): reported as NaN", RuntimeWarning, stacklevel=2)
        return out


def cka_of_features(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, debiased: bool = False,
                    batch_size: int = 64) -> float:
    """Linear CKA of two in-memory feature matrices (n x p, n x q), computed by the streaming sums."""
    x, y = torch.as_tensor(np.asarray(x)), torch.as_tensor(np.asarray(y))
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} rows and y {len(y)}: CKA compares the same images")
    cka = StreamingCKA([x.shape[1]], [y.shape[1]], [(0, 0)], torch.device("cpu"))
    for start in range(0, len(x), batch_size):
        cka.update([x[start:start + batch_size]], [y[start:start + batch_size]])
    return cka.result()[0]["cka_debiased" if debiased else "cka"]


def linear_cka(model_a: nn.Module, model_b: nn.Module, paths: list[str], layers: list[str],
               layers_b: list[str] | None = None, cross: bool = False, cka: CkaOptions = CkaOptions(),
               options: PassOptions = PassOptions()) -> pd.DataFrame:
    """Linear CKA between two networks at each analysed layer (or every layer pair with `cross`).

    Both networks run on each batch of images in one pass (one network alone when they are the
    same object). `cka` says how activation maps become features, `options` how the pass runs.
    Returns a tidy frame: layer_a, layer_b, depth_a, depth_b, cka, cka_debiased, n_images.
    """
    if len(paths) < MIN_IMAGES:
        raise ValueError(f"CKA needs at least {MIN_IMAGES} images, got {len(paths)}")
    layers_b = list(layers_b or layers)
    if not cross and len(layers_b) != len(layers):
        raise ValueError("without cross=True, both models need the same number of layers")
    pairs = list(itertools.product(range(len(layers)), range(len(layers_b)))) if cross else \
        [(i, i) for i in range(len(layers))]
    device = torch.device(options.device)
    same = model_a is model_b  # one forward pass serves both sides
    feeds = [Feed("a", model_a, list(dict.fromkeys(layers + layers_b)) if same else layers, cka.pool,
                  cka.pool_options)]
    feeds += [] if same else [Feed("b", model_b, layers_b, cka.pool, cka.pool_options)]
    sums = CKAFeed([("a", name) for name in layers], [("a" if same else "b", name) for name in layers_b], pairs,
                   device, cka.pool)
    dataset = forward_pass(feeds, paths, options.image_size, device, sums, options.batch_size, "CKA",
                           options.num_workers, options.compile)
    return sums.table(dataset)


class CKAFeed:
    """Streaming CKA sums as a `forward_pass` consumer: X and Y are lists of (feed, layer) outputs.

    `key` picks one pooling when the feeds pool each map several ways (`models.pools`).
    """

    def __init__(self, xs: list[tuple[str, str]], ys: list[tuple[str, str]], pairs: list[tuple[int, int]],
                 device: torch.device, pool: str, key: str | None = None):
        self.xs, self.ys, self.pairs, self.device, self.pool, self.key = xs, ys, pairs, device, pool, key
        self.cka: StreamingCKA | None = None

    def _gather(self, sources: list[tuple[str, str]], outputs: dict) -> list[torch.Tensor]:
        found = [outputs[feed][layer] for feed, layer in sources]
        return found if self.key is None else [output[self.key] for output in found]

    def __call__(self, rows: torch.Tensor, outputs: dict) -> None:
        xs, ys = self._gather(self.xs, outputs), self._gather(self.ys, outputs)
        if self.cka is None:
            _check_sizes([layer for _, layer in self.xs + self.ys], xs + ys, self.pool)
            self.cka = StreamingCKA([t.shape[1] for t in xs], [t.shape[1] for t in ys], self.pairs, self.device)
        self.cka.update(xs, ys)

    def table(self, dataset=None) -> pd.DataFrame:
        """layer_a, layer_b, depth_a, depth_b (positions in xs and ys), cka, cka_debiased, n_images per pair."""
        if self.cka is None:
            failures = dict(list(dataset.failures.items())[:3]) if dataset is not None else {}
            raise ValueError(f"CKA: none of the images could be read: {failures}")
        return pd.DataFrame([{"layer_a": self.xs[r["a"]][1], "layer_b": self.ys[r["b"]][1], "depth_a": r["a"],
                              "depth_b": r["b"], "cka": r["cka"], "cka_debiased": r["cka_debiased"],
                              "n_images": r["n_images"]} for r in self.cka.result()])


def _check_sizes(names: list[str], tensors: list[torch.Tensor], pool: str) -> None:
    for name, tensor in zip(names, tensors):
        if tensor.shape[1] > MAX_FLATTEN_FEATURES:
            raise ValueError(f"layer {name} gives {tensor.shape[1]} features with pool={pool!r}; CKA keeps "
                             f"feature x feature sums, so use pool='grid' (or 'avg') or a smaller image size")
