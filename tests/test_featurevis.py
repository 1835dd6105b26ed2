"""Feature visualisation: renders that excite their channel, batched like single renders, cached, model restored."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from artlab import models
from artlab.interpret import featurevis as fv


@pytest.fixture(scope="module")
def pretrained():
    return models.build("mobilenet_v2").eval()


def _response(model: torch.nn.Module, images: torch.Tensor, layer: str, channels: list[int]) -> np.ndarray:
    """The spatial mean of each image's channel (image i, channels[i]) on normalised inputs."""
    with torch.no_grad(), models.Taps(model, [layer], pool="avg") as taps:
        pooled = taps(fv._normalise(images, models.arch_of(model)))[layer]
    return pooled[torch.arange(len(images)), torch.as_tensor(channels)].numpy()


@pytest.mark.slow
def test_renders_excite_their_channel_more_than_any_real_artwork_and_than_pixel_renders(pretrained, genres_dir):
    from artlab.data import ImageDataset, load

    layer, channels, size = "features.10", [0, 7, 21, 40], 64
    settings = fv.RenderSettings(steps=96, size=size, seed=0)
    fft = torch.from_numpy(fv.render_channels(pretrained, layer, channels, settings=settings, cache=False))
    pixel = torch.from_numpy(fv.render_channels(pretrained, layer, channels, cache=False,
                                                settings=fv.RenderSettings(steps=96, size=size, param="pixel")))
    as_float = [t.permute(0, 3, 1, 2).float() / 255 for t in (fft, pixel)]
    rendered, pixel_rendered = (_response(pretrained, x, layer, channels) for x in as_float)
    paths = load(str(genres_dir)).table["path"].tolist()[::4]  # about 270 real paintings
    dataset = ImageDataset(paths, None, size, models.input_transform(pretrained, size), keep=False)
    natural = torch.stack([dataset[i][0] for i in range(len(dataset))])
    with torch.no_grad(), models.Taps(pretrained, [layer], pool="avg") as taps:
        best_natural = taps(natural)[layer][:, channels].max(dim=0).values.numpy()
    assert (rendered > best_natural).all(), (rendered, best_natural)
    assert (rendered > pixel_rendered).all(), (rendered, pixel_rendered)


def test_a_batch_renders_each_channel_as_it_would_alone_and_is_deterministic(pretrained):
    settings = fv.RenderSettings(steps=48, size=48, seed=3)
    batch = fv.render_channels(pretrained, "features.4", [2, 9, 5], settings=settings, cache=False)
    alone = fv.render_channels(pretrained, "features.4", [9], settings=settings, cache=False)
    assert batch.shape == (3, 48, 48, 3) and batch.dtype == np.uint8
    in_batch, by_itself = (_response(pretrained, torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255, "features.4",
                                     [9]) for x in (batch[1:2], alone))
    assert in_batch == pytest.approx(by_itself, rel=0.05)  # measured: within 1%
    first = fv.render_channels(pretrained, "features.4", [2], settings=settings, cache=False)
    assert _response(pretrained, torch.from_numpy(first).permute(0, 3, 1, 2).float() / 255, "features.4", [2]) > \
        _response(pretrained, torch.from_numpy(alone).permute(0, 3, 1, 2).float() / 255, "features.4", [2])
    again = fv.render_channels(pretrained, "features.4", [2, 9, 5], settings=settings, cache=False)
    assert np.array_equal(batch, again)
    other_seed = fv.render_channels(pretrained, "features.4", [2], cache=False,
                                    settings=fv.RenderSettings(steps=12, size=48, seed=4))
    assert not np.array_equal(batch[0], other_seed[0])


def test_renders_are_cached_per_channel(pretrained, monkeypatch):
    settings = fv.RenderSettings(steps=4, size=32, seed=1)
    first = fv.render_channels(pretrained, "features.2", [1, 3], settings=settings)
    asked = []
    real = fv.optimise

    def spy(model, objective, batch, *args, **kwargs):
        asked.append(batch)
        return real(model, objective, batch, *args, **kwargs)

    monkeypatch.setattr(fv, "optimise", spy)
    again = fv.render_channels(pretrained, "features.2", [3, 1, 6], settings=settings)
    assert asked == [1], "only the new channel is optimised"
    assert np.array_equal(again[0], first[1]) and np.array_equal(again[1], first[0])


