"""Which network: one reference for ImageNet weights, a random init, a run's trained network or a model in hand.

    net = Network.of("imagenet")            # or ("random", "resnet18"), a run folder, a Run, a model
    net.name, net.arch, net.weights_id, net.image_size, net.card
    model = net.build()                     # a fresh module each call (the model itself for a model in hand)

Like torchvision's `Weights`, the reference knows its identity and input without building anything:
`weights_id` keys every cache (features, renders), so a cached result never builds the network.
Every place that takes a network accepts anything `Network.of` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from artlab import models
from artlab.data.collection import ArtCollection
from artlab.models import DEFAULT_IMAGE_SIZE, ModelCard
from artlab.runs.folder import Run, as_run

if TYPE_CHECKING:
    from torchvision.transforms import v2 as T

IMAGENET, RANDOM = "imagenet", "random"
DEFAULT_ARCH = "mobilenet_v2"
#: The seed of "random": the same untrained network every time (a baseline, not a draw).
RANDOM_SEED = 0

@dataclass(frozen=True)
class Network:
    """A network named once: shown as `name`, built by `build()`, identified in caches by `weights_id`."""

    name: str
    arch: str
    weights_id: str
    image_size: int = DEFAULT_IMAGE_SIZE
    card: ModelCard | None = field(default=None, compare=False)
    run: Run | None = field(default=None, compare=False)
    builder: Callable[[], nn.Module] = field(default=None, repr=False, compare=False)

    def build(self) -> nn.Module:
        """The network in eval mode, its card attached when it has one."""
        return self.builder()

    def transforms(self, train: bool = False) -> T.Compose:
        """uint8 image -> the input this network expects at its image size (random crop and flip to `train`)."""
        return models.arch(self.arch).transform(self.image_size, train)

    @classmethod
    def of(cls, source: Network | str | Path | Run | nn.Module, arch: str | None = None,
           image_size: int | None = None) -> Network:
        """"imagenet" or "random" (with `arch`, default MobileNetV2), a run folder or Run holding a trained
        network, a model, or a Network (returned as is). `arch`, when given, must match; `image_size` overrides
        the network's own."""
        if isinstance(source, Network):
            network = source
        elif isinstance(source, nn.Module):
            network = _of_model(source)
        elif isinstance(source, str) and source in (IMAGENET, RANDOM):
            network = _pretrained(arch or DEFAULT_ARCH) if source == IMAGENET else _random(arch or DEFAULT_ARCH)
        else:
            network = _of_run(as_run(source))
        if arch is not None and arch != network.arch:
            raise ValueError(f"{network.name} is a {network.arch}, not a {arch}")
        if image_size is not None and image_size != network.image_size:
            network = Network(network.name, network.arch, network.weights_id, image_size, network.card, network.run,
                              network.builder)
        return network


def _pretrained(arch: str) -> Network:
    spec = models.arch(arch)
    return Network("ImageNet", spec.name, models.weights_id(spec.name),
                   builder=lambda: models.build(spec.name, pretrained=True).eval())


def _random(arch: str) -> Network:
    spec = models.arch(arch)

    def build() -> nn.Module:
        with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
            torch.manual_seed(RANDOM_SEED)
            return models.build(spec.name, pretrained=False).eval()

    return Network("random init", spec.name, f"random:{spec.name}:seed{RANDOM_SEED}", builder=build)


def _of_run(run: Run) -> Network:
    if not run.path.is_dir():
        raise FileNotFoundError(f"network source {str(run.path)!r} is neither {IMAGENET!r}, {RANDOM!r} nor a run "
                                f"folder")
    card = run.card()
    if card.kind != "network":
        raise ValueError(f"{run.path} holds a {card.kind}, not a trained network (off-the-shelf runs keep only a "
                         f"linear classifier on ImageNet features: use {IMAGENET!r} for their network)")
    return Network(run.name, card.arch, run.weights_id(), card.image_size, card, run, lambda: load_network(run))


def _of_model(model: nn.Module) -> Network:
    card = models.card_of(model)
    return Network("model", models.arch_of(model).name, models.model_digest(model),
                   card.image_size if card else DEFAULT_IMAGE_SIZE, card, builder=lambda: model)


def load_network(run: Run | str | Path) -> nn.Module:
    """The trained network of a fine-tune or scratch run (best-on-validation weights), in eval mode, its card
    attached (`models.card_of`: tasks, classes, image size)."""
    run = as_run(run)
    tensors, card = run.load_model()
    if card.kind != "network":
        raise ValueError(f"{run.path} holds a {card.kind}, not a trained network (off-the-shelf runs "
                         f"keep only a linear classifier on ImageNet features)")
    model = models.build(card.arch, pretrained=False, num_classes=card.num_outputs)
    model.load_state_dict(tensors)
    for attribute, value in card.attributes.items():  # e.g. GoogLeNet's input re-scaling when it came from ImageNet
        setattr(model, attribute, value)
    return models.attach_card(model, card).eval()


def run_collection(run: Run | str | Path, card: ModelCard | None = None,
                   data: str | Path | None = None) -> ArtCollection:
    """The exact images, labels and split a run used (from its split.csv), found in `data` if given (the collection
    moved), else where it is now (`split.locate`); images missing since are left out and listed in `skipped`,
    changed ones listed in `changed` (and both warned about)."""
    run = as_run(run)
    card = card or run.card()
    return run.read_split({t: card.multi_label[t] for t in card.tasks}, data=data)
