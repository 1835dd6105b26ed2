"""The collection map: every artwork placed by a network's features, coloured by any label.

Pick the colouring; pick (or click) an artwork to see the works most like it. Give two maps (the
ImageNet network and a fine-tuned one) to see classes separate after fine-tuning, with the
separation figures of both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from artlab.data.collection import ArtCollection
from artlab.features import unreadable_rows
from artlab.interpret import projection
from artlab.runs import IMAGENET
from artlab.widgets.base import Explorer, expect
from artlab.widgets.offline import Part


def _aligned(table: pd.DataFrame, features: np.ndarray) -> np.ndarray:
    """The feature rows of the map's artworks (a map leaves out images whose features are unreadable)."""
    if len(features) != len(table):
        features = features[~unreadable_rows(features)]
    if len(features) != len(table):
        raise ValueError(f"a map of {len(table)} artworks with {len(features)} feature vectors: build both from "
                         f"the same collection")
    return features


class CollectionMap(Explorer):
    """State: `color` (a label column), `network` (which map) and `selected` (an artwork index)."""

    title = "collection map"

    def __init__(self, maps: dict[str, pd.DataFrame], features: dict[str, np.ndarray], color: str | None = None,
                 k: int = 8):
        for given in (maps, features):
            expect(given, dict, "CollectionMap", "dicts of network name -> map table and -> feature matrix, as "
                                                 "artlab.interpret.projection makes them")
        super().__init__()
        if not maps or set(maps) != set(features):
            raise ValueError("give one map table and one feature matrix per network, under the same names")
        features = {name: _aligned(maps[name], x) for name, x in features.items()}
        self.maps, self.features, self.k = maps, features, k
        self.network = next(iter(maps))
        self.columns = projection.label_columns(self.maps[self.network])
        self.color = color or self.maps[self.network].attrs.get("color") or self.columns[0]
        self.selected = 0

    @classmethod
    def from_collection(cls, collection: ArtCollection, sources: dict[str, object] | None = None,
                        layer: str | None = None, method: str = "pca", color: str | None = None,
                        image_size: int | None = None, arch: str | None = None) -> CollectionMap:
        """Maps of `collection` for each network source ("imagenet" or a run folder; default ImageNet only)."""
        sources = sources or {"ImageNet": IMAGENET}
        paths = collection.table["path"].tolist()
        maps, features = {}, {}
        for name, source in sources.items():
            features[name] = projection.layer_features(source, paths, layer, image_size, arch=arch)
            maps[name] = projection.collection_map(collection, features[name], method, color)
        return cls(maps, features, color)

    def select(self, index: int | None = None, color: str | None = None, network: str | None = None) -> None:
        """Select an artwork (its neighbours are shown), another colouring, or another network's map."""
        if network is not None:
            if network not in self.maps:
                raise KeyError(f"no map {network!r}; there are {list(self.maps)}")
            self.network = network
        if color is not None:
            if color not in self.columns:
                raise KeyError(f"cannot colour by {color!r}; choose from {self.columns}")
            self.color = color
        if index is not None:
            if not 0 <= index < len(self.maps[self.network]):
                raise IndexError(f"there are {len(self.maps[self.network])} artworks; {index} is out of range")
            self.selected = int(index)
        self.refresh()

    def figure(self):
        """The current network's map coloured by the current label (built once per network and colouring)."""
        return self.cached("map figure", (self.network, self.color), lambda: projection.map_figure(
            self.maps[self.network], self.color, title=f"{self.network}: artworks by {self.color}", thumbnails=False))

    def neighbours(self) -> pd.DataFrame:
        """The selected artwork's nearest works in the current network's feature space."""
        table = self.maps[self.network]
        return self.cached("neighbours", (self.network, self.selected), lambda: projection.neighbours(
            self.features[self.network], table["path"].tolist(), self.selected, self.k, labels=table[self.columns]))

    def separation(self) -> pd.DataFrame:
        """How well the current label's classes separate in each network's features (once per label)."""
        return self.cached("separation", self.color, lambda: projection.separation_table(
            self.features, self.maps[self.network][self.color]))

    def view(self) -> list[object]:
        query = self.maps[self.network]["path"].iloc[self.selected]
        return [self.figure(), projection.neighbours_figure(self.neighbours(), query, self.color), self.separation()]

    def offline_parts(self, artworks: int = 10) -> list[Part]:
        """Every network's map in every colouring, and the neighbours of the first `artworks` artworks."""
        table = self.maps[self.network]
        options = [(Path(p).stem, i) for i, p in enumerate(table["path"])]
        shown = [(name, i) for name in self.maps for i in range(min(artworks, len(table)))]
        return [Part({"network": list(self.maps), "colour by": self.columns}, lambda network, color: self.at(
                    lambda: [self.figure(), self.separation()], network=network, color=color)),
                Part({"network": list(self.maps), "artwork": options}, lambda network, index: self.at(
                    lambda: [projection.neighbours_figure(self.neighbours(), self.maps[network]["path"].iloc[index],
                                                          self.color)], network=network, selected=index), shown)]

    def controls(self) -> list[object]:
        import ipywidgets as widgets

        table = self.maps[self.network]
        color = widgets.Dropdown(options=self.columns, value=self.color, description="colour by")
        network = widgets.Dropdown(options=list(self.maps), value=self.network, description="network")
        artwork = widgets.Dropdown(options=[(Path(p).stem, i) for i, p in enumerate(table["path"])],
                                   value=self.selected, description="artwork")
        color.observe(lambda change: self.select(color=change["new"]), names="value")
        network.observe(lambda change: self.select(network=change["new"]), names="value")
        artwork.observe(lambda change: self.select(index=change["new"]), names="value")
        return [network, color, artwork]
