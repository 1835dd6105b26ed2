"""The channel explorer: one channel of a network before and after fine-tuning, seen four ways.

Pick a layer and a channel (the most changed ones are offered first); see what each network's
channel responds to (renders), which artworks excite it most (top-k galleries from the analysis),
and its figures: how much its filter moved, how many top images the two networks share, and how
concentrated the classes among them are.
"""

from __future__ import annotations

import copy
import threading
from functools import partial

import numpy as np
import pandas as pd
import torch
from torch import nn

from artlab import models
from artlab.analysis import Analysis
from artlab.interpret import featurevis as fv
from artlab.runs import Network, Run
from artlab.widgets.base import Explorer, expect, small_table
from artlab.widgets.offline import Part
from artlab.widgets.prefetch import Guess
from artlab.widgets.topk import topk_gallery

#: Renders that take a few seconds per channel on a laptop CPU (the disk cache keeps them).
QUICK_RENDER = fv.RenderSettings(steps=128, size=96)


def _compared(analysis: Analysis) -> tuple[nn.Module, nn.Module]:
    """The two networks the analysis compared (loaded again only when it does not hold them)."""
    if len(analysis.networks) == 2:
        return tuple(analysis.networks.values())
    tuned = Network.of(Run(analysis.comparison.finetuned))
    return Network.of(analysis.comparison.pretrained, tuned.arch).build(), tuned.build()


