"""No cached value is ever served unchecked: every cache entry carries a checksum of its payload, checked on read.

Each cache is filled through its real code path, then damaged in place so that the file stays
well-formed (one changed value under the old metadata, a NaN, flipped pixel bytes, swapped keys):
the next read computes the entry once more, returns what a fresh computation returns, and says so
in one warning line. The Fréchet distance refuses non-finite and degenerate statistics at once.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import artlab.features as features
import artlab.training.prefix as prefix
from artlab import models
from artlab.cache import CHECKSUM_FIELD, cache_dir, load_checked, payload_checksum, save_checked, sealed
from artlab.data import ImageDataset, loader
from artlab.data.decoded import decoded_dir, read_pack_index
from artlab.interpret import featurevis as fv
from artlab.io import load_tensors, save_tensors
from artlab.runs import IMAGENET, Network
from artlab.training import TrainConfig, train

SIZE = 64
LAYER = "features.18"


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch) -> Path:
    """A cache of this test's own (the session cache is shared by other tests)."""
    monkeypatch.setenv("ARTLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _paintings(folder: Path, n: int, classes: int = 1) -> list[str]:
    """`n` distinct small PNGs per class, the class shifting the mean colour."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for c in range(classes):
        for i in range(n):
            pixels = np.random.default_rng(100 * c + i).integers(0, 160, (SIZE, SIZE + 8, 3)) + 40 * c
            path = folder / f"c{c}_{i}.png"
            Image.fromarray(pixels.astype(np.uint8)).save(path)
            paths.append(str(path))
    return paths


def _counted(monkeypatch, owner, name: str) -> list[int]:
    """Replace owner.name by a spy; the returned list grows by one at every call."""
    calls: list[int] = []
    real = getattr(owner, name)

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)
    return calls


def _rewrite(path: Path, change: Callable[[dict[str, torch.Tensor]], None], reseal: bool = False) -> None:
    """Change a safetensors entry's values behind artlab's back: a well-formed file with the old metadata
    (old checksum), or with a checksum that matches the changed values when `reseal`."""
    tensors, metadata = load_tensors(path)
    tensors = {name: tensor.clone() for name, tensor in tensors.items()}
    change(tensors)
    if reseal:
        metadata[CHECKSUM_FIELD] = payload_checksum(tensors)
    save_file(tensors, str(path), metadata=metadata)


def _damage_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "damaged" in str(w.message)]


def _entries(kind: str) -> list[Path]:
    return sorted((cache_dir() / kind).glob("*.safetensors"))


# ---- the checked-entry helpers ---------------------------------------------------------------------------------
def test_a_checked_entry_round_trips_and_every_kind_of_damage_is_refused(tmp_path):
    path = tmp_path / "entry.safetensors"
    values = {"b": torch.arange(6.0).view(2, 3), "a": torch.tensor([1, 2, 3])}
    assert save_checked(path, values, {"note": "x"}, "test values", save_tensors)
    loaded = load_checked(path, "test values", load_tensors)
    assert loaded.keys() == values.keys() and all(torch.equal(loaded[k], values[k]) for k in values)
    assert payload_checksum(values) == payload_checksum(dict(reversed(values.items())))  # order does not matter

    for change, problem in ((lambda t: t["b"].__setitem__((0, 0), 0.5), "checksum mismatch"),
                            (lambda t: t["b"].__setitem__((1, 2), float("nan")), "checksum mismatch")):
        save_checked(path, values, {}, "test values", save_tensors)
        _rewrite(path, change)
        with pytest.warns(RuntimeWarning, match=rf"^the cached test values were damaged \({problem}\) and are "
                                                 rf"computed again \(cache entry .*entry.safetensors\)$"):
            assert load_checked(path, "test values", load_tensors) is None

    save_checked(path, values, {}, "test values", save_tensors)
    _rewrite(path, lambda t: t["b"].__setitem__((1, 2), float("inf")), reseal=True)  # checksum fits, value does not
    with pytest.warns(RuntimeWarning, match=r"damaged \(non-finite values\)"):
        assert load_checked(path, "test values", load_tensors) is None

    path.write_bytes(path.read_bytes()[:30])
    with pytest.warns(RuntimeWarning, match=r"damaged \(unreadable file\)"):
        assert load_checked(path, "test values", load_tensors) is None

    save_tensors(path, values, {"written": "before checksums"})  # an older artlab's entry: recomputed quietly
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_checked(path, "test values", load_tensors) is None
        assert load_checked(tmp_path / "absent.safetensors", "test values", load_tensors) is None


def test_non_finite_values_are_never_written(tmp_path):
    path = tmp_path / "entry.safetensors"
    with pytest.raises(ValueError, match="non-finite"):
        sealed({"x": torch.tensor([1.0, float("nan")])})
    with pytest.warns(RuntimeWarning, match=r"^the features of x hold non-finite values \(NaN or infinity\) and are "
                                             r"not cached$"):
        assert not save_checked(path, {"x": torch.tensor([float("-inf")])}, {}, "features of x", save_tensors)
    assert not path.exists()


# ---- features (off-the-shelf probes, collection maps, distances) -----------------------------------------------
def _features(paths: list[str]) -> np.ndarray:
    return features.cached_features(Network.of(IMAGENET, "mobilenet_v2"), LAYER, paths, SIZE, torch.device("cpu"))


@pytest.mark.parametrize(("damage", "problem"), [
    (lambda t: t["features"].__setitem__((2, 5), t["features"][2, 5] + 1), "checksum mismatch"),
    (lambda t: t["features"].__setitem__((1, 0), float("nan")), "checksum mismatch"),
])
def test_a_damaged_feature_entry_is_computed_again_once_and_says_so(tmp_path, monkeypatch, damage, problem):
    paths = _paintings(tmp_path / "img", 5)
    calls = _counted(monkeypatch, features, "extract")
    first = _features(paths)
    (entry,) = _entries("features")
    assert calls == [1] and np.isfinite(first).all()
    _rewrite(entry, damage)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = _features(paths)
    assert calls == [1, 1]
    (line,) = _damage_warnings(caught)
    assert line.startswith(f"the cached features of {LAYER} for 5 images were damaged ({problem}) and are computed "
                           f"again") and "\n" not in line
    np.testing.assert_array_equal(again, first)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(_features(paths), first)  # the entry written again is served
    assert calls == [1, 1]


def test_a_feature_entry_with_a_nan_and_a_fitting_checksum_is_refused(tmp_path, monkeypatch):
    paths = _paintings(tmp_path / "img", 4)
    calls = _counted(monkeypatch, features, "extract")
    first = _features(paths)
    _rewrite(_entries("features")[0], lambda t: t["features"].__setitem__((0, 3), float("nan")), reseal=True)
    with pytest.warns(RuntimeWarning, match=r"damaged \(non-finite values\)"):
        np.testing.assert_array_equal(_features(paths), first)
    assert calls == [1, 1]


def test_features_with_non_finite_values_are_not_cached_and_unreadable_images_still_are_not(tmp_path, monkeypatch):
    paths = _paintings(tmp_path / "img", 4)
    real = features.extract

    def partly_infinite(*args, **kwargs):
        out = real(*args, **kwargs)
        out[LAYER][1, 2] = np.inf
        return out

    monkeypatch.setattr(features, "extract", partly_infinite)
    with pytest.warns(RuntimeWarning, match="hold non-finite values .* not cached"):
        assert np.isinf(_features(paths)).sum() == 1
    assert not _entries("features")

    Path(paths[0]).write_bytes(b"not an image")  # an unreadable image: a NaN row by design, never cached, no warning
    monkeypatch.setattr(features, "extract", real)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert features.unreadable_rows(_features(paths)).tolist() == [True, False, False, False]
    assert not _entries("features")


def _manifest(root: Path) -> Path:
    paths = _paintings(root / "img", 6, classes=2)
    rows = ["path,style"] + [f"img/{Path(p).name},style{Path(p).name[1]}" for p in paths]
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root / "manifest.csv"


def test_off_the_shelf_training_after_a_damaged_feature_cache_recomputes_and_succeeds(tmp_path, monkeypatch):
    data = _manifest(tmp_path / "c")
    calls = _counted(monkeypatch, features, "extract")
    config = dict(data=str(data), task="style", image_size=SIZE, batch_size=8, device="cpu", strategy="off_the_shelf")
    first = train(TrainConfig(**config, name="one"), runs_dir=tmp_path / "runs")
    (entry,) = _entries("features")
    _rewrite(entry, lambda t: t["features"].__setitem__((3, 7), float("nan")))
    with pytest.warns(RuntimeWarning, match=r"the cached features of .* were damaged \(checksum mismatch\)"):
        again = train(TrainConfig(**config, name="two"), runs_dir=tmp_path / "runs")
    assert calls == [1, 1] and again.run.finished
    assert again.metrics["accuracy"] == first.metrics["accuracy"]
    assert pd.read_csv(again.run.file("split.csv")).equals(pd.read_csv(first.run.file("split.csv")))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(TrainConfig(**config, name="three"), runs_dir=tmp_path / "runs")  # served from the rewritten entry
    assert calls == [1, 1]


# ---- the frozen-prefix cache -----------------------------------------------------------------------------------
def test_a_damaged_prefix_entry_is_computed_again_once_and_says_so(tmp_path, monkeypatch):
    paths = _paintings(tmp_path / "img", 4)
    torch.manual_seed(0)
    model = models.build("mobilenet_v2", pretrained=False, num_classes=2).eval()
    cpu = torch.device("cpu")
    calls = _counted(monkeypatch, prefix, "compute_outputs")
    first = prefix.cached_outputs(model, 3, paths, None, SIZE, cpu).outputs
    entry = sorted((cache_dir() / "prefix").rglob("*.safetensors"))[0]  # one shard of the store
    _rewrite(entry, lambda t: t["outputs"].view(-1).__setitem__(17, -3.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = prefix.cached_outputs(model, 3, paths, None, SIZE, cpu)
    assert calls == [1, 1] and again.present.all()
    (line,) = _damage_warnings(caught)
    assert line.startswith("the cached outputs of frozen blocks 1-3 were damaged (checksum mismatch)")
    assert torch.equal(again.outputs, first)
    assert torch.equal(again.outputs, prefix.compute_outputs(model, 3, paths, SIZE, cpu, 8)[0])  # a fresh computation
    assert torch.equal(prefix.cached_outputs(model, 3, paths, None, SIZE, cpu).outputs, first)
    assert calls == [1, 1, 1]  # the rewritten entry is served


# ---- the render cache ------------------------------------------------------------------------------------------
def test_a_render_with_damaged_pixel_bytes_is_rendered_again_once_and_says_so(monkeypatch):
    torch.manual_seed(0)
    model = models.build("mobilenet_v2", pretrained=False).eval()
    settings = fv.RenderSettings(steps=2, size=32, seed=1)
    calls = _counted(monkeypatch, fv, "optimise")
    first = fv.render_channels(model, "features.2", [3], settings=settings)
    (entry,) = _entries("renders")
    data = bytearray(entry.read_bytes())
    data[-10] ^= 0xFF  # one flipped pixel byte: the file is as long and as well-formed as before
    data[-11] ^= 0x0F
    entry.write_bytes(bytes(data))
    assert not np.array_equal(load_tensors(entry)[0]["image"].numpy(), first[0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = fv.render_channels(model, "features.2", [3], settings=settings)
    assert len(calls) == 2
    (line,) = _damage_warnings(caught)
    assert line.startswith("the cached pixels of the render of channel 3 of features.2 were damaged "
                           "(checksum mismatch)")
    assert np.array_equal(again, first)
    assert np.array_equal(again, fv.render_channels(model, "features.2", [3], settings=settings, cache=False))
    assert np.array_equal(fv.render_channels(model, "features.2", [3], settings=settings), first)
    assert len(calls) == 3  # the fresh render only: the rewritten entry is served


# ---- the decoded-image cache -----------------------------------------------------------------------------------
def _dataset(paths: list[str]) -> ImageDataset:
    return ImageDataset(paths, None, SIZE, models.arch("mobilenet_v2").transform(SIZE), keep=False)


def _fill(paths: list[str]) -> Path:
    for _ in loader(_dataset(paths), 4, num_workers=0):
        pass
    (pack,) = sorted(decoded_dir(SIZE).glob("*.safetensors"))
    return pack


def _decoded_again(paths: list[str], monkeypatch) -> tuple[list[str], list[int]]:
    """Read every image through a fresh dataset: the damage warnings and how many images were decoded."""
    fresh = ImageDataset.decode
    calls = _counted(monkeypatch, ImageDataset, "decode")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = _dataset(paths)  # opening the packs checks their index
        for index in range(len(paths)):
            assert torch.equal(dataset.image(index), fresh(dataset, index))
    return _damage_warnings(caught), calls


def test_damaged_pixel_bytes_of_a_decoded_image_are_decoded_again_and_said(tmp_path, monkeypatch):
    paths = _paintings(tmp_path / "img", 5)
    pack = _fill(paths)
    entry = min(read_pack_index(pack).values(), key=lambda e: e.offset)
    data = bytearray(pack.read_bytes())
    data[entry.offset + 7] ^= 0xFF
    pack.write_bytes(bytes(data))
    lines, calls = _decoded_again(paths, monkeypatch)
    assert len(lines) == 1 and lines[0].startswith("the cached decoded images were damaged (checksum mismatch) and "
                                                   "are decoded again")
    assert not pack.exists() and len(calls) == len(paths)  # each image decoded once more


def test_a_damaged_pack_index_is_dropped_and_said(tmp_path, monkeypatch):
    paths = _paintings(tmp_path / "img", 5)
    pack = _fill(paths)

    def swap_two_keys(tensors):  # image 0 would be served as image 1 and back: every pixel CRC still matches
        tensors["keys"][[0, 1]] = tensors["keys"][[1, 0]].clone()

    _rewrite(pack, swap_two_keys)
    lines, calls = _decoded_again(paths, monkeypatch)
    assert len(lines) == 1 and "damaged (checksum mismatch)" in lines[0] and "decoded again" in lines[0]
    assert not pack.exists() and len(calls) == len(paths)


def test_a_pack_written_before_checksums_is_decoded_again_quietly(tmp_path, monkeypatch):
    paths = _paintings(tmp_path / "img", 3)
    pack = _fill(paths)
    tensors, metadata = load_tensors(pack)
    del metadata[CHECKSUM_FIELD]
    save_file(tensors, str(pack), metadata=metadata)
    lines, calls = _decoded_again(paths, monkeypatch)
    assert lines == [] and not pack.exists() and len(calls) == len(paths)


# ---- the Fréchet distance --------------------------------------------------------------------------------------
def _within(seconds: float, function: Callable[[], object]) -> BaseException | None:
    """Run `function` in a thread; fail if it has not returned after `seconds` (a hang); what it raised."""
    outcome: list[BaseException | None] = []

    def target():
        try:
            function()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    return outcome[0]


def _statistics(n: int = 40, dims: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from artlab.analysis.distance import gaussian

    return gaussian(np.random.default_rng(seed).normal(size=(n, dims)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["mu", "sigma"])
def test_the_frechet_distance_refuses_non_finite_statistics_at_once(bad, where):
    from artlab.analysis import frechet_distance

    mu, sigma = _statistics()
    mu2, sigma2 = mu.copy(), sigma.copy()
    if where == "mu":
        mu2[5] = bad
    else:
        sigma2[3, 7] = sigma2[7, 3] = bad
    error = _within(10, lambda: frechet_distance(mu, sigma, mu2, sigma2))
    assert isinstance(error, ValueError) and "non-finite" in str(error)


def test_the_frechet_distance_refuses_degenerate_statistics():
    from artlab.analysis import frechet_distance
    from artlab.analysis.distance import gaussian

    mu, sigma = _statistics()
    for rows in (np.ones((1, 8)), np.zeros((0, 8))):  # fewer than 2 samples
        assert "at least 2" in str(_within(10, lambda rows=rows: gaussian(rows)))
    features_with_nan = np.random.default_rng(1).normal(size=(10, 8))
    features_with_nan[4, 2] = np.nan
    assert "non-finite" in str(_within(10, lambda: gaussian(features_with_nan)))
    same = gaussian(np.tile(np.random.default_rng(2).normal(size=64) * 0.1, (9, 1)))  # zero variance
    assert "degenerate" in str(_within(10, lambda: frechet_distance(*same, mu, sigma)))
    zero = np.zeros_like(sigma)
    assert "degenerate" in str(_within(10, lambda: frechet_distance(mu, zero, mu, zero)))
    negative = sigma.copy()
    negative[0, 0] = -1
    assert "negative variances" in str(_within(10, lambda: frechet_distance(mu, negative, mu, sigma)))
    assert _within(10, lambda: frechet_distance(mu, sigma, mu, sigma)) is None  # the usable case still works


def test_a_distance_over_non_finite_features_is_an_error_not_a_hang(tmp_path, monkeypatch):
    from artlab.analysis import collection_distance

    data = _manifest(tmp_path / "c")
    real = features.extract

    def one_nan(*args, **kwargs):
        out = real(*args, **kwargs)
        out[LAYER][2, 9] = np.nan  # a network gone wrong: one value, not a whole unreadable row
        return out

    monkeypatch.setattr(features, "extract", one_nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "not cached": said by the features cache
        error = _within(60, lambda: collection_distance(data, data, image_size=SIZE, device="cpu"))
    assert isinstance(error, ValueError) and "non-finite" in str(error)
