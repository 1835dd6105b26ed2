"""The explorers, driven from code: a control changes what is shown, and nothing computed is computed again."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

from artlab import models
from artlab.interpret import RenderSettings, projection
from artlab.widgets import ArtworkInspector, ChannelExplorer, CollectionMap, TopKBrowser, live_front_end
from artlab.widgets.topk import EVERY_NETWORK


@pytest.fixture(scope="module")
def analysed(tuned_run):
    """A one-epoch fine-tuned run on the small synthetic collection and its top-k analysis."""
    from artlab.analysis import Comparison, analyze

    analysis = analyze(Comparison(tuned_run.path, what=("topk",), k=5, max_images=32,
                                  layers=["features.10", "features.17"]), out_dir=tuned_run.path / "analysis-topk")
    return tuned_run, analysis


def _control(explorer, description: str):
    box = explorer.widget()
    return next(c for c in box.children[0].children if c.description == description)


def test_channel_explorer(analysed):
    run, analysis = analysed
    explorer = ChannelExplorer(analysis, settings=RenderSettings(steps=2, size=32))
    assert explorer.layer == "features.17" and explorer.channel == explorer.most_changed()[0]
    changes = explorer.changes()
    assert changes[explorer.channel] == changes.max()
    first = explorer.view()
    assert explorer.computed["render"] == 2 and len(first) == 4  # renders, facts, two galleries
    facts = explorer.facts()["value"]
    assert "top-k images shared (%)" in facts.index and 0 <= facts["top-k images shared (%)"] <= 100
    other = explorer.most_changed()[1]
    _control(explorer, "channel").value = other  # the widget drives the state
    assert explorer.channel == other and explorer.computed["render"] == 4
    second = explorer.renders()
    _control(explorer, "channel").value = first_channel = explorer.most_changed()[0]
    assert explorer.channel == first_channel and explorer.computed["render"] == 4, "renders are not redone"
    assert not np.array_equal(second[explorer.names[1]], explorer.renders()[explorer.names[1]])
    _control(explorer, "layer").value = "features.10"
    assert explorer.layer == "features.10" and explorer.channel == explorer.most_changed("features.10")[0]
    assert explorer.computed["changes"] == 2
    with pytest.raises(KeyError, match="features.17"):
        explorer.select(layer="features.3")
    with pytest.raises(IndexError):
        explorer.select(channel=10_000)


def test_offline_parts_render_each_layer_in_one_batch_per_network(analysed, monkeypatch):
    """A page's states of the channel explorer: one render batch per layer and network, the views then drawn from
    the cache (no render of their own)."""
    import artlab.interpret.featurevis as fv
    from artlab.widgets.offline import Part

    _, analysis = analysed
    explorer = ChannelExplorer(analysis, settings=RenderSettings(steps=2, size=32, seed=11))
    batches: list[int] = []
    real = fv.optimise

    def counted(model, objective, batch, settings, *args, **kwargs):
        if settings.seed == 11:  # this explorer's, not the renders ahead of an earlier test's explorer
            batches.append(batch)
        return real(model, objective, batch, settings, *args, **kwargs)

    monkeypatch.setattr(fv, "optimise", counted)
    [part] = explorer.offline_parts(per_layer=2)
    assert isinstance(part, Part) and batches == [2] * (len(explorer.layers) * len(explorer.networks))
    part.drawn()
    assert batches == [2] * (len(explorer.layers) * len(explorer.networks)), "a view rendered again"


def test_topk_browser(analysed):
    """An explorer like the others: every network's gallery at first, one network's when picked, each drawn once."""
    _, analysis = analysed
    names = list(analysis.tops)
    browser = TopKBrowser(analysis, n=4)
    assert (browser.network, browser.layer, browser.channel) == (EVERY_NETWORK, "features.17", 0)
    assert [figure.layout.title.text for figure in browser.view()] == [f"{name}: features.17, channel 0"
                                                                      for name in names]
    browser.select(network=names[1], channel=300)
    (figure,) = browser.view()
    assert figure.layout.title.text == f"{names[1]}: features.17, channel 300"
    browser.select(layer="features.10")  # 64 channels: the channel becomes the layer's last
    assert browser.channel == 63 and browser.computed["gallery"] == len(names) + 1
    browser.select(network=EVERY_NETWORK, layer="features.17", channel=0)
    browser.view()
    assert browser.computed["gallery"] == len(names) + 1, "galleries already drawn are reused"
    with pytest.raises(KeyError, match="no network"):
        browser.select(network="nowhere")
    with pytest.raises(IndexError):
        browser.select(channel=10_000)
    _control(browser, "layer").value = "features.10"  # the live controls drive the same state
    _control(browser, "channel").value = 5
    assert (browser.layer, browser.channel) == ("features.10", 5)
    with pytest.raises(ValueError, match="no top-k lists"):
        TopKBrowser({})


def test_artwork_inspector(small_synthetic):
    networks = {"ImageNet": models.build("mobilenet_v2"), "random": models.build("resnet18", pretrained=False)}
    paths = small_synthetic.table["path"].tolist()[:3]
    inspector = ArtworkInspector(networks, paths, ["a", "b", "c"], image_size=64)
    view = inspector.view()
    assert inspector.computed == {"attribution": 2, "predictions": 2}
    predictions = view[1]
    assert set(predictions["network"]) == {"ImageNet", "random"} and len(predictions) == 10
    _control(inspector, "artwork").value = 2
    assert inspector.index == 2 and inspector.computed["attribution"] == 4
    _control(inspector, "method").value = "ig"
    assert inspector.method == "ig" and inspector.computed["attribution"] == 6
    maps = inspector.attributions()
    assert all(a.method == "ig" and a.map.shape == (64, 64) for a in maps.values())
    _control(inspector, "method").value = "gradcam"
    assert inspector.computed["attribution"] == 6, "maps already computed are reused"
    with pytest.raises(ValueError, match="unknown attribution method"):
        inspector.select(method="lime")


def test_explorers_compute_each_networks_part_side_by_side_as_each_alone(analysed, small_synthetic):
    """With two torch threads, a view's part by each network (the channel explorer's renders, the inspector's maps)
    is computed in two threads at once, one torch thread each: the same pixels and maps as each network alone."""
    import torch
    from PIL import Image

    from artlab.interpret import attribution as attr
    from artlab.interpret import featurevis as fv

    _, analysis = analysed
    channels = ChannelExplorer(analysis, settings=RenderSettings(steps=3, size=32, seed=13))
    paths = small_synthetic.table["path"].tolist()[:2]
    tuned = channels.networks[channels.names[1]]
    inspector = ArtworkInspector({"ImageNet": models.build("mobilenet_v2"), "tuned": tuned}, paths, image_size=64)
    threads, seen = torch.get_num_threads(), []
    real = models.side_by_side
    try:
        torch.set_num_threads(2)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(models, "side_by_side", lambda calls, stop=None: seen.append(len(calls)) or real(calls, stop))
            renders, maps = channels.renders(), inspector.attributions()
        torch.set_num_threads(1)
        for name, model in channels.networks.items():
            alone = fv.render_channels(model, channels.layer, [channels.channel], settings=channels.settings,
                                       cache=False, progress=False)[0]
            assert np.array_equal(renders[name], alone), name
        for name, model in inspector.networks.items():  # an image in memory: computed, never from the cache
            alone = attr.attribute(model, Image.open(paths[0]).convert("RGB"), "gradcam", image_size=64)
            assert np.array_equal(maps[name].map, alone.map), name
    finally:
        torch.set_num_threads(threads)
    assert seen == [2, 2] and channels.computed["render"] == 2 and inspector.computed["attribution"] == 2


def test_the_channel_explorers_renders_and_guesses_hand_every_network_one_stop_event(analysed, render_calls):
    """A click's renders (and a guess's renders ahead) cover every network, side by side, each render watching the
    stop event that `side_by_side` sets when the user interrupts."""
    _, analysis = analysed
    explorer = ChannelExplorer(analysis, settings=RenderSettings(steps=2, size=32, seed=17))
    rendered, handed = render_calls.rendered, render_calls.handed
    explorer.renders()
    assert len(rendered) == 2 and {stop for _, stop in rendered} == {handed[0]} and handed[0] is not None
    networks = {id(model) for model in explorer.networks.values()}
    assert {id(network) for network, _ in rendered} == networks
    rendered.clear()  # the next channel ahead: every network (on private copies), the prefetcher's stop event
    stop = threading.Event()
    explorer.guesses(channels=1)[0].compute(stop)
    assert len({id(network) for network, _ in rendered}) == 2 and {s for _, s in rendered} == {stop} == {handed[-1]}


def test_collection_map(small_synthetic):
    rng = np.random.default_rng(0)
    styles = small_synthetic.table["style"].to_numpy()
    codes = pd.factorize(styles)[0]
    separated = np.eye(8)[codes] * 5 + rng.normal(0, 0.1, (len(styles), 8))  # classes apart
    mixed = rng.normal(0, 1, (len(styles), 8))
    maps = {name: projection.collection_map(small_synthetic, x, "pca", "style")
            for name, x in (("tuned", separated), ("plain", mixed))}
    explorer = CollectionMap(maps, {"tuned": separated, "plain": mixed})
    view = explorer.view()
    assert explorer.color == "style" and len(view[0].data) == 8
    separation = view[2].set_index("network") if "network" in view[2] else view[2]
    assert len(separation) == 2
    neighbours = explorer.neighbours()
    assert (neighbours["style"] == styles[0]).all(), "in the separated space, the neighbours share the style"
    _control(explorer, "colour by").value = "medium"
    assert explorer.color == "medium" and len(explorer.figure().data) == 3
    _control(explorer, "artwork").value = 5
    assert explorer.selected == 5 and explorer.computed["neighbours"] == 2
    _control(explorer, "artwork").value = 0
    assert explorer.computed["neighbours"] == 2, "neighbours already found are reused"
    _control(explorer, "network").value = "plain"
    assert explorer.network == "plain"


def test_headless_shows_the_static_view(monkeypatch, capsys, small_synthetic):
    monkeypatch.setenv("ARTLAB_STATIC", "1")
    assert not live_front_end()
    monkeypatch.delenv("ARTLAB_STATIC")
    assert not live_front_end()  # no Jupyter kernel in pytest
    table = projection.collection_map(small_synthetic, np.random.default_rng(1).normal(size=(len(small_synthetic), 4)),
                                      "pca", "style")
    explorer = CollectionMap({"x": table}, {"x": np.random.default_rng(1).normal(size=(len(table), 4))})
    explorer.show()
    assert explorer.computed["map figure"] == 1 and explorer._widget is None


def test_static_views_show_table_cells_whole(capsys):
    """A run folder or file in an explorer's table is shown whole, not cut to pandas' 50 characters."""
    from artlab.widgets.base import display_all, small_table

    folder = "/home/someone/collections/" + "a-long-folder-name/" * 6 + "runs/sweeps/freeze-lr"
    display_all([small_table({"files": folder, "cells": 4})])
    assert folder in capsys.readouterr().out


def test_the_channel_explorer_renders_the_next_channels_ahead_and_the_user_comes_first(analysed, monkeypatch):
    """Prefetched renders are the very renders the user then gets (from the disk cache, computed once); a click
    on another channel stops the render in progress between two steps, and nothing runs after `settle`."""
    from artlab.interpret import featurevis as fv

    run, analysis = analysed
    settings = RenderSettings(steps=3, size=32, seed=7)
    explorer = ChannelExplorer(analysis, settings=settings)
    order = explorer.most_changed()
    explorer.view()
    guessed = [key for guess in explorer.guesses(channels=2) for key in guess.keys]
    assert guessed == [("render", (name, explorer.layer, c)) for c in order[1:3] for name in explorer.names]
    explorer.prefetch()
    explorer.view()  # the view shown, drawn again, leaves the renders ahead alone
    explorer.prefetcher.wait()
    assert explorer.prefetcher.done[:4] == guessed, "computed ahead in the order of the channel list"
    optimised = []
    monkeypatch.setattr(fv, "optimise", lambda *a, **k: optimised.append(a))
    explorer.select(channel=order[1])
    shown = explorer.renders()
    assert not optimised, "a prefetched render is read from the disk cache, not computed again"
    monkeypatch.undo()
    for name, model in explorer.networks.items():  # the same pixels as a render made in the foreground
        alone = fv.render_channels(model, explorer.layer, [order[1]], settings=settings, cache=False)[0]
        assert np.array_equal(shown[name], alone)

    started, steps = threading.Event(), []

    def slow(self, networks, layer, channel, stop):  # a guess that takes long, step by step, until told to stop
        started.set()
        while not stop.is_set():
            steps.append(channel)
            stop.wait(0.01)
        raise fv.Cancelled("stopped")

    monkeypatch.setattr(ChannelExplorer, "_render_ahead", slow)
    explorer.prefetch()
    assert started.wait(5)
    explorer.select(layer="features.10")  # computing the new layer's changes settles the background first
    count = len(steps)
    assert not explorer.prefetcher.busy, "the background is idle once the user's view computes"
    threading.Event().wait(0.05)
    assert len(steps) == count


def test_a_slow_view_says_at_once_that_it_computes_and_a_fast_one_does_not_flicker(analysed):
    import time

    from artlab.widgets.base import NOTICE_AFTER_S, Explorer

    class Slow(Explorer):
        title = "test explorer"
        delay = 0.0

        def controls(self):
            return []

        def view(self):
            time.sleep(self.delay)
            return []

    explorer = Slow()
    box = explorer.widget()
    seen = []
    explorer._notice.observe(lambda change: seen.append((time.perf_counter(), change["new"])), names="value")
    explorer.delay, start = 0.6, time.perf_counter()
    explorer.refresh()
    shown = [(t - start, text) for t, text in seen if text]
    assert shown and NOTICE_AFTER_S - 0.05 < shown[0][0] < 0.2, "the notice shows within 0.2 s"
    assert shown[0][1] == "Computing the test explorer's new view..."
    assert seen[-1][1] == "" and explorer._notice in box.children[0].children, "beside the controls, gone with the view"
    seen.clear()
    explorer.delay = 0.0
    explorer.refresh()
    time.sleep(NOTICE_AFTER_S + 0.1)
    assert not [text for _, text in seen if text], "a view drawn at once shows no notice"


def test_progress_bars_redraw_twice_a_second_at_most(monkeypatch):
    """A bar over 0.8 s of steps is drawn at its start, every REFRESH_S at most and at its end (at tqdm's 0.1 s:
    about 10 times), and still ends on the full count; a caller's own interval wins."""
    import io
    import time

    from artlab.progress import REFRESH_S, progress

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.delenv("ARTLAB_STATIC", raising=False)

    def draws(**kwargs) -> tuple[int, str, float]:
        out, started = io.StringIO(), time.monotonic()
        for _ in progress(range(40), file=out, disable=False, **kwargs):
            time.sleep(0.02)
        return out.getvalue().count("\r"), out.getvalue().rsplit("\r", 1)[-1], time.monotonic() - started

    count, last, took = draws()
    assert count <= 2 + took / REFRESH_S and "40/40" in last, (count, last, took)
    count, _, took = draws(mininterval=0.1)
    assert count > 2 + took / REFRESH_S, (count, took)
