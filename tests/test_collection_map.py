"""A map of the collection: projections, neighbours, class separation, cached features and the hover page."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.preprocessing import normalize

import artlab.features
from artlab import models
from artlab.data import ArtCollection, load
from artlab.interpret import projection as pj
from artlab.models import ModelCard
from artlab.runs import IMAGENET, Network, Run

SIZE = 64


def clusters(n_per: int = 30, classes: int = 4, dim: int = 32, spread: float = 0.05,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Tight clusters around random positive centres (like pooled post-ReLU features), and their labels."""
    rng = np.random.default_rng(seed)
    centres = rng.random((classes, dim)) + 0.1
    labels = np.repeat(np.arange(classes), n_per)
    x = centres[labels] + spread * rng.standard_normal((len(labels), dim))
    return x, labels.astype(str)


@pytest.fixture(scope="module")
def synthetic_features(small_synthetic) -> np.ndarray:
    return pj.layer_features(IMAGENET, small_synthetic.table["path"].tolist(), image_size=SIZE, device="cpu")


# ---- projection -------------------------------------------------------------------------------
def test_pca_is_sklearns_pca_of_l2_normalised_rows():
    x = np.random.default_rng(1).random((40, 12))
    expected = PCA(n_components=2).fit_transform(normalize(x))
    np.testing.assert_allclose(pj.project(x, "pca"), expected, atol=1e-10)


def test_pca_first_axis_is_the_planted_direction():
    """Two clusters apart along one direction: the first axis splits them, the second does not."""
    rng = np.random.default_rng(2)
    base = rng.random(20) + 1.0
    direction = np.zeros(20)
    direction[3] = 1.0
    x = np.vstack([base + 0.02 * rng.standard_normal((25, 20)),
                   base + 1.5 * direction + 0.02 * rng.standard_normal((25, 20))])
    xy = pj.project(x, "pca")
    first, second = xy[:25, 0], xy[25:, 0]
    assert first.max() < second.min() or second.max() < first.min()
    assert abs(xy[:25, 0].mean() - xy[25:, 0].mean()) > 10 * abs(xy[:25, 1].mean() - xy[25:, 1].mean())


@pytest.mark.parametrize("method", pj.METHODS)
def test_projection_shape_and_determinism(method):
    x, _ = clusters(n_per=6, classes=3)  # 18 images: t-SNE's perplexity (30) must be clipped
    a, b = pj.project(x, method, seed=3), pj.project(x, method, seed=3)
    assert a.shape == (18, 2) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)


def test_projection_refuses_unknown_methods_and_nan_rows():
    x, _ = clusters(n_per=3, classes=2)
    with pytest.raises(ValueError, match="umap"):
        pj.project(x, "umap")
    x[1] = np.nan
    with pytest.raises(ValueError, match="unreadable"):
        pj.project(x)


# ---- neighbours -------------------------------------------------------------------------------
def test_neighbours_match_brute_force_cosine_and_exclude_the_query():
    x, labels = clusters(n_per=10, classes=3, spread=0.3, seed=4)
    paths = [f"img{i}.jpg" for i in range(len(x))]
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    cosine = unit @ unit[7]
    cosine[7] = -np.inf
    expected = np.argsort(-cosine, kind="stable")[:5]
    table = pj.neighbours(x, paths, 7, k=5, labels=pd.DataFrame({"path": paths, "style": labels}))
    assert table["path"].tolist() == [paths[i] for i in expected]
    np.testing.assert_allclose(table["score"], cosine[expected], atol=1e-12)
    assert table["rank"].tolist() == [1, 2, 3, 4, 5] and "img7.jpg" not in table["path"].tolist()
    assert table["style"].tolist() == [labels[i] for i in expected]
    by_vector = pj.neighbours(x, paths, x[7], k=1)  # a vector query is not excluded: it finds itself
    assert by_vector["path"].tolist() == ["img7.jpg"] and by_vector["score"][0] == pytest.approx(1.0)


