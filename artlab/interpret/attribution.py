"""Where a network looks: Grad-CAM, Integrated Gradients and Occlusion maps (Captum) over one artwork.

Every method is Captum's own; this module only prepares the input, picks the target class and
shapes the result. Attribution runs on a deep copy of the network in eval mode with every in-place
activation turned off (torchvision's ReLU/ReLU6 are in-place, which Captum's hooks do not expect),
so the caller's model keeps its weights, mode, BatchNorm statistics, flags and gradients.

All methods attribute the target's logit (the pre-softmax / pre-sigmoid score), as Grad-CAM's
authors do; `Attribution.score` reports the probability. Maps are in the pixels of the network's
input: the image resized (shorter side) and centre-cropped to `image_size`, which is what
`Attribution.image` shows.
"""

from __future__ import annotations

import copy
import difflib
import html
import operator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from PIL import Image
from torch import nn

from artlab import models, plots
from artlab.cache import cache_dir, content_id, digest, json_tensor, load_first_checked, save_checked, tensor_json
from artlab.data.images import load_rgb, to_rgb
from artlab.data.standins import original_id
from artlab.io import load_tensors, save_tensors

Method = Literal["gradcam", "ig", "occlusion"]
METHODS: tuple[str, ...] = ("gradcam", "ig", "occlusion")
IMAGENET_OUTPUTS = 1000
#: Images as `attribute` takes them: a file, a PIL image, an H x W x 3 uint8 array or a 3 x H x W tensor.
ImageLike = str | Path | Image.Image | np.ndarray | torch.Tensor


@dataclass(frozen=True)
class Attribution:
    """One attribution map of one network over one image.

    `map` is H x W float32 in the pixels of `image`: for "gradcam" the ReLU'd class activation map
    upsampled bilinearly (non-negative); for "ig" and "occlusion" the signed attribution summed over
    the three colour channels (positive: evidence for the target, negative: against it).
    """

    method: str
    target: str  # the class the map explains
    target_index: int
    score: float  # the network's probability for `target` (softmax, or sigmoid when multi-label)
    map: np.ndarray  # H x W float32
    image: np.ndarray  # H x W x 3 uint8: the centre-cropped input the network saw
    prediction: str  # the network's top class on this image
    prediction_index: int
    prediction_score: float  # its probability


@dataclass
class _Subject:
    """A network prepared for attribution (private copy) and one preprocessed image, with its outputs."""

    network: nn.Module
    x: torch.Tensor  # 1 x 3 x H x W, normalised, on the network's device
    image: np.ndarray
    names: list[str]
    probabilities: torch.Tensor  # one per output (softmax, or sigmoid when multi-label)


def attribution_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode, in-place activations off and no parameter gradients: safe for Captum's hooks."""
    network = copy.deepcopy(model).eval()
    for module in network.modules():
        if isinstance(getattr(module, "inplace", None), bool):
            module.inplace = False
    for param in network.parameters():
        param.requires_grad_(False)
        param.grad = None
    return network


def class_names(model: nn.Module) -> list[str]:
    """The names of the network's outputs: its card's classes, ImageNet's for a 1000-way head, else indices."""
    card = models.card_of(model)
    if card is not None:
        return card.output_names()
    outputs = models.head_module(model).out_features
    if outputs == IMAGENET_OUTPUTS:
        return models.imagenet_classes(models.arch_of(model).name)
    return [str(i) for i in range(outputs)]


def is_multi_label(model: nn.Module) -> bool:
    """Whether the network's outputs are independent labels (sigmoid) rather than one class (softmax)."""
    card = models.card_of(model)
    return card is not None and all(card.multi_label[t] for t in card.tasks)


def default_image_size(model: nn.Module) -> int:
    """The side the network was trained at (its card's image_size), else 224 (ImageNet's)."""
    card = models.card_of(model)
    return card.image_size if card is not None else models.IMAGENET_IMAGE_SIZE


