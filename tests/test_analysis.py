"""Analyses of what fine-tuning changed, each against a direct brute-force computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from artlab import models
from artlab.analysis.cka import cka_of_features, linear_cka
from artlab.analysis.options import CkaOptions, PassOptions
from artlab.analysis.params import filter_changes, layer_changes, most_changed


# ---- CKA: the direct full-matrix computation (Gram matrices, as in Kornblith et al.'s notebook) -----
def _gram(x):
    return x @ x.T


def _center(gram, unbiased):
    gram = gram.copy()
    if unbiased:
        n = len(gram)
        np.fill_diagonal(gram, 0)
        means = gram.sum(0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        gram -= means[:, None]
        gram -= means[None, :]
        np.fill_diagonal(gram, 0)
    else:
        means = gram.mean(0)
        means -= means.mean() / 2
        gram -= means[:, None]
        gram -= means[None, :]
    return gram


def direct_cka(x, y, debiased):
    kx, ky = _center(_gram(x), debiased), _center(_gram(y), debiased)
    hsic = (kx.ravel() @ ky.ravel())
    return hsic / np.sqrt((kx.ravel() @ kx.ravel()) * (ky.ravel() @ ky.ravel()))


@pytest.mark.parametrize("debiased", [False, True])
def test_streaming_cka_equals_direct_computation(debiased):
    rng = np.random.default_rng(0)
    x = np.maximum(rng.normal(1.0, 2.0, (37, 12)), 0)  # ReLU-like, far from zero mean
    y = np.tanh(x @ rng.normal(size=(12, 20))) + 0.3 * rng.normal(size=(37, 20)) + 5
    assert cka_of_features(x, y, debiased, batch_size=5) == pytest.approx(direct_cka(x, y, debiased), rel=1e-9)


def test_a_cka_matrix_of_two_sides_equals_direct_computation_pair_by_pair():
    """Every pair of a matrix between 2 layers of X and 3 of Y, of other widths, against the brute-force CKA (each
    pair's own self-similarities: a matrix computes them once per layer)."""
    import itertools

    from artlab.analysis.cka import StreamingCKA

    rng = np.random.default_rng(3)
    xs = [np.maximum(rng.normal(1.0, 2.0, (29, w)), 0) for w in (6, 11)]
    ys = [np.tanh(xs[0] @ rng.normal(size=(6, w))) + 0.5 * rng.normal(size=(29, w)) + 2 for w in (4, 9, 13)]
    pairs = list(itertools.product(range(2), range(3)))
    cka = StreamingCKA([6, 11], [4, 9, 13], pairs, torch.device("cpu"))
    for start in range(0, 29, 8):
        cka.update([torch.as_tensor(x[start:start + 8]) for x in xs], [torch.as_tensor(y[start:start + 8]) for y in ys])
    rows = {(r["a"], r["b"]): r for r in cka.result()}
    assert sorted(rows) == pairs
    for a, b in pairs:
        assert rows[a, b]["cka"] == pytest.approx(direct_cka(xs[a], ys[b], False), rel=1e-9), (a, b)
        assert rows[a, b]["cka_debiased"] == pytest.approx(direct_cka(xs[a], ys[b], True), rel=1e-9), (a, b)


def test_cka_known_values():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 8))
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert cka_of_features(x, 3 * x @ q + 7) == pytest.approx(1.0)  # invariant to rotation, scale, shift
    assert cka_of_features(x, x, debiased=True) == pytest.approx(1.0)
    independent = cka_of_features(rng.normal(size=(2000, 4)), rng.normal(size=(2000, 4)), debiased=True)
    assert abs(independent) < 0.02


def test_cka_needs_four_images():
    with pytest.raises(ValueError, match="at least 4 images"):
        cka_of_features(np.ones((3, 2)), np.ones((3, 2)))


def test_network_cka_against_direct_computation_and_random_baseline(small_synthetic):
    from artlab.features import extract

    paths = small_synthetic.table["path"].tolist()[::4][:24]
    layers = ["features.2", "features.9", "features.16"]
    pretrained = models.build("mobilenet_v2")
    torch.manual_seed(0)
    random_net = models.build("mobilenet_v2", pretrained=False)
    table = linear_cka(pretrained, random_net, paths, layers, options=PassOptions(image_size=64, batch_size=5))
    feats_a = extract(pretrained, paths, layers, 64, torch.device("cpu"))
    feats_b = extract(random_net, paths, layers, 64, torch.device("cpu"))
    for row in table.itertuples():
        expected = direct_cka(feats_a[row.layer_a].astype(np.float64), feats_b[row.layer_b].astype(np.float64), False)
        assert row.cka == pytest.approx(expected, rel=1e-5)
    small = PassOptions(image_size=64)
    itself = linear_cka(pretrained, pretrained, paths, layers, cka=CkaOptions(pool="grid", grid=2), options=small)
    assert itself["cka"].tolist() == pytest.approx([1.0] * 3)
    matrix = linear_cka(pretrained, pretrained, paths, layers, cross=True, options=small)
    assert len(matrix) == 9
    square = matrix.pivot(index="layer_a", columns="layer_b", values="cka").to_numpy()
    assert np.allclose(square, square.T) and np.allclose(np.diag(square), 1)
    with pytest.raises(ValueError, match="grid"):
        linear_cka(pretrained, pretrained, paths[:4], ["features.1"], cka=CkaOptions(pool="flatten"),
                   options=PassOptions(image_size=96))


