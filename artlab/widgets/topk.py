"""Browse the maximal-activation images of any network, layer and channel (ipywidgets)."""

from __future__ import annotations

import numpy as np

from artlab.analysis import Analysis, TopK
from artlab.plots import gallery


def topk_gallery(top: TopK, labels: np.ndarray | list[str], layer: str, channel: int, n: int = 10,
                 title: str = ""):
    """A plotly gallery of one channel's top images, best first, captioned with their labels."""
    ids = top.indices[layer][channel].tolist()[:n]
    scores = top.scores[layer][channel].tolist()[:n]
    captions = [f"{labels[i]} ({s:.2f})" for i, s in zip(ids, scores)]
    return gallery([top.paths[i] for i in ids], captions, title or f"{layer}, channel {channel}")


def topk_browser(source: Analysis | dict[str, TopK], labels: np.ndarray | list[str] | None = None, n: int = 10):
    """Pick a network, a layer and a channel; see its top images.

    `source`: an Analysis that ran 'topk' (its top-k lists and labels are used), or a dict
    network name -> TopK together with `labels` (one class per image).
    """
    import ipywidgets as widgets
    from IPython.display import display

    from artlab.widgets.base import live_front_end

    if isinstance(source, Analysis):
        tops, labels = source.tops, source.labels if labels is None else labels
    else:
        tops = source
    if not tops or labels is None:
        raise ValueError("no top-k lists to browse: run analyze(..., what=('topk',)) first")
    first = next(iter(tops.values()))
    if not live_front_end():  # headless: the deepest layer's channel 0 of each network, as static figures
        for name, top in tops.items():
            display(topk_gallery(top, labels, first.layers[-1], 0, n, f"{name}: {first.layers[-1]}, channel 0"))
        return None
    network = widgets.Dropdown(options=list(tops), description="network")
    layer = widgets.Dropdown(options=first.layers, value=first.layers[-1], description="layer")
    channel = widgets.BoundedIntText(value=0, min=0, max=len(first.indices[first.layers[-1]]) - 1,
                                     description="channel")
    output = widgets.Output()

    def redraw(_change=None) -> None:
        channel.max = len(tops[network.value].indices[layer.value]) - 1
        with output:
            output.clear_output(wait=True)
            topk_gallery(tops[network.value], labels, layer.value, int(channel.value), n,
                         f"{network.value}: {layer.value}, channel {channel.value}").show()

    for control in (network, layer, channel):
        control.observe(redraw, names="value")
    redraw()
    box = widgets.VBox([widgets.HBox([network, layer, channel]), output])
    display(box)
    return box