def image_tensor(image: ImageLike) -> torch.Tensor:
    """Any supported image as a 3 x H x W tensor (uint8, or float in [0, 1] if given so); files via load_rgb."""
    if isinstance(image, str | Path):
        image = load_rgb(image)
    if isinstance(image, Image.Image):
        image = np.asarray(to_rgb(image))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"an image array must be H x W x 3 (RGB), not {image.shape}")
        return torch.from_numpy(np.array(image)).permute(2, 0, 1)  # a writable copy
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"an image tensor must be 3 x H x W (RGB), not {tuple(image.shape)}")
        return image.detach().cpu()
    raise TypeError(f"cannot read an image from a {type(image).__name__}; give a path, a PIL image, "
                    f"an H x W x 3 array or a 3 x H x W tensor")


def _shown(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """The normalised input back in uint8 H x W x 3, so the user sees exactly what the network saw."""
    spec = models.arch_of(model)
    mean = torch.tensor(spec.mean).view(3, 1, 1)
    std = torch.tensor(spec.std).view(3, 1, 1)
    pixels = (x.detach().cpu() * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8)
    return pixels.permute(1, 2, 0).numpy()


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _prepare(model: nn.Module, image: ImageLike, image_size: int | None) -> _Subject:
    """Copy the network, preprocess the image as the network expects and record its output probabilities."""
    size = image_size or default_image_size(model)
    x = models.input_transform(model, size)(image_tensor(image))
    network = attribution_copy(model)
    batch = x[None].to(_device(network))
    with torch.no_grad():
        logits = network(batch)[0].float()
    names = class_names(model)
    if len(names) != len(logits):
        raise ValueError(f"the network has {len(logits)} outputs but its card names {len(names)} classes")
    card = models.card_of(model)
    probabilities = (card.probabilities(logits) if card is not None else logits.softmax(0)).cpu()
    return _Subject(network, batch, _shown(model, x), names, probabilities)


def resolve_target(names: list[str], target: str | int) -> int:
    """An output index from a class name or index; unknown names raise KeyError listing valid ones."""
    if isinstance(target, str):
        matches = [i for i, name in enumerate(names) if name == target]
        if not matches:
            close = difflib.get_close_matches(target, names, n=5)
            listed = close or names[:10]
            raise KeyError(f"no class {target!r} among this network's {len(names)} outputs; "
                           f"{'did you mean' if close else 'they include'} {listed}")
        if len(matches) > 1:
            raise ValueError(f"class name {target!r} names several outputs {matches}; pass the index")
        return matches[0]
    index = operator.index(target)
    if not 0 <= index < len(names):
        raise IndexError(f"class index {index} is out of range: this network has {len(names)} outputs")
    return index


def _gradcam(subject: _Subject, index: int, layer: str | None) -> torch.Tensor:
    """Captum's LayerGradCam on `layer` (default: the deepest analysed layer), upsampled to the input, ReLU'd."""
    name = layer or models.arch_of(subject.network).feature_layer
    try:
        module = subject.network.get_submodule(name)
    except AttributeError:
        raise KeyError(f"{models.arch_of(subject.network).name} has no layer {name!r}; "
                       f"its analysed layers are {list(models.arch_of(subject.network).layers)}") from None
    from captum.attr import LayerAttribution, LayerGradCam  # Captum where a map is computed: cached maps need none

    cam = LayerGradCam(subject.network, module).attribute(subject.x, target=index, relu_attributions=True)
    upsampled = LayerAttribution.interpolate(cam, tuple(subject.x.shape[-2:]), interpolate_mode="bilinear")
    return upsampled[0, 0].relu()


def _integrated_gradients(subject: _Subject, index: int, n_steps: int) -> torch.Tensor:
    """Captum's IntegratedGradients from a baseline of zeros (ImageNet's mean colour), summed over channels."""
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(subject.network)
    attributions = ig.attribute(subject.x, baselines=torch.zeros_like(subject.x), target=index, n_steps=n_steps,
                                internal_batch_size=min(n_steps, 16))
    return attributions[0].sum(0)


def occlusion_window(image_size: int) -> tuple[int, int]:
    """Occlusion's square patch and stride for an input side: 1/8 of the side (at least 8 px), half-overlapping."""
    window = max(8, image_size // 8)
    return window, max(1, window // 2)


def _occlusion(subject: _Subject, index: int, window: int | None, stride: int | None) -> torch.Tensor:
    """Captum's Occlusion with mean-colour patches (zeros once normalised), summed over channels."""
    from captum.attr import Occlusion

    window = window or occlusion_window(min(subject.x.shape[-2:]))[0]
    stride = stride or max(1, window // 2)
    attributions = Occlusion(subject.network).attribute(subject.x, sliding_window_shapes=(3, window, window),
                                                        strides=(3, stride, stride), baselines=0, target=index,
                                                        perturbations_per_eval=16)
    return attributions[0].sum(0)


def _default_target(subject: _Subject) -> int:
    return int(subject.probabilities.argmax())


def _attribute(subject: _Subject, method: str, index: int, layer: str | None, n_steps: int,
               window: int | None, stride: int | None) -> Attribution:
    """One map of `subject` for output `index` by `method`, packed with its scores and the image."""
    with torch.enable_grad():
        if method == "gradcam":
            heat = _gradcam(subject, index, layer)
        elif method == "ig":
            heat = _integrated_gradients(subject, index, n_steps)
        else:
            heat = _occlusion(subject, index, window, stride)
    top = _default_target(subject)
    return Attribution(method=method, target=subject.names[index], target_index=index,
                       score=float(subject.probabilities[index]), map=heat.detach().float().cpu().numpy(),
                       image=subject.image, prediction=subject.names[top], prediction_index=top,
                       prediction_score=float(subject.probabilities[top]))


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; choose from {list(METHODS)}")


def attribute(model: nn.Module, image: ImageLike, method: Method = "gradcam", target: str | int | None = None,
              layer: str | None = None, image_size: int | None = None, *, n_steps: int = 50,
              window: int | None = None, stride: int | None = None) -> Attribution:
    """Why the network scores `target` (default: its top class) on this image: one Captum map over its input.

    `target` is a class name (the model card's classes, or ImageNet's for a 1000-way head) or an output
    index. `layer` is Grad-CAM's layer (default: the architecture's deepest analysed layer); `n_steps`
    is Integrated Gradients' number of steps; `window`/`stride` are Occlusion's patch and step in pixels
    (default: `occlusion_window(image_size)`). `image_size` defaults to the card's size, else 224.
    """
    check_method(method)
    entries = _entries("attribution", model, image, {"method": method, "target": target, "layer": layer,
                                                     "size": image_size, "n_steps": n_steps, "window": window,
                                                     "stride": stride})
    stored = load_first_checked(entries, "attribution map", load_tensors)
    if stored is not None:
        return Attribution(**tensor_json(stored["about"]), map=stored["map"].numpy(), image=stored["image"].numpy())
    subject = _prepare(model, image, image_size)
    index = _default_target(subject) if target is None else resolve_target(subject.names, target)
    result = _attribute(subject, method, index, layer, n_steps, window, stride)
    if entries:
        about = {k: v for k, v in asdict(result).items() if k not in ("map", "image")}
        tensors = {"map": torch.from_numpy(np.ascontiguousarray(result.map)), "about": json_tensor(about),
                   "image": torch.from_numpy(np.ascontiguousarray(result.image))}
        save_checked(entries[-1], tensors, {}, "attribution map", save_tensors)
    return result


def _entries(kind: str, model: nn.Module, image: ImageLike, spec: dict) -> list[Path]:
    """Where a result over an image file is cached (`<cache>/attributions/`), keyed by the network's weights, the
    file's content and `spec`: a stand-in's original first (`artlab.data.standins`), then the file itself, under which
    a result computed here is stored. Empty for an image given in memory (not cached) or unreadable."""
    if not isinstance(image, str | Path):
        return []
    try:
        contents = dict.fromkeys([original_id(image), content_id(image)])
    except OSError:
        return []  # unreadable: computing says why
    card = models.card_of(model)  # its classes, size and sigmoid or softmax decide the result as the weights do
    common = {"kind": kind, "weights": models.model_digest(model), **spec,
              "resolved_size": spec.get("size") or default_image_size(model),
              "card": card.to_metadata() if card is not None else None, "version": 1}
    return [cache_dir() / "attributions" / f"{kind}-{digest(common | {'image': content})}.safetensors"
            for content in contents]


def attribute_positive_labels(model: nn.Module, image: ImageLike, method: Method = "gradcam",
                              threshold: float = 0.5, layer: str | None = None, image_size: int | None = None, *,
                              n_steps: int = 50, window: int | None = None,
                              stride: int | None = None) -> list[Attribution]:
    """A multi-label network's maps, one per label it asserts (sigmoid > threshold), most confident first."""
    check_method(method)
    if not is_multi_label(model):
        raise ValueError("this network is not multi-label (it needs a model card with multi_label true); "
                         "use attribute() for its single predicted class")
    subject = _prepare(model, image, image_size)
    positives = [i for i in subject.probabilities.argsort(descending=True).tolist()
                 if subject.probabilities[i] > threshold]
    return [_attribute(subject, method, i, layer, n_steps, window, stride) for i in positives]


def top_predictions(model: nn.Module, image: ImageLike, k: int = 5, image_size: int | None = None) -> pd.DataFrame:
    """The network's k most probable classes on the image (softmax, or sigmoid when multi-label), as a table."""
    entries = _entries("predictions", model, image, {"k": k, "size": image_size})
    stored = load_first_checked(entries, "predictions", load_tensors)
    if stored is not None:
        return pd.DataFrame({"class": tensor_json(stored["about"]), "probability": stored["probability"].numpy(),
                             "index": stored["index"].numpy()})
    subject = _prepare(model, image, image_size)
    k = min(k, len(subject.names))
    values, indices = subject.probabilities.topk(k)
    names = [subject.names[i] for i in indices.tolist()]
    if entries:
        save_checked(entries[-1], {"probability": values.double(), "index": indices, "about": json_tensor(names)}, {},
                     "predictions", save_tensors)
    return pd.DataFrame({"class": names, "probability": values.numpy().astype(float), "index": indices.numpy()})


def _style(attribution: Attribution) -> dict:
    """Grad-CAM maps (non-negative) in a sequential scale; signed maps in a diverging one centred on zero."""
    if attribution.method == "gradcam":
        return {"colorscale": "Inferno", "zmid": None}
    return {"colorscale": "RdBu_r", "zmid": 0.0}


def _caption(attribution: Attribution, label: str | None = None) -> str:
    """'label: predicts X (p)', plus the map's target when that is another class."""
    text = f"predicts {attribution.prediction} ({attribution.prediction_score:.0%})"
    if attribution.target_index != attribution.prediction_index:
        text += f"; map for {attribution.target} ({attribution.score:.0%})"
    return f"{label}: {text}" if label else text


def overlay_figure(attribution: Attribution, opacity: float = 0.5, title: str | None = None) -> go.Figure:
    """The artwork the network saw with the attribution map drawn over it at `opacity` (raw map values)."""
    default = html.escape(f"{attribution.method}: {_caption(attribution)}")
    return plots.image_overlays([(attribution.image, attribution.map, "")], title=title or default,
                                opacity=opacity, **_style(attribution))


def _relative(attribution: Attribution) -> np.ndarray:
    """The map divided by its largest magnitude, so maps of different networks share one colour scale."""
    peak = float(np.abs(attribution.map).max())
    return attribution.map / peak if peak > 0 else attribution.map


def compare_figure(attributions: dict[str, Attribution], opacity: float = 0.5,
                   title: str | None = None) -> go.Figure:
    """Maps of several networks side by side (e.g. ImageNet vs fine-tuned), each scaled to its own peak.

    Each subplot is titled with its label and the network's predicted class and probability.
    """
    if not attributions:
        raise ValueError("compare_figure needs at least one attribution")
    first = next(iter(attributions.values()))
    panels = [(a.image, _relative(a), _caption(a, label)) for label, a in attributions.items()]
    signed = any(a.method != "gradcam" for a in attributions.values())
    style = {"colorscale": "RdBu_r", "zmid": 0.0, "zmin": -1.0, "zmax": 1.0} if signed else \
        {"colorscale": "Inferno", "zmin": 0.0, "zmax": 1.0}
    return plots.image_overlays(panels, title=title or f"{first.method}, each map relative to its peak",
                                opacity=opacity, **style)