def test_the_model_is_frozen_during_a_render_and_restored_after():
    model = models.build("mobilenet_v2", pretrained=False).train()
    model.features[0].requires_grad_(False)
    before = copy.deepcopy(model.state_dict())
    fv.optimise(model, fv.channel("features.3", 1), 1, fv.RenderSettings(steps=2, size=32), progress=False)
    assert model.training and model.features[5].training
    assert not any(p.requires_grad for p in model.features[0].parameters())
    assert all(p.requires_grad for p in model.features[1].parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BatchNorm statistics too
    assert all(p.grad is None for p in model.parameters())


def test_layer_names_are_checked(pretrained):
    with pytest.raises(KeyError, match="features.17"):
        fv.render_channels(pretrained, "classifier.1", [0], settings=fv.RenderSettings(steps=1, size=32))


def test_objectives_combine(pretrained):
    acts = {"l": torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)}
    a, b = fv.channel("l", [0, 1]), fv.channel("l", 2)
    combined = a - 0.5 * b
    expected = acts["l"][[0, 1], [0, 1]].mean((1, 2)) - 0.5 * acts["l"][:, 2].mean((1, 2))
    assert torch.allclose(combined.score(acts, None), expected)
    assert combined.layers == ("l",) and "channel(l,2)" in combined.describe
    assert torch.allclose(fv.neuron("l", 1).score(acts, None), acts["l"][:, 1, 1, 1])
    assert torch.allclose(fv.whole_layer("l").score(acts, None), acts["l"].pow(2).mean((1, 2, 3)))
    logits = torch.tensor([[1.0, 5.0], [3.0, 2.0]])
    assert fv.class_logit([1, 0]).score({}, logits).tolist() == [5.0, 3.0]
    same = torch.ones(3, 2, 4, 4)
    assert torch.allclose(fv.diversity("l").score({"l": same}, None), torch.full((3,), -1.0))
    # a class-logit render runs the whole network (no early stop)
    image = fv.optimise(pretrained, fv.class_logit(281), 1, fv.RenderSettings(steps=2, size=32), progress=False)
    assert image.shape == (1, 3, 32, 32)


def test_most_changed_channels_by_hand(pretrained):
    tuned = copy.deepcopy(pretrained)
    conv = fv.last_convolution(tuned, "features.10")
    with torch.no_grad():
        conv.weight[5] *= 3.0
        conv.weight[2] *= 1.5
    assert fv.most_changed_channels(pretrained, tuned, "features.10", n=2) == [5, 2]
    shown = fv.before_after(pretrained, tuned, "features.10", n=2, settings=fv.RenderSettings(steps=2, size=32))
    assert shown.channels == [5, 2] and set(shown.images) == {"ImageNet", "fine-tuned"}
    assert len(shown.figure().data) == 4


def test_two_networks_render_side_by_side_each_as_it_would_alone(pretrained):
    """With two torch threads, `before_after` renders the two networks at once on one thread each: the pixels are
    those of each network rendered alone on one thread (nothing shared between the two renders)."""
    tuned = copy.deepcopy(pretrained)
    with torch.no_grad():
        fv.last_convolution(tuned, "features.10").weight.mul_(1.5)
    settings, channels = fv.RenderSettings(steps=4, size=32, seed=11), [3, 7]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = [fv.render_channels(model, "features.10", channels, settings=settings, cache=False, progress=False)
                 for model in (pretrained, tuned)]
        torch.set_num_threads(2)
        shown = fv.before_after(pretrained, tuned, "features.10", channels, settings=settings)
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(shown.images["ImageNet"], alone[0]) and np.array_equal(shown.images["fine-tuned"], alone[1])
    assert not np.array_equal(alone[0], alone[1])


def test_a_render_shows_its_progress_bar_before_copying_the_network(pretrained, monkeypatch):
    """A click on an unrendered channel shows its bar at once, not after the network's copy (0.1 s and more)."""
    events, bar, copy_network = [], fv.progress_bar, models.for_inference
    monkeypatch.setattr(fv, "progress_bar", lambda *args, **kwargs: events.append("bar") or bar(*args, **kwargs))
    monkeypatch.setattr(models, "for_inference", lambda *args, **kwargs: events.append("copy") or copy_network(
        *args, **kwargs))
    fv.optimise(pretrained, fv.channel("features.3", [0]), 1, fv.RenderSettings(steps=1, size=32), progress=False)
    assert events == ["bar", "copy"]


def test_channel_filters_are_found_only_where_they_exist():
    resnet = models.build("resnet18", pretrained=False)
    assert fv.last_convolution(resnet, "layer2.0") is resnet.layer2[0].conv2  # not the downsample shortcut
    with pytest.raises(ValueError, match="give the channels explicitly"):
        fv.last_convolution(models.build("vgg16", pretrained=False), "features.3")  # a ReLU
    with pytest.raises(ValueError, match="googlenet"):
        fv.last_convolution(models.build("googlenet", pretrained=False), "inception4a")  # a concatenation


def test_before_after_renders_both_networks_side_by_side_watching_one_stop_event(pretrained, render_calls):
    """Both renders watch the stop event that `side_by_side` sets when one fails or the user interrupts."""
    tuned = copy.deepcopy(pretrained)
    shown = fv.before_after(pretrained, tuned, "features.3", channels=[0, 1])
    assert [model for model, _ in render_calls.rendered] == [pretrained, tuned]
    handed = render_calls.handed[0]
    assert handed is not None and {stop for _, stop in render_calls.rendered} == {handed}
    assert list(shown.images) == ["ImageNet", "fine-tuned"]
