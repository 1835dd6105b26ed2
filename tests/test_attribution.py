"""Attribution maps (Captum): the caller's network stays untouched, maps point at the cat, targets resolve."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from PIL import Image
from torch import nn

from artlab import models
from artlab.interpret import attribution as attr
from artlab.models import ModelCard

CATS = {"Egyptian cat", "tabby", "tiger cat"}


@pytest.fixture(scope="module")
def imagenet_net():
    """Pretrained MobileNetV2, shared by the read-only tests of this module."""
    return models.build("mobilenet_v2")


def cat_canvas(side: str) -> np.ndarray:
    """A 224 x 224 neutral grey canvas with scikit-image's chelsea cat (112 x 112) in its left or right half."""
    skimage_data = pytest.importorskip("skimage.data")
    cat = np.asarray(Image.fromarray(skimage_data.chelsea()).resize((112, 112), Image.BILINEAR))
    canvas = np.full((224, 224, 3), 128, np.uint8)
    columns = slice(0, 112) if side == "left" else slice(112, 224)
    canvas[56:168, columns] = cat
    return canvas


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def inplace_flags(model: nn.Module) -> list[bool]:
    """The `inplace` flag of every module that has one (activations, dropout)."""
    return [m.inplace for m in model.modules() if isinstance(getattr(m, "inplace", None), bool)]


def activations_inplace(model: nn.Module) -> list[bool]:
    return [m.inplace for m in model.modules() if isinstance(m, nn.ReLU | nn.ReLU6)]


@pytest.mark.parametrize(("arch", "pretrained"), [("mobilenet_v2", True), ("resnet18", False)])
def test_all_methods_give_finite_maps_and_leave_the_callers_model_untouched(arch, pretrained):
    model = models.build(arch, pretrained=pretrained)  # in train mode, as built: a forward would move BN stats
    before, flags = snapshot(model), inplace_flags(model)
    activations = activations_inplace(model)
    assert activations and all(activations), "torchvision's activations are in-place: the case guarded against"
    picture = (np.random.default_rng(0).random((60, 80, 3)) * 255).astype(np.uint8)
    for method in attr.METHODS:
        result = attr.attribute(model, picture, method, image_size=48, n_steps=16)
        assert result.map.shape == (48, 48) and result.image.shape == (48, 48, 3), method
        assert result.map.dtype == np.float32 and np.isfinite(result.map).all(), method
        assert np.abs(result.map).max() > 0, method
        if method == "gradcam":
            assert result.map.min() >= 0
    assert model.training and inplace_flags(model) == flags
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())


def test_attribution_copy_turns_every_inplace_activation_off():
    model = models.build("mobilenet_v2", pretrained=False)
    network = attr.attribution_copy(model)
    assert not network.training and not any(inplace_flags(network))
    assert all(activations_inplace(model)) and model.training
    assert all(p.requires_grad for p in model.parameters())
    assert network.features[0][0].weight.data_ptr() != model.features[0][0].weight.data_ptr()


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("method", ["gradcam", "ig"])
def test_maps_put_most_of_their_mass_on_the_cat(imagenet_net, method, side):
    canvas = cat_canvas(side)
    result = attr.attribute(imagenet_net, canvas, method, image_size=224, n_steps=16)
    assert result.target in CATS and result.target == result.prediction, result.target
    assert np.array_equal(result.image, canvas)  # nothing cropped away: the map covers the whole canvas
    mass = np.abs(result.map)
    cat_half = mass[:, :112] if side == "left" else mass[:, 112:]
    share = cat_half.sum() / mass.sum()
    # measured (mobilenet_v2 predicts "Egyptian cat", 48% left / 58% right): gradcam 0.87 left / 0.85 right,
    # ig (16 steps, abs) 0.93 / 0.92; occlusion (not asserted) 0.72 / 0.83
    assert share > 0.5, f"{method} puts only {share:.0%} of its mass on the cat"


def test_target_by_name_and_by_index_give_the_same_map(imagenet_net):
    canvas = cat_canvas("left")
    by_name = attr.attribute(imagenet_net, canvas, target="tabby", image_size=96)
    by_index = attr.attribute(imagenet_net, canvas, target=models.imagenet_classes().index("tabby"), image_size=96)
    assert by_name.target == by_index.target == "tabby" and by_name.target_index == 281
    np.testing.assert_array_equal(by_name.map, by_index.map)
    from_tensor = attr.attribute(imagenet_net, torch.from_numpy(canvas).permute(2, 0, 1), target="tabby", image_size=96)
    np.testing.assert_array_equal(from_tensor.map, by_name.map)
    other = attr.attribute(imagenet_net, canvas, target="carton", image_size=96)
    assert not np.array_equal(other.map, by_name.map) and other.score < by_name.score


