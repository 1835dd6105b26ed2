"""Training the later blocks from the cached output of the frozen first ones (--freeze K).

The reference is artlab's own plain path (every block runs at every step): the cached path must
train the same network to the same losses and weights, reuse its cache per image, and notice changed
files. With augmentation, each cached view must be exactly the frozen blocks' output of that crop.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import artlab.training.prefix as prefix
from artlab import models
from artlab.io import load_tensors
from artlab.runs import Run, load_network
from artlab.training import TrainConfig, prepare_collection, train
from artlab.training.config import add_arguments, from_arguments


def _collection(root: Path, classes: int = 3, per_class: int = 12) -> Path:
    """A manifest of distinct noise images whose mean colour depends on the class (so there is something to learn)."""
    rows = ["path,style"]
    for c in range(classes):
        for i in range(per_class):
            pixels = np.random.default_rng(1000 * c + i).integers(0, 160, (48, 56, 3)) + 40 * c
            (root / "img").mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.astype(np.uint8)).save(root / "img" / f"c{c}_{i}.png")
            rows.append(f"img/c{c}_{i}.png,style{c}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root / "manifest.csv"


def quick(data: Path, **overrides) -> TrainConfig:
    settings = dict(data=str(data), task="style", image_size=64, epochs=2, batch_size=8, device="cpu",
                    strategy="fine_tune", freeze=14, augment=False, name="r")
    return TrainConfig(**(settings | overrides))


@pytest.fixture
def computations(monkeypatch, tmp_path) -> list[int]:
    """How many images each computation of the frozen blocks' output covered (one entry per computation), from an
    empty cache (the store is keyed by content: another test's images of the same seeds would be found there)."""
    monkeypatch.setenv("ARTLAB_CACHE", str(tmp_path / "cache"))
    calls: list[int] = []
    real = prefix.compute_outputs

    def counted(model, k, paths, *args, **kwargs):
        calls.append(len(paths))
        return real(model, k, paths, *args, **kwargs)

    monkeypatch.setattr(prefix, "compute_outputs", counted)
    return calls


def _parts(run: Run) -> list[int]:
    """The number of training and validation images of a run: what one computation of each covers."""
    split = run.split_table()["split"]
    return [int((split == "train").sum()), int((split == "val").sum())]


def _plain_path(monkeypatch) -> None:
    """Force the normal path (all blocks run at every step), the reference for the cached one."""
    monkeypatch.setattr(prefix, "why_not_cached", lambda *args, **kwargs: "forced off by the test")


def test_cached_prefix_trains_exactly_like_the_plain_path(tmp_path, monkeypatch, computations):
    data = _collection(tmp_path / "c")
    cached = train(quick(data, name="cached"), runs_dir=tmp_path / "runs")
    assert computations == _parts(cached.run)  # training and validation images, once each
    with monkeypatch.context() as patch:
        _plain_path(patch)
        plain = train(quick(data, name="plain"), runs_dir=tmp_path / "runs")
    assert computations == _parts(cached.run)

    a, b = cached.run.history(), plain.run.history()
    assert list(a.columns) == list(b.columns)
    for column in ("train_loss", "val_loss", "val_score"):
        assert a[column].tolist() == pytest.approx(b[column].tolist(), rel=1e-4, abs=1e-5), column
    weights, _ = load_tensors(cached.run.file("model.safetensors"))
    reference, _ = load_tensors(plain.run.file("model.safetensors"))
    assert sorted(weights) == sorted(reference) == sorted(models.build("mobilenet_v2", num_classes=3).state_dict())
    for key in reference:  # float sums in another order (one torch thread, other batches) drift up to ~1.2e-4
        # over two epochs on some CPUs; training on wrong inputs moves weights by 1e-2 and more
        assert torch.allclose(weights[key], reference[key], rtol=1e-3, atol=5e-4), key
    assert cached.metrics["confusion_matrix"] == plain.metrics["confusion_matrix"]

    imagenet = models.build("mobilenet_v2", pretrained=True).state_dict()
    assert all(torch.equal(weights[k], imagenet[k]) for k in imagenet if k.startswith(tuple(
        f"features.{i}." for i in range(14))))  # the frozen blocks and their BatchNorm statistics are untouched
    assert not torch.equal(weights["features.15.conv.0.0.weight"], imagenet["features.15.conv.0.0.weight"])
    network = load_network(cached.run)  # the saved model is the whole network
    x = torch.rand(2, 3, 64, 64)
    assert network(x).shape == (2, 3)


@pytest.mark.parametrize(("arch", "k"), [("mobilenet_v2", 14), ("resnet18", 3), ("efficientnet_b0", 5)])
def test_skipping_the_first_blocks_and_feeding_their_output_is_the_whole_network(arch, k):
    torch.manual_seed(0)
    model = models.build(arch, pretrained=False, num_classes=4).eval()
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        whole = model(x)
        skipped = prefix.Suffix(model, k)(prefix.prefix_network(model, k)(x))
    assert torch.allclose(skipped, whole, atol=1e-6)
    assert sorted(model.state_dict()) == sorted(models.build(arch, pretrained=False, num_classes=4).state_dict())


def test_the_cache_is_reused_and_a_changed_image_recomputes_its_part(tmp_path, computations):
    data = _collection(tmp_path / "c")
    first = train(quick(data, name="first"), runs_dir=tmp_path / "runs")
    n_train, n_val = _parts(first.run)
    assert computations == [n_train, n_val]
    second = train(quick(data, name="second"), runs_dir=tmp_path / "runs")
    assert computations == [n_train, n_val]  # nothing recomputed
    assert second.run.history()["train_loss"].tolist() == first.run.history()["train_loss"].tolist()

    split = first.run.split_table()
    changed = split.loc[split["split"] == "val", "path"].iloc[0]
    pixels = np.asarray(Image.open(changed)).copy()
    Image.fromarray(255 - pixels).save(changed)  # same name and size, other content
    train(quick(data, name="third"), runs_dir=tmp_path / "runs")
    assert computations == [n_train, n_val, 1]  # only the changed image is computed again

    other = train(quick(data, name="fourth", freeze=12), runs_dir=tmp_path / "runs")  # another k: other outputs
    assert computations == [n_train, n_val, 1, n_train, n_val] and other.run.finished

    reseeded = train(quick(data, name="fifth", seed=1), runs_dir=tmp_path / "runs")  # another split, same images
    used = [set(run.split_table().query("split != 'test'")["path"]) for run in (first.run,
                                                                                               reseeded.run)]
    new_train, new_val = [len(set(reseeded.run.split_table().query(f"split == '{part}'")["path"])
                              - used[0]) for part in ("train", "val")]
    assert 0 < new_train + new_val < n_train  # only the images seed 0 did not train or validate on
    assert computations == [n_train, n_val, 1, n_train, n_val] + [n for n in (new_train, new_val) if n]


def test_no_cached_views_or_a_non_chain_network_turns_the_cache_off_and_says_why(tmp_path, computations, capsys):
    data = _collection(tmp_path / "c")
    train(quick(data, augment=True, augment_views=0, epochs=1), runs_dir=tmp_path / "runs")
    assert computations == []
    line = capsys.readouterr().err
    assert "frozen-prefix cache off" in line and "augment_views=0" in line and "--no-augment" in line

    googlenet = models.build("googlenet", pretrained=False, num_classes=3)
    reason = prefix.why_not_cached(quick(data, arch="googlenet", freeze=3), googlenet, 30, 6)
    assert "not a plain chain" in reason
    mobilenet = models.build("mobilenet_v2", pretrained=False, num_classes=3)
    assert prefix.why_not_cached(quick(data), mobilenet, 30, 6) is None
    assert prefix.why_not_cached(quick(data, augment=True, freeze=1), mobilenet, 1000, 6) is None
    assert "GiB" in prefix.why_not_cached(quick(data, freeze=1), mobilenet, 10**6, 0)  # 10^6 images x 512 KiB
    assert "GiB" in prefix.why_not_cached(quick(data, freeze=1, augment=True, augment_views=64), mobilenet, 10**5, 0)


def test_an_unreadable_image_is_reported_and_its_part_not_cached(tmp_path, monkeypatch, computations):
    import artlab.data.loading as loading
    from artlab.data.images import ImageError

    data = _collection(tmp_path / "c")
    table = prepare_collection(quick(data)).table
    victim = table.loc[table["split"] == "train", "path"].iloc[3]  # the split is drawn the same way in train()
    real = loading.load_rgb

    def flaky(path, *args, **kwargs):
        if str(path) == victim:
            raise ImageError(path, "corrupt or truncated: became unreadable")
        return real(path, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(loading, "load_rgb", flaky)
        result = train(quick(data, epochs=1), runs_dir=tmp_path / "runs")
    skipped = pd.read_csv(result.run.file("skipped.csv"))
    assert skipped["path"].tolist() == [victim] and "during training" in skipped["reason"].iloc[0]
    assert len(result.run.history()) == 1  # trained on the other images
    n_train, n_val = _parts(result.run)
    assert computations == [n_train, n_val]
    train(quick(data, epochs=1, name="again"), runs_dir=tmp_path / "runs")
    assert computations == [n_train, n_val, 1]  # the image that failed has no entry: tried again


def test_a_run_interrupted_mid_training_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    import artlab.training.loops as loops

    data = _collection(tmp_path / "c")
    reference = train(quick(data, epochs=3, name="whole"), runs_dir=tmp_path / "runs")
    real = loops._train_epoch

    def killed_in_epoch_2(model, frozen, batches, *args):
        if args[-1] == "epoch 2":
            raise KeyboardInterrupt  # as if killed: epoch 1's checkpoint is on disk, nothing of epoch 2
        return real(model, frozen, batches, *args)

    with monkeypatch.context() as patch:
        patch.setattr(loops, "_train_epoch", killed_in_epoch_2)
        with pytest.raises(KeyboardInterrupt):
            train(quick(data, epochs=3, name="killed"), runs_dir=tmp_path / "runs")
    run = Run(tmp_path / "runs" / "killed")
    assert run.file("checkpoint.safetensors").is_file() and not run.finished
    resumed = train(quick(data, epochs=3, name="killed"), runs_dir=tmp_path / "runs", resume=True)
    assert resumed.run.history()["epoch"].tolist() == [1, 2, 3]
    assert resumed.run.history()["train_loss"].tolist() == reference.run.history()["train_loss"].tolist()
    assert resumed.metrics["confusion_matrix"] == reference.metrics["confusion_matrix"]


def test_no_augment_on_the_command_line():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert from_arguments(parser.parse_args(["--no-augment", "--freeze", "14"])).augment is False
    assert from_arguments(parser.parse_args(["--augment"])).augment is True
    assert from_arguments(parser.parse_args([])).augment is True
    with pytest.raises(ValueError, match="augment"):
        TrainConfig(augment="no")


def test_a_cache_that_cannot_be_written_does_not_stop_training(tmp_path, monkeypatch, computations):
    data = _collection(tmp_path / "c")

    def disk_full(path, *args, **kwargs):
        raise OSError(28, "No space left on device", str(path))

    with monkeypatch.context() as patch:
        patch.setattr(prefix, "save_tensors", disk_full)
        with pytest.warns(RuntimeWarning, match=r"frozen-prefix cache could not be written to .*prefix.*No space"):
            result = train(quick(data, epochs=1, name="full"), runs_dir=tmp_path / "runs")
    assert result.run.finished and computations == _parts(result.run)
    train(quick(data, epochs=1, name="again"), runs_dir=tmp_path / "runs")
    assert computations == _parts(result.run) * 2  # nothing was stored: computed again


def test_the_cache_key_follows_the_image_decoder(monkeypatch):
    import artlab.data.decoded as decoded

    model = models.build("mobilenet_v2", pretrained=False)
    before = prefix.store_key(model, 3, 64, 0)
    assert prefix.store_key(model, 3, 64, 4) != before  # views are other entries than centre crops
    monkeypatch.setattr(decoded, "DECODE_VERSION", decoded.DECODE_VERSION + 1)  # the decoding changed
    assert prefix.store_key(model, 3, 64, 0) != before


def test_each_cached_view_is_the_frozen_blocks_output_of_its_own_crop(tmp_path):
    from artlab.data.loading import ImageDataset

    _collection(tmp_path / "c", per_class=2)
    paths = [str(p) for p in sorted((tmp_path / "c" / "img").glob("*.png"))]
    torch.manual_seed(0)
    model = models.build("mobilenet_v2", pretrained=False, num_classes=3).eval()
    state = torch.get_rng_state()
    views = prefix.cached_outputs(model, 5, paths, None, 64, torch.device("cpu"), views=3)
    assert torch.equal(torch.get_rng_state(), state)  # the training's random draws are not disturbed
    assert views.outputs.shape[:2] == (len(paths), 3) and views.present.all()

    # the reference: the training transform applied by hand with the seed of the image and view, then the blocks
    dataset = ImageDataset(paths, None, 64, models.input_transform(model, 64, train=True), train=True)
    key = prefix.image_keys(paths[2:3])[0]
    for view in range(3):
        torch.manual_seed(int.from_bytes(key[:7], "little") * 64 + view)
        crop = dataset.transform(dataset.image(2))
        with torch.no_grad():
            expected = prefix.prefix_network(model, 5)(crop[None])[0]
        assert torch.allclose(views.outputs[2, view], expected, atol=1e-5), view
    assert not torch.allclose(views.outputs[2, 0], views.outputs[2, 1])  # views differ from one another
    centre = prefix.cached_outputs(model, 5, paths, None, 64, torch.device("cpu"))
    assert not torch.allclose(views.outputs[2, 0], centre.outputs[2])

    (tmp_path / "cache2").mkdir()  # computed alone, in another cache, an image gets the same views
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ARTLAB_CACHE", str(tmp_path / "cache2"))
        alone = prefix.cached_outputs(model, 5, paths[2:3], None, 64, torch.device("cpu"), views=3)
    assert torch.allclose(alone.outputs[0], views.outputs[2], atol=1e-6)

    drawn = {tuple(views[2][0].flatten()[:4].tolist()) for _ in range(40)}
    assert len(drawn) == 3  # an item is one of the image's views, drawn at random


def test_augmented_training_on_cached_views_is_reproducible_and_reused(tmp_path, computations):
    data = _collection(tmp_path / "c")
    config = quick(data, augment=True, name="")
    assert config.augment_views == 4 and config.resolved(["style"]).name.endswith("-freeze14-views4")
    assert replace(config, epochs=1).cached_views == 1 and replace(config, epochs=1, augment_views=0).cached_views == 0
    first = train(replace(config, name="views-a"), runs_dir=tmp_path / "runs")
    n_train, n_val = _parts(first.run)
    assert computations == [n_train, n_val]  # 4 views of each training image, the validation images' centres
    again = train(replace(config, name="views-b"), runs_dir=tmp_path / "runs")
    assert computations == [n_train, n_val]  # nothing computed again
    assert again.run.history()["train_loss"].tolist() == first.run.history()["train_loss"].tolist()
    other = train(replace(config, name="views-c", seed=3), runs_dir=tmp_path / "runs")
    assert other.run.history()["train_loss"].tolist() != first.run.history()["train_loss"].tolist()

    saved = first.run.config() | {"freeze": 14}
    del saved["augment_views"]  # a run saved before cached views trained on a new crop at every step
    assert TrainConfig.from_dict(saved).augment_views == 0
    assert TrainConfig.from_dict(saved | {"freeze": 0}).augment_views == 4  # where they change nothing: the default
    with pytest.raises(ValueError, match="augment_views must be between 0"):
        TrainConfig(augment_views=-1)