def test_a_copy_of_an_image_finds_the_original_first(small_synthetic, synthetic_features, tmp_path):
    paths = small_synthetic.table["path"].tolist()
    copy = tmp_path / "renamed_copy.png"
    shutil.copyfile(paths[10], copy)
    vector = pj.image_feature(copy, IMAGENET, image_size=SIZE, device="cpu")
    table = pj.neighbours(synthetic_features, paths, vector, k=3, labels=small_synthetic.table)
    assert table["path"][0] == paths[10]
    assert table["score"][0] == pytest.approx(1.0, abs=1e-5)
    assert table["score"][1] < 0.999
    fig = pj.neighbours_figure(table, copy, label="style")
    assert len(fig.data) == 4
    captions = [a.text for a in fig.layout.annotations]
    assert captions[0] == "query: renamed_copy" and captions[1].startswith("1. 1.000")


# ---- separation -------------------------------------------------------------------------------
def test_separated_clusters_score_near_one_and_shuffled_labels_near_chance():
    x, labels = clusters(n_per=40, classes=4, spread=0.02)
    good = pj.separation(x, labels)
    assert good["silhouette"] > 0.9 and good["knn_accuracy"] == 1.0
    assert good["chance"] == 0.25 and good["classes"] == 4 and good["folds"] == 5
    shuffled = pj.separation(x, np.random.default_rng(0).permutation(labels))
    assert abs(shuffled["knn_accuracy"] - 0.25) < 0.12
    assert shuffled["silhouette"] < 0.1


def test_separation_leaves_out_missing_labels_and_single_image_classes():
    x, labels = clusters(n_per=8, classes=3, spread=0.02)
    labels = labels.astype(object)
    labels[0], labels[1] = None, "lonely"
    result = pj.separation(x, labels)
    assert result["images"] == 22 and result["left_out"] == 2 and result["knn_accuracy"] == 1.0
    with pytest.raises(ValueError, match="multi-label"):
        pj.separation(x, [("a", "b")] * len(x))
    table = pj.separation_table({"a": x, "b": x[::-1]}, labels)
    assert table["network"].tolist() == ["a", "b"] and table["images"].tolist() == [22, 22]


# ---- features from the cache ------------------------------------------------------------------
def test_second_call_reads_the_cache_without_running_the_network(small_synthetic, tmp_path, monkeypatch):
    monkeypatch.setenv("ARTLAB_CACHE", str(tmp_path))  # an empty cache: the first call must compute
    paths = small_synthetic.table["path"].tolist()[:24]
    calls = []
    real = artlab.features.extract

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(artlab.features, "extract", counting)
    first = pj.layer_features(IMAGENET, paths, image_size=SIZE, device="cpu")
    assert len(calls) == 1 and first.shape == (len(paths), 1280)

    def refuse(*args, **kwargs):
        raise AssertionError("the network ran although its features are cached")

    monkeypatch.setattr(artlab.features, "extract", refuse)
    np.testing.assert_array_equal(pj.layer_features(IMAGENET, paths, image_size=SIZE, device="cpu"), first)


def test_layer_and_source_are_checked_before_anything_runs(small_synthetic, tmp_path):
    paths = small_synthetic.table["path"].tolist()[:2]
    with pytest.raises(KeyError, match="features.18"):
        pj.layer_features(IMAGENET, paths, layer="layer4.1")
    with pytest.raises(FileNotFoundError, match="neither"):
        pj.layer_features(tmp_path / "no-such-run", paths)


def test_a_fine_tuned_run_is_a_source(small_synthetic, tmp_path):
    torch.manual_seed(0)
    model = models.build("mobilenet_v2", pretrained=False, num_classes=8)
    card = ModelCard(kind="network", arch="mobilenet_v2", tasks=("style",),
                     classes={"style": small_synthetic.classes("style")}, multi_label={"style": False},
                     image_size=SIZE)
    run = Run(tmp_path / "finetuned")
    run.save_model(model.state_dict(), card)
    source = Network.of(run.path)
    assert source.weights_id.startswith("run:") and len(source.weights_id) == 4 + 16
    assert (source.arch, source.image_size) == ("mobilenet_v2", SIZE)
    feats = pj.layer_features(run.path, small_synthetic.table["path"].tolist()[:4], layer="features.17",
                              device="cpu")
    assert feats.shape == (4, 320) and np.isfinite(feats).all()
    with pytest.raises(ValueError, match="not a resnet18"):
        Network.of(run.path, arch="resnet18")


