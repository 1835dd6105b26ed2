"""Training the later blocks from the cached output of the frozen first ones (--freeze K --no-augment).

The reference is artlab's own plain path (every block runs at every step): the cached path must
train the same network to the same losses and weights, reuse its cache, and notice changed files.
"""

from __future__ import annotations

import argparse
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
def computations(monkeypatch) -> list[int]:
    """How many images each computation of the frozen blocks' output covered (one entry per computation)."""
    calls: list[int] = []
    real = prefix.compute_outputs

    def counted(model, k, paths, *args, **kwargs):
        calls.append(len(paths))
        return real(model, k, paths, *args, **kwargs)

    monkeypatch.setattr(prefix, "compute_outputs", counted)
    return calls


def _parts(run: Run) -> list[int]:
    """The number of training and validation images of a run: what one computation of each covers."""
    split = pd.read_csv(run.file("split.csv"))["split"]
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
    for key in reference:
        assert torch.allclose(weights[key], reference[key], rtol=1e-4, atol=1e-5), key
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

    split = pd.read_csv(first.run.file("split.csv"))
    changed = split.loc[split["split"] == "val", "path"].iloc[0]
    pixels = np.asarray(Image.open(changed)).copy()
    Image.fromarray(255 - pixels).save(changed)  # same name and size, other content
    train(quick(data, name="third"), runs_dir=tmp_path / "runs")
    assert computations == [n_train, n_val, n_val]  # only the validation images' entry depended on that file

    other = train(quick(data, name="fourth", freeze=12), runs_dir=tmp_path / "runs")  # another k: other outputs
    assert computations == [n_train, n_val, n_val, n_train, n_val] and other.run.finished


def test_augmentation_or_a_non_chain_network_turns_the_cache_off_and_says_why(tmp_path, computations, capsys):
    data = _collection(tmp_path / "c")
    train(quick(data, augment=True, epochs=1), runs_dir=tmp_path / "runs")
    assert computations == []
    line = capsys.readouterr().err
    assert "frozen-prefix cache off" in line and "random crops" in line and "--no-augment" in line

    googlenet = models.build("googlenet", pretrained=False, num_classes=3)
    reason = prefix.why_not_cached(quick(data, arch="googlenet", freeze=3), googlenet, 36)
    assert "not a plain chain" in reason
    mobilenet = models.build("mobilenet_v2", pretrained=False, num_classes=3)
    assert prefix.why_not_cached(quick(data), mobilenet, 36) is None
    assert "GiB" in prefix.why_not_cached(quick(data, freeze=1), mobilenet, 10**6)  # 10^6 images x 512 KiB


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
    assert computations == [n_train, n_val, n_train]  # the incomplete training part was not cached


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
    before = prefix.cache_key(model, 3, [], 64)
    monkeypatch.setattr(decoded, "DECODE_VERSION", decoded.DECODE_VERSION + 1)  # the decoding changed
    assert prefix.cache_key(model, 3, [], 64) != before