class ChannelExplorer(Explorer):
    """State: `layer` and `channel`; renders are cached per (network, layer, channel) in memory and on disk."""

    title = "channel explorer"

    def __init__(self, analysis: Analysis, before: nn.Module | None = None, after: nn.Module | None = None,
                 settings: fv.RenderSettings = QUICK_RENDER, n_most_changed: int = 16,
                 device: torch.device | str = "cpu"):
        expect(analysis, Analysis, "ChannelExplorer", "an Analysis, as artlab.analyze(Comparison(run, ...)) returns it")
        super().__init__()
        if analysis.comparison is None:
            raise ValueError("this Analysis has no comparison: make it with artlab.analyze")
        comparison = analysis.comparison
        self.names = list(analysis.tops) or list(analysis.networks) or ["ImageNet", Run(comparison.finetuned).name]
        compared = (None, None) if before is not None and after is not None else _compared(analysis)
        self.networks = {self.names[0]: before if before is not None else compared[0],
                         self.names[1]: after if after is not None else compared[1]}
        self.analysis, self.settings, self.device, self.n_most_changed = analysis, settings, device, n_most_changed
        self._copies: dict[int, nn.Module] = {}  # the networks' copies that render ahead (`_render_ahead`)
        first = next(iter(analysis.tops.values()), None)
        self.layers = first.layers if first is not None else list(comparison.layers or [])
        if not self.layers:
            raise ValueError("no layers to explore: analyse with what=('topk',) (or give the comparison layers)")
        self.layer = self.layers[-1]
        self.channel = self.most_changed()[0]

    # ---- state ----------------------------------------------------------------------------------
    def changes(self, layer: str | None = None) -> np.ndarray:
        """Relative change of every channel's filter in `layer` (computed once per layer)."""
        layer = layer or self.layer
        return self.cached("changes", layer, lambda: fv.channel_changes(*self.networks.values(), layer))

    def most_changed(self, layer: str | None = None) -> list[int]:
        """The channels of `layer` whose filters moved most, most first."""
        order = np.argsort(-self.changes(layer), kind="stable")
        return order[: self.n_most_changed].tolist()

    def select(self, layer: str | None = None, channel: int | None = None) -> None:
        """Show another layer (its most changed channel unless `channel` is given) or channel."""
        if layer is not None:
            if layer not in self.layers:
                raise KeyError(f"no layer {layer!r} here; choose from {self.layers}")
            self.layer = layer
            self.channel = self.most_changed()[0] if channel is None else channel
        if channel is not None:
            count = len(self.changes())
            if not 0 <= channel < count:
                raise IndexError(f"{self.layer} has {count} channels; {channel} is out of range")
            self.channel = int(channel)
        self.refresh()

    # ---- what is shown ------------------------------------------------------------------------------
    def renders(self) -> dict[str, np.ndarray]:
        """Each network's render of the current channel (rendered once, the networks side by side, then from memory
        or the disk cache)."""
        stop = threading.Event()
        rendered = self.cached_each("render", {(name, self.layer, self.channel): partial(
            self._render, model, self.layer, self.channel, stop) for name, model in self.networks.items()}, stop)
        return {name: image for (name, _, _), image in rendered.items()}

    def _render(self, model: nn.Module, layer: str, channel: int, stop: threading.Event) -> np.ndarray:
        return fv.render_channels(model, layer, [channel], settings=self.settings, device=self.device, stop=stop)[0]

    def guesses(self, channels: int = 3) -> list[Guess]:
        """Renders of the next `channels` channels of the layer's list (most changed first) after the current one:
        where the user goes next from the dropdown. One guess per channel, its networks rendered side by side."""
        order = self.most_changed()
        ahead = order[order.index(self.channel) + 1:] if self.channel in order else order
        guesses = []
        for channel in ahead[:channels]:
            keys = tuple(("render", (name, self.layer, channel)) for name in self.networks
                         if not self.is_cached("render", (name, self.layer, channel)))
            if keys:  # every network, side by side (one from the disk cache in no time): off the kernel's main
                # thread, one torch thread each is twice as fast as one network on all of them
                guesses.append(Guess(keys, partial(self._render_ahead, list(self.networks.values()), self.layer,
                                                   channel)))
        return guesses

    def _render_ahead(self, networks: list[nn.Module], layer: str, channel: int, stop: threading.Event) -> None:
        """Render on private copies of `networks` (the same weights, so the same cache entries), side by side: a
        render copies the network it is given, and other code may use the explorer's networks meanwhile (another
        explorer, a notebook cell) and hang its hooks on them, which a copy made at that moment would carry."""
        for model in networks:
            if id(model) not in self._copies:
                self._copies[id(model)] = copy.deepcopy(model)
        models.side_by_side([partial(fv.render_channels, self._copies[id(model)], layer, [channel],
                                     settings=self.settings, device=self.device, progress=False, stop=stop)
                             for model in networks], stop)

    def facts(self) -> pd.DataFrame:
        """The channel's figures from the analysis tables: filter change, top-k overlap, class entropy."""
        rows: dict[str, object] = {"relative change of its filter": round(float(self.changes()[self.channel]), 4)}
        tables = self.analysis.tables
        here = {"layer": self.layer, "channel": self.channel}
        if "topk_overlap" in tables:
            overlap = tables["topk_overlap"]
            match = overlap[(overlap["layer"] == self.layer) & (overlap["channel"] == self.channel)]
            rows["top-k images shared (%)"] = float(match["overlap_pct"].iloc[0]) if len(match) else None
        if "topk_entropy" in tables:
            entropy = tables["topk_entropy"]
            for name in self.names:
                match = entropy[(entropy["model"] == name) & (entropy["layer"] == here["layer"])
                                & (entropy["channel"] == here["channel"])]
                if len(match):
                    rows[f"{name}: entropy of top-k classes (bits)"] = round(float(match["entropy_bits"].iloc[0]), 3)
                    rows[f"{name}: most frequent class"] = f"{match['top_class'].iloc[0]} " \
                                                           f"({match['top_class_share'].iloc[0]:.0%})"
        return small_table(rows)

    def view(self) -> list[object]:
        from artlab import plots

        renders = self.renders()
        shown: list[object] = [plots.image_grid(list(renders.values()),
                                                [f"{name}: render" for name in renders],
                                                f"{self.layer}, channel {self.channel}", columns=len(renders)),
                               self.facts()]
        for name, top in self.analysis.tops.items():
            title = f"{name}: the artworks that excite {self.layer} channel {self.channel} most"
            shown.append(topk_gallery(top, self.analysis.labels, self.layer, self.channel, n=10, title=title))
        return shown

    def offline_parts(self, per_layer: int = 3) -> list[Part]:
        """The `per_layer` most changed channels of every layer, rendered now in one batch per layer and network,
        the networks side by side (a batch of 3 costs far less than 3 renders of one; the views drawn below find them
        in the disk cache)."""
        chosen, stop = {layer: self.most_changed(layer)[:per_layer] for layer in self.layers}, threading.Event()
        for layer, wanted in chosen.items():
            models.side_by_side([partial(fv.render_channels, model, layer, wanted, settings=self.settings,
                                         device=self.device, stop=stop) for model in self.networks.values()], stop)
        states = [(layer, channel) for layer, wanted in chosen.items() for channel in wanted]
        channels = sorted({channel for _, channel in states})
        return [Part({"layer": self.layers, "channel (most changed)": channels},
                     lambda layer, channel: self.at(self.view, layer=layer, channel=channel), states)]

    def controls(self) -> list[object]:
        return self.linked_dropdowns(("layer", "layer", self.layers), ("channel", "channel", self._channel_options))

    def _channel_options(self) -> list[tuple[str, int]]:
        """The most changed channels first (labelled with their change), then every other one."""
        changes = self.changes()
        first = self.most_changed()
        rest = [c for c in range(len(changes)) if c not in set(first)]
        return [(f"{c} (changed {changes[c]:.1%})", c) for c in first] + [(str(c), c) for c in rest]