# ---- parameter space ------------------------------------------------------------------------------------
def test_filter_changes_by_hand():
    torch.manual_seed(0)
    before = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))
    after = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))
    after.load_state_dict(before.state_dict())
    with torch.no_grad():
        after[0].weight[1] *= 2  # filter 1: relative change 1, correlation 1
        after[0].weight[3] = -after[0].weight[3]  # filter 3: relative change 2, correlation -1
    filters = filter_changes(before, after, layers=("0", "2"))
    first = filters[filters["layer"] == "0"].set_index("filter")
    assert first.loc[[0, 2], "relative_change"].tolist() == [0, 0]
    assert first.loc[1, "relative_change"] == pytest.approx(1.0) and first.loc[1, "pearson"] == pytest.approx(1.0)
    assert first.loc[3, "relative_change"] == pytest.approx(2.0) and first.loc[3, "pearson"] == pytest.approx(-1.0)
    w = before[0].weight.detach().double()
    assert first.loc[3, "frobenius"] == pytest.approx(float((2 * w[3]).norm()))
    assert most_changed(filters, 2)["filter"].tolist() == [3, 1]
    layers = layer_changes(before, after, ("0", "2")).set_index("layer")
    w0, w1 = before[0].weight.detach(), after[0].weight.detach()
    expected = float((w1 - w0).abs().mean() / w0.abs().mean())
    assert layers.loc["0", "relative_change"] == pytest.approx(expected)
    assert layers.loc["2", "relative_change"] == 0


def test_filter_changes_refuse_different_architectures():
    with pytest.raises(ValueError, match="one architecture"):
        filter_changes(models.build("mobilenet_v2", pretrained=False),
                       models.build("resnet18", pretrained=False))


def test_parameter_tables_are_tidy():
    a, b = models.build("mobilenet_v2"), models.build("mobilenet_v2")
    with torch.no_grad():
        b.features[17].conv[0][0].weight.mul_(1.5)
    table = layer_changes(a, b, models.arch("mobilenet_v2").layers)
    assert isinstance(table, pd.DataFrame) and len(table) == 52  # MobileNetV2 has 52 convolutions
    changed = table[table["relative_change"] > 0]
    assert changed["layer"].tolist() == ["features.17.conv.0.0"] and changed["block"].tolist() == ["features.17"]
    assert changed["relative_change"].iloc[0] == pytest.approx(0.5)


# ---- maximal-activation images -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def topk_setup(small_synthetic):
    from artlab.analysis.topk import top_images
    from artlab.features import extract

    collection = small_synthetic.subset(np.arange(len(small_synthetic)) % 3 == 0)  # 48 images
    paths = collection.table["path"].tolist()
    layers = ["features.1", "features.7", "features.17", "features.18"]
    pretrained = models.build("mobilenet_v2")
    torch.manual_seed(0)
    other = models.build("mobilenet_v2", pretrained=False)
    k = 10
    tops = [top_images(net, paths, layers, k=k, image_size=64, batch_size=7) for net in (pretrained, other)]
    full = [extract(net, paths, layers, 64, torch.device("cpu"), batch_size=7, pool="relu_avg")
            for net in (pretrained, other)]
    return collection, layers, k, tops, full


def _brute_top(scores: np.ndarray, k: int) -> list[list[int]]:
    """Per channel, the k best image indices: highest score first, lower index first among equals."""
    n = len(scores)
    return [list(np.lexsort((np.arange(n), -scores[:, c]))[:k]) for c in range(scores.shape[1])]


def test_streaming_top_k_equals_brute_force(topk_setup):
    _, layers, k, tops, full = topk_setup
    for top, activations in zip(tops, full):
        for layer in layers:
            expected = _brute_top(activations[layer], k)
            assert top.indices[layer].tolist() == expected, layer
            best = np.take_along_axis(activations[layer].T, np.array(expected), axis=1)
            assert top.scores[layer].numpy() == pytest.approx(best, rel=1e-6, abs=1e-7)


def test_overlap_entropy_and_dead_kernels_by_hand(topk_setup):
    from collections import Counter

    from scipy.stats import entropy

    from artlab.analysis.topk import class_entropy, dead_kernels, overlap

    collection, layers, k, tops, full = topk_setup
    shared = overlap(*tops)
    labels = collection.table["style"].to_numpy()
    concentration = class_entropy(tops[0], labels)
    dead = dead_kernels(tops[1]).set_index("layer")
    for layer in layers:
        a, b = _brute_top(full[0][layer], k), _brute_top(full[1][layer], k)
        mine = shared[shared["layer"] == layer]["overlap_pct"].tolist()
        assert mine == pytest.approx([100 * len(set(x) & set(y)) / k for x, y in zip(a, b)])
        ent = concentration[concentration["layer"] == layer]["entropy_bits"].to_numpy()
        hand = [entropy(list(Counter(labels[ids]).values()), base=2) for ids in a]
        assert ent == pytest.approx(hand)
        never_positive = np.flatnonzero(full[1][layer].max(axis=0) <= 0).tolist()
        assert dead.loc[layer, "dead_channels"] == never_positive


