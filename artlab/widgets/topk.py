"""The top-k browser: pick a network, a layer and a channel; see the artworks that excite it most."""

from __future__ import annotations

import numpy as np

from artlab.analysis import Analysis, TopK
from artlab.plots import gallery
from artlab.widgets.base import Explorer, expect, live_front_end, one_of

#: The network choice that shows every network's gallery, one under the other.
EVERY_NETWORK = "(every network)"


def topk_gallery(top: TopK, labels: np.ndarray | list[str], layer: str, channel: int, n: int = 10,
                 title: str = ""):
    """A plotly gallery of one channel's top images, best first, captioned with their labels."""
    ids = top.indices[layer][channel].tolist()[:n]
    scores = top.scores[layer][channel].tolist()[:n]
    captions = [f"{labels[i]} ({s:.2f})" for i, s in zip(ids, scores)]
    return gallery([top.paths[i] for i in ids], captions, title or f"{layer}, channel {channel}")


class TopKBrowser(Explorer):
    """State: `network` (a network's name, or EVERY_NETWORK), `layer` and `channel`; each gallery is drawn once.

    `source`: an Analysis that ran 'topk' (its top-k lists and labels are used), or a dict
    network name -> TopK together with `labels` (one class per image). It opens on channel 0 of
    the deepest layer, for every network.
    """

    title = "top-k images"

    def __init__(self, source: Analysis | dict[str, TopK], labels: np.ndarray | list[str] | None = None,
                 n: int = 10):
        expect(source, (Analysis, dict), "TopKBrowser", "an Analysis that ran 'topk' (artlab.analyze) or a dict of "
                                                        "network name -> TopK")
        super().__init__()
        if isinstance(source, Analysis):
            tops, labels = source.tops, source.labels if labels is None else labels
        else:
            tops = source
        if not tops or labels is None:
            raise ValueError("no top-k lists to browse: run analyze(..., what=('topk',)) first")
        self.tops, self.labels, self.n = dict(tops), labels, n
        self.layers = next(iter(self.tops.values())).layers
        self.network, self.layer, self.channel = EVERY_NETWORK, self.layers[-1], 0

    # ---- state ----------------------------------------------------------------------------------
    def networks(self) -> list[str]:
        """The choices: every network at once, then each one."""
        return [EVERY_NETWORK, *self.tops]

    def shown(self) -> list[str]:
        """The networks whose gallery is shown."""
        return list(self.tops) if self.network == EVERY_NETWORK else [self.network]

    def channels(self) -> int:
        """How many channels the current layer has (in every network shown)."""
        return min(len(self.tops[name].indices[self.layer]) for name in self.shown())

    def select(self, network: str | None = None, layer: str | None = None, channel: int | None = None) -> None:
        """Show another network (or EVERY_NETWORK), layer or channel (kept within the layer's channels)."""
        self.network = self.network if network is None else one_of(network, self.networks(), "network")
        self.layer = self.layer if layer is None else one_of(layer, self.layers, "layer")
        if channel is not None:
            if not 0 <= channel < self.channels():
                raise IndexError(f"{self.layer} has {self.channels()} channels; {channel} is out of range")
            self.channel = int(channel)
        self.channel = min(self.channel, self.channels() - 1)
        self.refresh()

    # ---- what is shown ------------------------------------------------------------------------------
    def gallery(self, name: str):
        """One network's gallery of the current layer and channel (drawn once)."""
        return self.cached("gallery", (name, self.layer, self.channel), lambda: topk_gallery(
            self.tops[name], self.labels, self.layer, self.channel, self.n,
            f"{name}: {self.layer}, channel {self.channel}"))

    def view(self) -> list[object]:
        return [self.gallery(name) for name in self.shown()]

    def controls(self) -> list[object]:
        import ipywidgets as widgets

        network = widgets.Dropdown(options=self.networks(), value=self.network, description="network")
        layer = widgets.Dropdown(options=self.layers, value=self.layer, description="layer")
        channel = widgets.BoundedIntText(value=self.channel, min=0, max=self.channels() - 1, description="channel")

        def on_choice(_change=None) -> None:
            self.select(network=network.value, layer=layer.value)
            channel.max = self.channels() - 1
            if channel.value != self.channel:
                channel.value = self.channel  # observed: shows the clamped channel

        network.observe(on_choice, names="value")
        layer.observe(on_choice, names="value")
        channel.observe(lambda change: self.select(channel=change["new"]), names="value")
        return [network, layer, channel]


def topk_browser(source: Analysis | dict[str, TopK], labels: np.ndarray | list[str] | None = None, n: int = 10):
    """Show a TopKBrowser (live controls, or headless every network's gallery of the deepest layer's channel 0).

    Returns the widget box when live, else None; `TopKBrowser(source, labels, n)` gives the explorer itself.
    """
    browser = TopKBrowser(source, labels, n)
    browser.show()
    return browser.widget() if live_front_end() else None
