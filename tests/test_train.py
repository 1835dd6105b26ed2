"""Strategies, run folders, resumption, the feature cache and the CLI, on small real runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from artlab import models
from artlab.cli import main
from artlab.io import load_tensors
from artlab.models import ModelCard
from artlab.runs import Run
from artlab.training import TrainConfig, evaluate_run, prepare_collection, train
from artlab.training.metrics import multi_label, single_label

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def manifest(small_synthetic) -> str:
    return str(small_synthetic.root / "manifest.csv")


def quick(manifest: str, **overrides) -> TrainConfig:
    """A run small enough for CI: 64 px, two epochs, the small synthetic collection."""
    settings = dict(data=manifest, task="style", image_size=64, epochs=2, batch_size=16, device="cpu")
    return TrainConfig(**(settings | overrides))


# ---- metrics against brute force --------------------------------------------------------------
def test_single_label_metrics_by_hand():
    rng = np.random.default_rng(0)
    scores, targets = rng.normal(size=(50, 6)), rng.integers(0, 6, 50)
    m = single_label(scores, targets, list("abcdef"))
    predicted = scores.argmax(1)
    assert m["accuracy"] == pytest.approx(np.mean(predicted == targets))
    recalls = [np.mean(predicted[targets == c] == c) for c in range(6)]
    assert m["balanced_accuracy"] == pytest.approx(np.mean(recalls))
    assert list(m["per_class_recall"].values()) == pytest.approx(recalls)
    top3 = np.mean([t in np.argsort(-s)[:3] for s, t in zip(scores, targets)])
    assert m["top3_accuracy"] == pytest.approx(top3)
    confusion = np.zeros((6, 6), int)
    for t, p in zip(targets, predicted):
        confusion[t, p] += 1
    assert m["confusion_matrix"] == confusion.tolist()


def test_average_precision_by_hand():
    rng = np.random.default_rng(1)
    scores, targets = rng.uniform(size=(40, 3)), (rng.uniform(size=(40, 3)) < 0.3).astype(float)
    m = multi_label(scores, targets, ["x", "y", "z"])
    aps = []
    for c in range(3):
        order = np.argsort(-scores[:, c])
        hits = targets[order, c]
        precision_at_hits = [hits[: i + 1].mean() for i in range(len(hits)) if hits[i]]
        aps.append(np.mean(precision_at_hits))
    assert list(m["per_class_AP"].values()) == pytest.approx(aps)
    assert m["mAP"] == pytest.approx(np.mean(aps))


def test_the_training_state_reads_the_checkpoints_earlier_versions_wrote():
    from artlab.training.loops import TrainingState

    stored = {"epoch": 2, "history": [{"epoch": 1, "val_score": 0.5}, {"epoch": 2, "val_score": 0.4}], "best": 0.5,
              "best_epoch": 1, "stale": 1}  # a checkpoint's JSON state, as the string-keyed dict wrote it
    state = TrainingState.from_dict(stored)
    assert (state.epoch, state.best, state.best_epoch, state.stale) == (2, 0.5, 1, 1)
    assert state.to_dict() == stored and list(state.to_dict()) == list(stored)  # written back the same
    assert TrainingState().to_dict() == {"epoch": 0, "history": [], "best": -np.inf, "best_epoch": 0, "stale": 0}


def test_one_loss_for_the_probe_and_every_task():
    """Tasks.loss is the weighted sum of loss_function (the probe's loss) over each task's labelled images."""
    from artlab.training.metrics import loss_function
    from artlab.training.tasks import MISSING, Task, Tasks

    torch.manual_seed(0)
    logits = torch.randn(6, 5)
    style = torch.tensor([0, 2, 1, MISSING, 0, 2])
    tags = torch.tensor([[1.0, 0.0], [0.0, 0.0], [float("nan")] * 2, [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    heads = Tasks([Task("style", ["a", "b", "c"], False, 1.0, 0), Task("tags", ["x", "y"], True, 2.0, 3)],
                  label_smoothing=0.1)
    labelled, tagged = style != MISSING, ~torch.isnan(tags[:, 0])
    expected = loss_function(False, 0.1)(logits[labelled, :3], style[labelled]) \
        + 2.0 * loss_function(True)(logits[tagged, 3:], tags[tagged])
    assert float(heads.loss(logits, {"style": style, "tags": tags})) == pytest.approx(float(expected))


# ---- strategies ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_off_the_shelf_run_folder_and_feature_cache(manifest, tmp_path, monkeypatch):
    first = train(quick(manifest, strategy="off_the_shelf", name="probe-a"), runs_dir=tmp_path)
    files = {p.name for p in first.run.path.iterdir()}
    assert {"config.yaml", "environment.json", "history.csv", "metrics.json", "model.safetensors", "split.csv"} <= files
    assert first.accuracy > 1 / 8 + 0.2  # clearly above chance on 8 styles

    import artlab.features as features
    import artlab.training.probe as probe

    def must_not_run(*args, **kwargs):
        raise AssertionError("the network ran although its features were cached")

    monkeypatch.setattr(probe.Network, "build", must_not_run)
    monkeypatch.setattr(features, "extract", must_not_run)
    second = train(quick(manifest, strategy="off_the_shelf", name="probe-b"), runs_dir=tmp_path)
    assert second.metrics["accuracy"] == first.metrics["accuracy"]
    assert evaluate_run(second.run)["accuracy"] == first.metrics["accuracy"]  # eval uses the cache too


def test_linear_head_probe_and_other_layer(manifest, tmp_path):
    result = train(quick(manifest, strategy="off_the_shelf", classifier="linear", layer="features.14", name="lin"),
                   runs_dir=tmp_path)
    tensors, meta = load_tensors(result.run.file("model.safetensors"))
    assert meta["layer"] == "features.14" and tensors["weight"].shape == (8, 160)  # features.14 has 160 channels
    assert result.accuracy > 1 / 8


@pytest.mark.slow
def test_fine_tune_is_reproducible_and_evaluable(manifest, tmp_path):
    a = train(quick(manifest, name="ft-a"), runs_dir=tmp_path)
    b = train(quick(manifest, name="ft-b"), runs_dir=tmp_path)
    assert a.metrics["confusion_matrix"] == b.metrics["confusion_matrix"]
    assert a.run.history()["train_loss"].tolist() == b.run.history()["train_loss"].tolist()
    again = evaluate_run(a.run)
    assert again["accuracy"] == a.metrics["accuracy"]
    assert not a.run.file("checkpoint.safetensors").exists()
    assert not list(a.run.path.glob("*.pt")) and not list(a.run.path.glob("*.pkl"))


def test_frozen_blocks_do_not_change_and_keep_batchnorm_statistics(manifest, tmp_path):
    result = train(quick(manifest, name="frozen5", freeze=5, epochs=1), runs_dir=tmp_path)
    tuned, _ = load_tensors(result.run.file("model.safetensors"))
    original = models.build("mobilenet_v2", pretrained=True).state_dict()
    for key, value in original.items():
        block = int(key.split(".")[1]) if key.startswith("features.") else None
        if block is not None and block < 5:
            assert torch.equal(tuned[key], value), key  # weights and BatchNorm running statistics
    assert not torch.equal(tuned["features.10.conv.0.0.weight"], original["features.10.conv.0.0.weight"])
    assert not torch.equal(tuned["features.10.conv.0.1.running_mean"], original["features.10.conv.0.1.running_mean"])


def test_double_fine_tuning_starts_from_the_first_run(manifest, tmp_path):
    first = train(quick(manifest, name="stage1", task="style", epochs=1), runs_dir=tmp_path)
    second = train(quick(manifest, name="stage2", task="medium", epochs=1, freeze=19, init_from=str(first.run.path),
                         split_from=str(first.run.path)),  # the same held-out images: nothing leaks
                   runs_dir=tmp_path)
    a, _ = load_tensors(first.run.file("model.safetensors"))
    b, meta = load_tensors(second.run.file("model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("features."))
    assert b["classifier.1.weight"].shape[0] == 3 and ModelCard.from_metadata(meta).tasks == ("medium",)


def test_scratch_starts_from_random_weights(manifest, tmp_path):
    result = train(quick(manifest, name="scratch", strategy="scratch", epochs=1), runs_dir=tmp_path)
    tuned, _ = load_tensors(result.run.file("model.safetensors"))
    original = models.build("mobilenet_v2", pretrained=True).state_dict()
    assert not torch.allclose(tuned["features.0.0.weight"], original["features.0.0.weight"], atol=0.05)


def test_multi_label_task(small_synthetic, tmp_path):
    table = small_synthetic.table.assign(tags=small_synthetic.table["style"] + ";" + small_synthetic.table["medium"])
    table[["path", "tags"]].to_csv(tmp_path / "tags.csv", index=False)
    for strategy in ("off_the_shelf", "fine_tune"):
        result = train(quick(str(tmp_path / "tags.csv"), task="tags", separator=";", strategy=strategy,
                             name=f"tags-{strategy}", epochs=1), runs_dir=tmp_path)
        tags = small_synthetic.classes("style") + small_synthetic.classes("medium")
        assert set(result.metrics["per_class_AP"]) <= set(tags)
        # random scores give an AP near the positive rate: 1/8 for a style, about 1/3 for a medium
        chance = (8 * (1 / 8) + 3 * (1 / 3)) / 11
        assert result.metrics["mAP"] > chance + 0.15, strategy


@pytest.mark.slow
def test_existing_run_is_not_overwritten(manifest, tmp_path):
    train(quick(manifest, name="once", strategy="off_the_shelf"), runs_dir=tmp_path)
    with pytest.raises(FileExistsError, match="resume"):
        train(quick(manifest, name="once", strategy="off_the_shelf"), runs_dir=tmp_path)
    with pytest.raises(ValueError, match="image_size"):
        train(quick(manifest, name="once", strategy="off_the_shelf", image_size=96), runs_dir=tmp_path, resume=True)


# ---- interruption ---------------------------------------------------------------------------------
def _cli_train(manifest: str, runs: Path, name: str) -> list[str]:
    return [sys.executable, "-m", "artlab", "train", "--data", manifest, "--task", "style", "--strategy", "fine_tune",
            "--epochs", "3", "--image-size", "64", "--batch-size", "8", "--device", "cpu", "--name", name,
            "--runs-dir", str(runs), "--resume"]


@pytest.mark.slow
def test_sigkill_mid_epoch_resumes_to_the_same_result(manifest, tmp_path):
    env = os.environ | {"TQDM_DISABLE": "1",
                        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    assert main(_cli_train(manifest, tmp_path / "plain", "run")[3:]) == 0  # the reference, uninterrupted, in-process
    reference = Run(tmp_path / "plain" / "run")

    run = Run(tmp_path / "killed" / "run")
    process = subprocess.Popen(_cli_train(manifest, tmp_path / "killed", "run"), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not run.file("checkpoint.safetensors").exists():  # epoch 1 is complete: kill at once, wherever it is
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert run.file("checkpoint.safetensors").exists() and not run.finished

    subprocess.run(_cli_train(manifest, tmp_path / "killed", "run"), check=True, env=env, capture_output=True)
    assert run.finished and len(run.history()) == 3
    assert run.history()["epoch"].tolist() == [1, 2, 3]
    assert run.metrics()["confusion_matrix"] == reference.metrics()["confusion_matrix"]
    assert run.history()["train_loss"].tolist() == pytest.approx(reference.history()["train_loss"].tolist())
    assert not list(run.path.glob(".*.part"))
    load_tensors(run.file("model.safetensors"))  # every file parses


# ---- CLI --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_train_eval_runs(manifest, tmp_path, capsys):
    assert main(["train", "--data", manifest, "--strategy", "off_the_shelf", "--image-size", "64", "--name", "cli",
                 "--runs-dir", str(tmp_path)]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert main(["eval", str(tmp_path / "cli"), "--split", "val"]) == 0
    assert "val split" in capsys.readouterr().out
    assert main(["runs", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "cli" in out and "finished" in out
    assert main(["train", "--data", manifest, "--task", "colour", "--runs-dir", str(tmp_path), "--name", "x"]) == 2
    assert "no task 'colour'" in capsys.readouterr().err


@pytest.mark.slow
def test_run_index_dataframe(manifest, tmp_path):
    from artlab.training import list_runs

    train(quick(manifest, name="indexed", strategy="off_the_shelf"), runs_dir=tmp_path)
    table = list_runs(tmp_path)
    assert isinstance(table, pd.DataFrame) and table.loc[0, "run"] == "indexed"
    assert table.loc[0, "status"] == "finished" and 0 <= table.loc[0, "accuracy"] <= 1


def test_cli_data_summary_and_models_list(manifest, tmp_path, capsys):
    html = tmp_path / "chart.html"
    assert main(["data", "summary", manifest, "--task", "medium", "--html", str(html)]) == 0
    out = capsys.readouterr().out
    assert "images per medium and split" in out and "format PNG" in out and html.stat().st_size > 1000
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in models.ARCHS)
    assert main(["data", "summary", str(tmp_path / "nowhere")]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_report(manifest, tmp_path):
    from artlab.experiments import compare_strategies

    table, html = compare_strategies(data=manifest, task="style", epochs=1, image_size=64, runs_dir=tmp_path / "runs",
                                     reports_dir=tmp_path / "reports", batch_size=16, device="cpu")
    assert table["strategy"].tolist() == ["off_the_shelf", "fine_tune", "scratch"]
    csv = pd.read_csv(tmp_path / "reports" / "strategies-manifest-style.csv")
    assert csv["accuracy"].tolist() == pytest.approx(table["accuracy"].tolist())
    assert html.is_file() and "Plotly.newPlot" in html.read_text()
    assert (html.parent / "plotly.min.js").stat().st_size > 1_000_000  # opens offline
    # a second call reuses the finished runs instead of training again
    again, _ = compare_strategies(data=manifest, task="style", epochs=1, image_size=64, runs_dir=tmp_path / "runs",
                                  reports_dir=tmp_path / "reports", batch_size=16, device="cpu")
    assert again.equals(table)


@pytest.mark.slow
def test_off_the_shelf_on_real_genres(genres_dir, tmp_path):
    """Real paintings (with PNG/WebP/GIF files named .jpg): the reference probe reaches about 77% at 96 px (80% at
    128 px, half again the time; chance 20%)."""
    result = train(TrainConfig(data=str(genres_dir), task="label", strategy="off_the_shelf", image_size=96,
                               device="cpu", name="genres"), runs_dir=tmp_path)
    assert result.metrics["n_images"] >= 150 and result.accuracy > 0.65, result.accuracy


# ---- collections as training sees them -------------------------------------------------------------
def _write_image(path: Path, colour=(90, 60, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 9), colour).save(path)


@pytest.mark.slow
def test_synthetic_artists_are_learnable_but_not_trivially(tmp_path):
    """The embedded default's artist task: an off-the-shelf probe lands well above chance, well below 100%."""
    result = train(TrainConfig(data="synthetic", task="artist", strategy="off_the_shelf", device="cpu"),
                   runs_dir=tmp_path)
    assert 3 / 24 < result.accuracy < 0.9, result.accuracy  # chance is 1/24


def test_training_refuses_a_split_without_test_images(tmp_path):
    for i in range(12):
        _write_image(tmp_path / ("train" if i < 9 else "val") / ("a" if i % 2 else "b") / f"{i}.jpg", (20 * i, 60, 30))
    with pytest.raises(ValueError, match="no test images"):
        prepare_collection(TrainConfig(data=str(tmp_path), task="label"))
    assert Counter(prepare_collection(TrainConfig(data=str(tmp_path), task="label", split="random",
                                                  val_fraction=0.25, test_fraction=0.25)).table["split"]) == \
        {"train": 6, "val": 3, "test": 3}
