"""Taps: the pooled activations of named layers, in one forward pass that stops after the last one.

In the spirit of torchvision's `create_feature_extractor`, but with forward hooks, so it works on
any module tree and skips the rest of the network once every wanted layer has fired:

    with Taps(model, ["features.4", "features.18"], pool="avg") as taps:
        outputs = taps(x)          # {"features.4": (N, 32), "features.18": (N, 1280)}

Every way of turning an activation map into a vector lives in the one `POOLINGS` registry, and
`for_inference` gives the fast copy of a network that every forward-only pass runs (features,
analyses): BatchNorm folded into its convolution, channels_last, optionally compiled.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

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


def pools(**named: str | Pool) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """One activation map pooled several ways at once: `pools(cka="avg", topk="relu_avg")` gives
    `{"cka": ..., "topk": ...}` per layer, so one forward pass feeds several analyses."""
    functions = {name: pooling(pool) for name, pool in named.items()}

    def pool_all(output: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: function(output) for name, function in functions.items()}

    return pool_all


def fold_batchnorm(model: nn.Module, keep: Iterable[str] = ()) -> int:
    """Fold every eval-mode BatchNorm2d into the Conv2d just before it in a Sequential, in place; returns how many.

    The pair then costs one convolution (the BatchNorm becomes an Identity that keeps its name).
    Modules named in `keep`, or carrying hooks, are left alone: their own output must not change.
    """
    kept, folded = set(keep), 0
    for prefix, module in list(model.named_modules()):
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            conv, norm = module._modules[first], module._modules[second]
            full = {f"{prefix}.{first}" if prefix else first, f"{prefix}.{second}" if prefix else second}
            if (isinstance(conv, nn.Conv2d) and type(norm) is nn.BatchNorm2d and not (conv.training or norm.training)
                    and norm.running_mean is not None and conv.out_channels == norm.num_features
                    and not full & kept and not _has_hooks(conv) and not _has_hooks(norm)):
                module._modules[first] = fuse_conv_bn_eval(conv, norm)
                module._modules[second] = nn.Identity()
                folded += 1
    return folded


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


def for_inference(model: nn.Module, device: torch.device | str, keep: Iterable[str] = (), fold: bool = True,
                  channels_last: bool = True, compile: bool = False) -> nn.Module:
    """A copy of `model` for forward passes only, on `device`: eval mode, BatchNorm folded into the
    convolutions (`fold`), channels_last weights on CPU and CUDA, and with `compile` torch.compile
    on every part of the network that holds no layer named in `keep` (the taps' layers keep their
    hooks in eager Python). Module names are unchanged, so Taps see the same layers.

    Outputs equal the original model's in eval mode to float rounding; the caller's model is not modified (not
    even its mode).
    """
    device = torch.device(device)
    net = copy.deepcopy(model).to(device).eval()
    if fold:
        fold_batchnorm(net, keep)
    if channels_last and device.type in ("cpu", "cuda"):
        net = net.to(memory_format=torch.channels_last)
    if compile:
        _compile_untapped(net, set(keep))
    return net


def _compile_untapped(model: nn.Module, keep: set[str]) -> None:
    """Compile the forward of each largest submodule that contains no kept layer strictly inside it."""
    for name, child in model.named_children():
        inner = [layer for layer in keep if layer.startswith(name + ".")]
        if inner:
            _compile_untapped(child, {layer[len(name) + 1:] for layer in inner})
        else:
            child.compile(dynamic=False)


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