def test_top_k_limits(small_synthetic):
    from artlab.analysis.topk import top_images

    net = models.build("mobilenet_v2")
    with pytest.raises(ValueError, match="between 1 and 1000"):
        top_images(net, small_synthetic.table["path"].tolist()[:5], ["features.1"], k=1001)
    top = top_images(net, small_synthetic.table["path"].tolist()[:5], ["features.1"], k=100, image_size=64)
    assert top.k == 5 and top.indices["features.1"].shape == (16, 5)  # k shrinks to the collection size


# ---- the whole comparison, end to end ------------------------------------------------------------------------
@pytest.mark.slow
def test_analyze_a_fine_tuned_run(small_synthetic, tmp_path, capsys):
    from artlab.analysis import Comparison, analyze
    from artlab.cli import main
    from artlab.training import TrainConfig, train

    manifest = str(small_synthetic.root / "manifest.csv")
    run = train(TrainConfig(name="ft", data=manifest, task="style", image_size=64, epochs=1, device="cpu", lr=0.05),
                runs_dir=tmp_path).run
    assert main(["analyze", "--finetuned", str(run.path), "--k", "5", "--max-images", "40", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "params_blocks" in out and "topk_entropy_layers" in out
    folder = run.path / "analysis"
    expected = {"params_filters", "params_layers", "params_blocks", "params_most_changed", "cka", "cka_matrix",
                "topk_overlap", "topk_overlap_layers", "topk_entropy", "topk_entropy_layers", "dead_kernels"}
    assert {p.stem for p in folder.glob("*.csv")} == expected
    report = (folder / "report.html").read_text()
    assert "Linear CKA per layer" in report and "Class concentration" in report
    cka = pd.read_csv(folder / "cka.csv")
    assert set(cka["comparison"]) == {"ImageNet vs ft", "ImageNet vs random init"}
    assert len(cka) == 2 * 18 and cka["n_images"].eq(40).all()
    entropy = pd.read_csv(folder / "topk_entropy_layers.csv")
    assert set(entropy["model"]) == {"ImageNet", "ft"} and (entropy["max"] <= np.log2(8) + 1e-9).all()
    blocks = pd.read_csv(folder / "params_blocks.csv")
    assert blocks["layer"].tolist() == [f"features.{i}" for i in range(1, 19)] and (blocks["relative_change"] > 0).all()
    assert main(["analyze", "--finetuned", str(run.path), "--what", "colour"]) == 2
    grid = analyze(Comparison(run.path, what=("cka",), max_images=12, cka_pool="grid", cka_grid=2),
                   out_dir=tmp_path / "grid")
    avg = pd.read_csv(folder / "cka.csv")
    assert len(grid.tables["cka"]) == 36 and not np.allclose(grid.tables["cka"]["cka"], avg["cka"])
    assert set(grid.figures) == {"cka.per_layer", "cka.matrix"}
    assert grid.report == tmp_path / "grid" / "report-cka.html"  # named by its analyses: never over report.html
    assert all(figure.layout.title.text for figure in grid.figures.values())  # the human title is inside
    with pytest.raises(KeyError, match="cka.matrix"):
        grid.figure("topk.overlap")
    every = analyze(Comparison(run.path, k=3, max_images=12), out_dir=tmp_path / "all")
    assert set(every.figures) == {"params.per_layer", "cka.per_layer", "cka.matrix", "topk.overlap", "topk.entropy",
                                  "topk.gallery"}


def test_several_comparisons_on_one_chart():
    from artlab.analysis import Analysis, several

    def blocks(scale):
        return pd.DataFrame({"depth": [0, 1], "layer": ["features.1", "features.2"],
                             "relative_change": [0.01 * scale, 0.02 * scale]})

    fig = several({"freeze 0": Analysis(tables={"params_blocks": blocks(1)}),
                   "freeze 5": Analysis(tables={"params_blocks": blocks(2)})}, "params_blocks", "relative_change")
    assert [trace.name for trace in fig.data] == ["freeze 0", "freeze 5"]
    assert list(fig.data[1].y) == [0.02, 0.04]
    with pytest.raises(KeyError, match="no table 'cka'"):
        several({"x": Analysis(tables={"params_blocks": blocks(1)})}, "cka", "cka")


def test_cka_of_one_network_with_itself_at_other_depths(small_synthetic):
    net = models.build("mobilenet_v2", pretrained=False).eval()
    paths = small_synthetic.table["path"].tolist()[:8]
    table = linear_cka(net, net, paths, ["features.4", "features.17"], ["features.10"], cross=True,
                       options=PassOptions(image_size=64))
    assert len(table) == 2 and table["cka"].between(0, 1).all()