# ---- map tables, figures and the hover page ---------------------------------------------------
def test_collection_map_is_tidy_and_joins_multi_labels(tmp_path):
    paths = [str(tmp_path / f"work{i}.jpg") for i in range(6)]
    table = pd.DataFrame({"path": paths, "split": ["train"] * 3 + ["test"] * 3,
                          "style": list("aabbcc"), "artist": [("x", "y"), ("x",), (), ("y",), ("x",), ("y", "z")]})
    collection = ArtCollection(table, {"style": False, "artist": True})
    x, _ = clusters(n_per=2, classes=3)
    x[2] = np.nan
    with pytest.warns(UserWarning, match="1 unreadable"):
        out = pj.collection_map(collection, x, color="style")
    assert out.columns.tolist() == ["path", "title", "style", "artist", "x", "y", "split"]
    assert out["title"].tolist() == ["work0", "work1", "work3", "work4", "work5"]
    assert out["artist"].tolist() == ["x, y", "x", "y", "x", "y, z"]
    assert out.attrs["unreadable"] == [paths[2]] and out.attrs["color"] == "style"
    with pytest.raises(KeyError, match="genre"):
        pj.collection_map(collection, x, color="genre")


def test_map_figure_has_a_trace_per_class_and_thumbnails_in_customdata(small_synthetic, synthetic_features,
                                                                       tmp_path):
    table = pj.collection_map(small_synthetic, synthetic_features, "pca", color="style")
    fig = pj.map_figure(table, title="synthetic")
    assert sorted(t.name for t in fig.data) == small_synthetic.classes("style")
    assert sum(len(t.x) for t in fig.data) == len(small_synthetic)
    trace = fig.data[0]
    first = trace.customdata[0]
    assert first[0] == table.loc[table["style"] == trace.name, "title"].iloc[0]
    assert first[-1].startswith("data:image/jpeg;base64,")
    assert "%{customdata[0]}" in trace.hovertemplate and "artist: %{customdata[2]}" in trace.hovertemplate
    plain = pj.map_figure(table, "medium", thumbnails=False)
    assert not any(str(v).startswith("data:image") for t in plain.data for row in t.customdata for v in row)
    page = pj.write_map_html(fig, tmp_path / "maps" / "synthetic.html")
    text = page.read_text()
    assert "plotly_hover" in text and "artlab-thumbnail" in text and 'src="plotly.min.js"' in text
    assert "{plot_id}" not in text and (tmp_path / "maps" / "plotly.min.js").stat().st_size > 1_000_000


def test_compare_maps_shares_colours_and_one_legend(small_synthetic, synthetic_features):
    pca = pj.collection_map(small_synthetic, synthetic_features, "pca")
    tsne = pj.collection_map(small_synthetic, synthetic_features, "tsne")
    fig = pj.compare_maps({"PCA": pca, "t-SNE": tsne}, color="style")
    assert len(fig.data) == 16 and sum(t.showlegend for t in fig.data) == 8
    colours = {(t.name, t.marker.color) for t in fig.data}
    assert len(colours) == 8 and {t.xaxis for t in fig.data} == {"x", "x2"}


# ---- a real collection ------------------------------------------------------------------------
def test_imagenet_features_separate_real_genres(genres_dir):
    """20 images per genre (sorted, every k-th), 96 px.

    Measured (MobileNetV2 features.18): kNN accuracy 0.64, cosine silhouette 0.03; chance 0.2 (0.52 at 64 px).
    """
    collection = load(genres_dir, layout="folders", task="genre")
    table = collection.table.sort_values("path", kind="stable")
    sample = pd.concat([group.iloc[:: max(1, len(group) // 20)].head(20) for _, group in table.groupby("genre")])
    feats = pj.layer_features(IMAGENET, sample["path"].tolist(), image_size=96, device="cpu")
    result = pj.separation(feats, sample["genre"].to_numpy())
    assert result["images"] == 100 and result["chance"] == 0.2
    assert result["knn_accuracy"] > 0.45