def test_unknown_targets_are_refused_with_valid_names(imagenet_net):
    picture = np.full((40, 40, 3), 100, np.uint8)
    with pytest.raises(KeyError, match="tabby"):
        attr.attribute(imagenet_net, picture, target="tabbby", image_size=40)
    with pytest.raises(KeyError, match="tench"):
        attr.attribute(imagenet_net, picture, target="no such class at all", image_size=40)
    with pytest.raises(IndexError, match="1000 outputs"):
        attr.attribute(imagenet_net, picture, target=1000, image_size=40)
    with pytest.raises(ValueError, match="several outputs"):
        attr.resolve_target(["a", "b", "a"], "a")  # a card may repeat a name: the index is then needed
    with pytest.raises(ValueError, match="gradcam"):
        attr.attribute(imagenet_net, picture, method="saliency", image_size=40)
    with pytest.raises(KeyError, match="features.18"):
        attr.attribute(imagenet_net, picture, layer="features.99", image_size=40)


def test_gradcam_on_a_chosen_layer(imagenet_net):
    canvas = cat_canvas("left")
    deep = attr.attribute(imagenet_net, canvas, image_size=96)
    middle = attr.attribute(imagenet_net, canvas, layer="features.7", image_size=96)
    assert middle.map.shape == deep.map.shape == (96, 96) and not np.allclose(middle.map, deep.map)


def test_top_predictions_of_an_imagenet_network(imagenet_net, tmp_path):
    path = tmp_path / "cat.png"
    Image.fromarray(cat_canvas("left")).save(path)
    table = attr.top_predictions(imagenet_net, path, k=3, image_size=224)
    assert list(table.columns[:2]) == ["class", "probability"] and len(table) == 3
    assert table["class"].iloc[0] in CATS and table["probability"].is_monotonic_decreasing
    assert table["probability"].sum() <= 1.0 + 1e-6


@pytest.fixture
def tagger():
    """A multi-label network with a card (3 tags, 64 px) whose head asserts tags 'a' and 'c'."""
    torch.manual_seed(0)
    model = models.build("mobilenet_v2", pretrained=False, num_classes=3)
    models.attach_card(model, ModelCard(kind="network", arch="mobilenet_v2", tasks=("tags",),
                                        classes={"tags": ["a", "b", "c"]}, multi_label={"tags": True}, image_size=64))
    with torch.no_grad():
        models.head_module(model).bias.copy_(torch.tensor([20.0, -20.0, 19.0]))
    return model


def test_multi_label_network_gets_one_map_per_asserted_label(tagger):
    picture = Image.new("RGB", (80, 70), (90, 140, 60))
    results = attr.attribute_positive_labels(tagger, picture)
    assert [r.target for r in results] == ["a", "c"] and [r.target_index for r in results] == [0, 2]
    assert all(r.score > 0.5 and r.map.shape == (64, 64) for r in results)  # the card's image size
    assert attr.attribute_positive_labels(tagger, picture, threshold=1.0) == []
    table = attr.top_predictions(tagger, picture)
    assert table["class"].tolist() == ["a", "c", "b"] and table["probability"].sum() > 1.5  # sigmoids
    assert attr.attribute(tagger, picture, target="c").target_index == 2
    with pytest.raises(KeyError, match="'a', 'b', 'c'"):
        attr.attribute(tagger, picture, target="d")
    with pytest.raises(ValueError, match="not multi-label"):
        attr.attribute_positive_labels(models.build("resnet18", pretrained=False), picture)


def test_overlay_and_compare_figures(imagenet_net, tagger):
    picture = cat_canvas("left")
    imagenet = attr.attribute(imagenet_net, picture, image_size=64)
    tuned = attr.attribute(tagger, picture, target="b")
    fig = attr.overlay_figure(imagenet, opacity=0.3)
    assert [type(t) for t in fig.data] == [go.Image, go.Heatmap]
    assert fig.data[1].opacity == 0.3 and np.asarray(fig.data[1].z).shape == (64, 64)
    both = attr.compare_figure({"ImageNet": imagenet, "fine-tuned": tuned}, opacity=0.7)
    assert [type(t) for t in both.data] == [go.Image, go.Heatmap] * 2
    assert all(t.opacity == 0.7 for t in both.data if isinstance(t, go.Heatmap))
    titles = [a.text for a in both.layout.annotations]
    assert titles[0].startswith("ImageNet: predicts ") and f"{imagenet.prediction_score:.0%}" in titles[0]
    assert titles[1].startswith("fine-tuned: predicts a (") and "map for b" in titles[1]
    assert max(np.abs(np.asarray(t.z)).max() for t in both.data if isinstance(t, go.Heatmap)) == pytest.approx(1.0)
