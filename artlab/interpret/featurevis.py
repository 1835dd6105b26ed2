"""Feature visualisation by activation maximisation (Olah, Mordvintsev and Schubert, Distill 2017).

An image is optimised so that a chosen part of the network responds as strongly as possible:

    images = render(model, channel("features.17", [3, 40, 77]))      # one image per channel, one batch

The image is parameterised in Fourier space with 1/f scaling and decorrelated colours (the
default, which favours natural-looking images) or as plain pixels; at every step it is padded,
jittered, rescaled and slightly rotated, so only patterns robust to these survive. The render runs on a
frozen eval-mode copy of the network with its BatchNorm folded into the convolutions (`models.for_inference`:
the same outputs, 1.5x faster), the caller's network untouched, and each image starts from noise
drawn from its own key, so the images of a batch do not influence each other: rendering 16
channels at once gives each the render it would get alone (up to floating-point rounding of the
batched convolutions, which the optimiser can grow into visible pixel differences in directions
the objective does not care about; the channel's response stays the same).
Renders are cached on disk per (weights, layer, channel, objective, settings, seed), each with a checksum
of its pixels checked on every read (a damaged render is rendered again).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from artlab import models
from artlab.cache import cache_dir, digest, load_checked, save_checked
from artlab.io import load_tensors, save_tensors
from artlab.models.optim import Adam
from artlab.progress import Cancelled
from artlab.progress import progress as progress_bar

#: Square root of ImageNet's colour covariance (from its SVD), as measured for lucid; maps decorrelated
#: channels back to RGB. Published figures, quoted here as data.
COLOR_CORRELATION_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_CORRELATION = COLOR_CORRELATION_SQRT / COLOR_CORRELATION_SQRT.norm(dim=0).max()


# ---- objectives ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Objective:
    """What to maximise: a function of the activations (and logits) giving one score per image of the batch.

    Objectives add, subtract and scale (`channel(l, 3) - 0.5 * channel(l, 7)`); `describe` names them
    for the render cache.
    """

    score: Callable[[dict[str, torch.Tensor], torch.Tensor | None], torch.Tensor] = field(compare=False)
    layers: tuple[str, ...]
    describe: str
    needs_logits: bool = False

    def __add__(self, other: Objective) -> Objective:
        layers = tuple(dict.fromkeys(self.layers + other.layers))
        return Objective(lambda a, z: self.score(a, z) + other.score(a, z), layers,
                         f"({self.describe} + {other.describe})", self.needs_logits or other.needs_logits)

    def __sub__(self, other: Objective) -> Objective:
        return self + (-1.0) * other

    def __mul__(self, weight: float) -> Objective:
        return Objective(lambda a, z: weight * self.score(a, z), self.layers, f"{weight:g}*{self.describe}",
                         self.needs_logits)

    __rmul__ = __mul__


def _per_image(indices: int | list[int], batch: int) -> torch.Tensor:
    """One channel (or class) index per image: a single index is used for the whole batch."""
    values = [indices] * batch if isinstance(indices, int) else list(indices)
    if len(values) != batch:
        raise ValueError(f"{len(values)} indices for a batch of {batch} images")
    return torch.as_tensor(values)


def channel(layer: str, channels: int | list[int]) -> Objective:
    """The spatial mean of a channel of `layer` (image i maximises channels[i])."""
    def score(acts, _logits):
        act = acts[layer]
        return act[torch.arange(len(act)), _per_image(channels, len(act))].mean(dim=(1, 2))

    return Objective(score, (layer,), f"channel({layer},{channels})")


def neuron(layer: str, channels: int | list[int]) -> Objective:
    """A channel of `layer` at the centre position only (one unit's receptive field)."""
    def score(acts, _logits):
        act = acts[layer]
        return act[torch.arange(len(act)), _per_image(channels, len(act)), act.shape[2] // 2, act.shape[3] // 2]

    return Objective(score, (layer,), f"neuron({layer},{channels})")


def whole_layer(layer: str) -> Objective:
    """Everything `layer` responds to ("deep dream"): the mean squared activation."""
    return Objective(lambda acts, _z: acts[layer].pow(2).mean(dim=(1, 2, 3)), (layer,), f"layer({layer})")


def class_logit(classes: int | list[int]) -> Objective:
    """The logit of an output class (image i maximises classes[i])."""
    def score(_acts, logits):
        return logits[torch.arange(len(logits)), _per_image(classes, len(logits))]

    return Objective(score, (), f"logit({classes})", needs_logits=True)


def diversity(layer: str) -> Objective:
    """Minus the mean cosine similarity of each image's Gram matrix with the others': several different images.

    Used with one channel repeated over the batch (`channel(l, [c] * 4) + 10 * diversity(l)`), it
    shows several facets of what the channel responds to instead of four copies of one.
    """
    def score(acts, _logits):
        act = acts[layer]
        flat = act.flatten(2)
        gram = F.normalize((flat @ flat.transpose(1, 2)).flatten(1), dim=1)
        similarity = gram @ gram.T
        batch = len(act)
        return -(similarity.sum(1) - similarity.diagonal()) / max(batch - 1, 1)

    return Objective(score, (layer,), f"diversity({layer})")


# ---- image parameterisations -----------------------------------------------------------------------------
def _frequency_scale(size: int, decay: float = 1.0) -> torch.Tensor:
    """1/f^decay weights of the rfft2 frequencies of a size x size image (natural images' spectrum)."""
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    return 1.0 / torch.sqrt(fx * fx + fy * fy).clamp_min(1.0 / size) ** decay


def _noise(shape: tuple[int, ...], seeds: list[int]) -> torch.Tensor:
    """Small random starting values, one image per seed: an image starts the same in any batch."""
    return torch.stack([0.01 * torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds])


class FourierImage(nn.Module):
    """Images as scaled Fourier coefficients of decorrelated colour channels, mapped to [0, 1] by a sigmoid."""

    def __init__(self, seeds: list[int], size: int, decay: float = 1.0):
        super().__init__()
        self.size = size
        shape = (2, 3, size, size // 2 + 1)
        start = _noise(shape, seeds)
        self.real = nn.Parameter(start[:, 0].contiguous())
        self.imag = nn.Parameter(start[:, 1].contiguous())
        # with an orthonormal inverse FFT, half of 1/f gave the strongest responses for a given number of steps
        # (measured against 1/4 to 2 and against plain pixels, at 64 and 128 px; see tests/test_featurevis.py)
        self.register_buffer("scale", _frequency_scale(size, decay) * 0.5)

    def forward(self) -> torch.Tensor:
        spectrum = torch.complex(self.real, self.imag) * self.scale
        decorrelated = torch.fft.irfft2(spectrum, s=(self.size, self.size), norm="ortho")
        rgb = torch.einsum("bchw,dc->bdhw", decorrelated, COLOR_CORRELATION.to(decorrelated.device))
        return torch.sigmoid(rgb)


class PixelImage(nn.Module):
    """Images as raw pixels (through a sigmoid): the baseline that shows why the Fourier basis helps."""

    def __init__(self, seeds: list[int], size: int):
        super().__init__()
        self.pixels = nn.Parameter(_noise((3, size, size), seeds))

    def forward(self) -> torch.Tensor:
        return torch.sigmoid(self.pixels)


# ---- robustness transforms -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Robustness:
    """Random changes applied to the image at each step (one draw per step, shared by the batch)."""

    pad: int = 12
    jitter: int = 8
    scales: tuple[float, ...] = (1.0, 0.975, 1.025, 0.95, 1.05)
    degrees: float = 5.0

    def apply(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Pad with grey, jitter, rescale and rotate; returns images of a similar size."""
        def draw(n: int) -> int:
            return int(torch.randint(n, (1,), generator=generator))

        x = F.pad(images, [self.pad] * 4, mode="constant", value=0.5) if self.pad else images
        if self.jitter:
            dx, dy = draw(2 * self.jitter + 1) - self.jitter, draw(2 * self.jitter + 1) - self.jitter
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
        scale = self.scales[draw(len(self.scales))] if self.scales else 1.0
        angle = math.radians((torch.rand(1, generator=generator).item() * 2 - 1) * self.degrees)
        if scale != 1.0 or angle:
            cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
            theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=x.dtype, device=x.device)
            theta = theta.expand(len(x), 2, 3)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, padding_mode="reflection", align_corners=False)
        return x


NO_ROBUSTNESS = Robustness(pad=0, jitter=0, scales=(), degrees=0.0)


# ---- rendering -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RenderSettings:
    """How an image is optimised; part of the render cache key."""

    steps: int = 256
    size: int = 128
    param: str = "fft"  # "fft" (decorrelated Fourier basis) or "pixel"
    lr: float = 0.05
    robustness: Robustness = Robustness()
    seed: int = 0

    def __post_init__(self) -> None:
        if self.param not in ("fft", "pixel"):
            raise ValueError(f"param must be 'fft' or 'pixel', not {self.param!r}")
        if self.steps < 1 or self.size < 16:
            raise ValueError(f"steps must be >= 1 and size >= 16 (got {self.steps}, {self.size})")


@contextmanager
def frozen_eval(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode with no gradient to its weights; both are restored afterwards."""
    modes = {name: module.training for name, module in model.named_modules()}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for name, module in model.named_modules():
            module.training = modes[name]
        for name, p in model.named_parameters():
            p.requires_grad_(flags[name])


def _normalise(images: torch.Tensor, spec: models.Arch) -> torch.Tensor:
    mean = torch.tensor(spec.mean, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def optimise(model: nn.Module, objective: Objective, batch: int, settings: RenderSettings = RenderSettings(),
             device: torch.device | str = "cpu", progress: bool = True,
             image_keys: list[int] | None = None, stop: threading.Event | None = None) -> torch.Tensor:
    """Optimise `batch` images to maximise `objective`; returns them as float (batch, 3, size, size) in [0, 1].

    Image i starts from noise drawn from (settings.seed, image_keys[i]) (default: its position), and
    the random transforms from settings.seed alone, so an image is the same whatever else is in the batch.
    Setting `stop` (from another thread) abandons the render between two steps: `Cancelled` is raised.
    """
    spec = models.arch_of(model)
    models.check_layers(spec, list(objective.layers))
    # the bar first, before the network's copy is made: a click shows its progress at once
    with progress_bar(range(settings.steps), desc=f"render {objective.describe}", leave=False,
                      disable=not progress) as steps:
        device = torch.device(device)
        keys = list(range(batch)) if image_keys is None else list(image_keys)
        seeds = [settings.seed * 1_000_003 + key for key in keys]
        generator = torch.Generator().manual_seed(settings.seed)
        image = (FourierImage(seeds, settings.size) if settings.param == "fft"
                 else PixelImage(seeds, settings.size)).to(device)
        optimizer = Adam(image.parameters(), lr=settings.lr)
        net = models.for_inference(model, device, keep=objective.layers).requires_grad_(False)  # a faster copy
        layout = torch.channels_last if device.type in ("cpu", "cuda") else torch.contiguous_format  # as the copy
        with models.Taps(net, list(objective.layers), pool="none", stop_early=not objective.needs_logits) as taps:
            for _ in steps:
                if stop is not None and stop.is_set():
                    raise Cancelled(f"render {objective.describe} stopped")
                optimizer.zero_grad(set_to_none=True)
                x = _normalise(settings.robustness.apply(image(), generator), spec)
                acts, logits = taps.run(x.contiguous(memory_format=layout))
                loss = -objective.score(acts, logits).sum()
                loss.backward()
                optimizer.step()
            with torch.no_grad():
                return image().detach().cpu()


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) floats in [0, 1] -> (B, H, W, 3) uint8, for display."""
    return (images.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _cache_path(weights: str, layer: str, channel_index: int, kind: str, settings: RenderSettings):
    key = digest({"weights": weights, "layer": layer, "channel": channel_index, "objective": kind,
                  "settings": asdict(settings), "version": 2})  # 2: rendered through the folded network
    return cache_dir() / "renders" / f"{key}.safetensors"


def render_channels(model: nn.Module, layer: str, channels: list[int], kind: str = "channel",
                    settings: RenderSettings = RenderSettings(), device: torch.device | str = "cpu",
                    cache: bool = True, weights: str | None = None, progress: bool = True,
                    stop: threading.Event | None = None) -> np.ndarray:
    """One image per channel of `layer` (objective `kind`: "channel" or "neuron"), rendered in one batch.

    Channels already rendered with these weights and settings come from the disk cache; the
    others are optimised together. Returns (len(channels), size, size, 3) uint8. `progress` and `stop` are
    `optimise`'s (a render ahead of the user's click runs without a bar and stops when the user asks for another).
    """
    if kind not in ("channel", "neuron"):
        raise ValueError(f"kind must be 'channel' or 'neuron', not {kind!r}")
    models.check_layers(models.arch_of(model), [layer])
    weights = weights or models.model_digest(model)
    out: dict[int, np.ndarray] = {}
    shape = (settings.size, settings.size, 3)
    for c in dict.fromkeys(channels):
        path = _cache_path(weights, layer, c, kind, settings)
        if cache and path.is_file():
            entry = load_checked(path, f"pixels of the render of {kind} {c} of {layer}", load_tensors)
            image = entry.get("image") if entry is not None else None
            if image is not None and image.dtype == torch.uint8 and tuple(image.shape) == shape:
                out[c] = image.numpy()
    todo = [c for c in dict.fromkeys(channels) if c not in out]
    if todo:
        objective = (channel if kind == "channel" else neuron)(layer, todo)
        images = to_uint8(optimise(model, objective, len(todo), settings, device, progress, image_keys=todo,
                                     stop=stop))
        for c, image in zip(todo, images):
            out[c] = image
            if cache:
                save_checked(_cache_path(weights, layer, c, kind, settings), {"image": torch.from_numpy(image)},
                             {"layer": layer, "channel": str(c), "objective": kind, "weights": weights},
                             f"pixels of the render of {kind} {c} of {layer}", save_tensors)
    return np.stack([out[c] for c in channels])


# ---- before and after fine-tuning ------------------------------------------------------------------------------
def layer_channels(model: nn.Module, layer: str) -> int:
    """How many channels `layer` outputs (one forward pass of a blank image, the model left as it was)."""
    side = max(64, models.arch_of(model).min_size)
    with torch.no_grad(), frozen_eval(model), models.Taps(model, [layer], pool="avg") as taps:
        device = next(model.parameters()).device
        return int(taps(torch.zeros(1, 3, side, side, device=device))[layer].shape[1])


def last_convolution(model: nn.Module, layer: str) -> nn.Conv2d:
    """The convolution whose filters make `layer`'s output channels: the last one inside it (shortcuts aside).

    Only layers whose every channel comes from one such filter qualify (MobileNetV2, EfficientNet and
    ResNet blocks); a ReLU layer (VGG) or a concatenation of branches (GoogLeNet, Inception) is refused.
    """
    module = model.get_submodule(layer)
    convs = [m for name, m in module.named_modules() if isinstance(m, nn.Conv2d) and "downsample" not in name]
    channels = layer_channels(model, layer)
    if not convs or convs[-1].out_channels != channels:
        raise ValueError(f"the {channels} channels of {layer} ({models.arch_of(model).name}) do not each come from "
                         f"one filter of a convolution inside it, so there is no filter change to rank them by; "
                         f"give the channels explicitly")
    return convs[-1]


def channel_changes(before: nn.Module, after: nn.Module, layer: str) -> np.ndarray:
    """Per output channel of `layer`: mean|W_after - W_before| / mean|W_before| of the filter that makes it.

    The same per-filter relative change as the parameter analysis, on the layer's last convolution.
    """
    w0 = last_convolution(before, layer).weight.detach().double().flatten(1)
    w1 = last_convolution(after, layer).weight.detach().double().flatten(1)
    return ((w1 - w0).abs().mean(1) / w0.abs().mean(1).clamp_min(1e-12)).numpy()


def most_changed_channels(before: nn.Module, after: nn.Module, layer: str, n: int = 8) -> list[int]:
    """The `n` output channels of `layer` whose filters moved most (see `channel_changes`)."""
    change = torch.from_numpy(channel_changes(before, after, layer))
    return torch.argsort(change, descending=True, stable=True)[:n].tolist()


@dataclass
class BeforeAfter:
    """The same channels rendered for two networks: images[name] is (channels, size, size, 3) uint8."""

    layer: str
    channels: list[int]
    images: dict[str, np.ndarray]

    def figure(self, title: str | None = None):
        """A grid: one row per network, one column per channel."""
        from artlab import plots

        names = list(self.images)
        panels = [self.images[name][i] for name in names for i in range(len(self.channels))]
        captions = [f"{name}: channel {c}" for name in names for c in self.channels]
        return plots.image_grid(panels, captions, title or f"{self.layer}: the same channels before and after "
                                                           f"fine-tuning", columns=len(self.channels))


def before_after(before: nn.Module, after: nn.Module, layer: str, channels: list[int] | None = None, n: int = 8,
                 names: tuple[str, str] = ("ImageNet", "fine-tuned"), settings: RenderSettings = RenderSettings(),
                 device: torch.device | str = "cpu") -> BeforeAfter:
    """Render the same channels for two networks of one architecture (default: the `n` most changed ones), the two
    side by side (`models.side_by_side`)."""
    channels = list(channels) if channels is not None else most_changed_channels(before, after, layer, n)
    stop = threading.Event()
    rendered = models.side_by_side([partial(render_channels, model, layer, channels, settings=settings, device=device,
                                            stop=stop) for model in (before, after)], stop)
    return BeforeAfter(layer, channels, dict(zip(names, rendered)))
