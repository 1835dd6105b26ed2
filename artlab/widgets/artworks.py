"""The artwork inspector: why did each network say what it said about this artwork?

Pick an artwork; see each network's five most probable classes and, side by side, the
attribution map of each network's prediction (Grad-CAM, Integrated Gradients or Occlusion).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pandas as pd
from torch import nn

from artlab.interpret import attribution as attr
from artlab.runs import IMAGENET, Network, Run, as_run, run_collection
from artlab.widgets.base import Explorer, expect
from artlab.widgets.offline import Part


class ArtworkInspector(Explorer):
    """State: `index` (the artwork) and `method`; predictions and maps are computed once per artwork and method."""

    title = "artwork inspector"

    def __init__(self, networks: dict[str, nn.Module], paths: list[str], labels: list[str] | None = None,
                 method: attr.Method = "gradcam", image_size: int | None = None, opacity: float = 0.5):
        expect(networks, dict, "ArtworkInspector", "a dict of name -> network (nn.Module) and a list of image paths")
        super().__init__()
        if not networks or not paths:
            raise ValueError("the inspector needs at least one network and one artwork")
        self.networks, self.paths = networks, [str(p) for p in paths]
        self.labels = list(labels) if labels is not None else [""] * len(self.paths)
        self.index, self.method, self.image_size, self.opacity = 0, method, image_size, opacity

    @classmethod
    def from_run(cls, run: Run | str | Path, split: str = "test", limit: int = 200, **options) -> ArtworkInspector:
        """The ImageNet network and a fine-tuned run's network, on the run's own `split` images."""
        run = as_run(run)
        card = run.card()
        part = run_collection(run, card).part(split).table.head(limit)
        networks = {net.name: net.build() for net in (Network.of(IMAGENET, card.arch), Network.of(run))}
        labels = part[list(card.tasks)].apply(lambda row: "; ".join(_label_text(v) for v in row), axis=1).tolist()
        return cls(networks, part["path"].tolist(), labels, image_size=options.pop("image_size", card.image_size),
                   **options)

    def select(self, index: int | None = None, method: str | None = None) -> None:
        """Show another artwork (by position) or another attribution method."""
        if index is not None:
            if not 0 <= index < len(self.paths):
                raise IndexError(f"there are {len(self.paths)} artworks; {index} is out of range")
            self.index = int(index)
        if method is not None:
            attr.check_method(method)
            self.method = method
        self.refresh()

    def predictions(self) -> pd.DataFrame:
        """Each network's top-5 classes for the current artwork, one block of rows per network."""
        frames = []
        for name, model in self.networks.items():
            top = self.cached("predictions", (name, self.index), lambda model=model: attr.top_predictions(
                model, self.paths[self.index], 5, self.image_size))
            frames.append(top.drop(columns="index").assign(network=name))
        return pd.concat(frames, ignore_index=True)[["network", "class", "probability"]]

    def attributions(self) -> dict[str, attr.Attribution]:
        """Each network's map of its own prediction on the current artwork, with the current method (the networks
        side by side)."""
        maps = self.cached_each("attribution", {(name, self.index, self.method): partial(
            attr.attribute, model, self.paths[self.index], self.method, image_size=self.image_size)
            for name, model in self.networks.items()})
        return {name: found for (name, _, _), found in maps.items()}

    def view(self) -> list[object]:
        label = f" ({self.labels[self.index]})" if self.labels[self.index] else ""
        title = f"{Path(self.paths[self.index]).name}{label}: {self.method}"
        return [attr.compare_figure(self.attributions(), opacity=self.opacity, title=title), self.predictions()]

    def offline_parts(self) -> list[Part]:
        """Every artwork with every attribution method (each map computed now, or read from the cache)."""
        options = [(f"{Path(p).stem}{' - ' + lab if lab else ''}", i)
                   for i, (p, lab) in enumerate(zip(self.paths, self.labels))]
        return [Part({"artwork": options, "method": list(attr.METHODS)},
                     lambda index, method: self.at(self.view, index=index, method=method))]

    def controls(self) -> list[object]:
        import ipywidgets as widgets

        options = [(f"{Path(p).stem}{' - ' + lab if lab else ''}", i)
                   for i, (p, lab) in enumerate(zip(self.paths, self.labels))]
        artwork = widgets.Dropdown(options=options, value=self.index, description="artwork")
        method = widgets.ToggleButtons(options=list(attr.METHODS), value=self.method, description="method")
        artwork.observe(lambda change: self.select(index=change["new"]), names="value")
        method.observe(lambda change: self.select(method=change["new"]), names="value")
        return [artwork, method]


def _label_text(value: object) -> str:
    """A label cell as text: multi-label tuples joined, a missing label as a dash."""
    if isinstance(value, tuple):
        return ", ".join(value)
    return "-" if value is None or value != value else str(value)
