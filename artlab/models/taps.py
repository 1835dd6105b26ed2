"""Taps: the pooled activations of named layers, in one forward pass that stops after the last one.

In the spirit of torchvision's `create_feature_extractor`, but with forward hooks, so it works on
any module tree and skips the rest of the network once every wanted layer has fired:

    with Taps(model, ["features.4", "features.18"], pool="avg") as taps:
        outputs = taps(x)          # {"features.4": (N, 32), "features.18": (N, 1280)}

Every way of turning an activation map into a vector lives in the one `POOLINGS` registry.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

Pool = Callable[[torch.Tensor], torch.Tensor]


def _avg(output: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C) spatial mean; already-flat outputs pass through (flattened)."""
    return output.mean(dim=(2, 3)) if output.dim() == 4 else output.flatten(1)


def _relu_avg(output: torch.Tensor) -> torch.Tensor:
    """The spatial mean of the positive part: a channel's response to an image (top-k images)."""
    return _avg(torch.relu(output))


def _grid(output: torch.Tensor, grid: int = 2) -> torch.Tensor:
    """(N, C, H, W) -> (N, C * grid * grid): means over grid x grid cells, keeping coarse layout."""
    return F.adaptive_avg_pool2d(output, grid).flatten(1) if output.dim() == 4 else output.flatten(1)


def _flatten(output: torch.Tensor) -> torch.Tensor:
    """Every position of every channel."""
    return output.flatten(1)


def _identity(output: torch.Tensor) -> torch.Tensor:
    """The activation map itself (attributions, visualisation)."""
    return output


#: name -> function(output, **options); `pooling(name, **options)` binds the options.
POOLINGS: dict[str, Callable[..., torch.Tensor]] = {
    "avg": _avg, "relu_avg": _relu_avg, "grid": _grid, "flatten": _flatten, "none": _identity}


def pooling(name: str | Pool = "avg", **options) -> Pool:
    """The pooling function registered under `name` (a callable is returned as it is)."""
    if callable(name):
        return name
    if name not in POOLINGS:
        raise ValueError(f"pooling must be one of {sorted(POOLINGS)}, not {name!r}")
    return partial(POOLINGS[name], **options) if options else POOLINGS[name]


class _Enough(Exception):
    """Raised by a hook once every requested layer has fired: the rest of the network is skipped."""


class Taps:
    """Forward hooks on `layers` of `model`; calling it runs the model and returns `{layer: pooled output}`.

    With `stop_early` the forward pass ends at the last wanted layer (its output is all we need).
    Use as a context manager (or call `close`) to remove the hooks.
    """

    def __init__(self, model: nn.Module, layers: list[str], pool: str | Pool = "avg", stop_early: bool = True,
                 **pool_options):
        modules = dict(model.named_modules())
        missing = [name for name in layers if name not in modules]
        if missing:
            raise KeyError(f"no layer(s) {missing} in this model")
        self.model, self.layers, self.stop_early = model, list(layers), stop_early
        self.reduce = pooling(pool, **pool_options)
        self._outputs: dict[str, torch.Tensor] = {}
        self._handles = [modules[name].register_forward_hook(self._hook(name)) for name in dict.fromkeys(layers)]

    def _hook(self, name: str):
        def hook(_module, _inputs, output):
            self._outputs[name] = self.reduce(output)
            if self.stop_early and len(self._outputs) == len(set(self.layers)):
                raise _Enough

        return hook

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.run(x)[0]

    def run(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """The taps and the model's own output (None when the pass stopped early)."""
        self._outputs = {}
        output = None
        try:
            output = self.model(x)
        except _Enough:
            pass
        return {name: self._outputs[name] for name in self.layers}, output

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> Taps:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
