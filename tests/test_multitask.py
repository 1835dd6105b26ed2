"""Multi-task learning: one backbone, one head per task, labels missing for a task masked out of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from artlab.cli import main
from artlab.experiments import audit
from artlab.runs import load_network
from artlab.training import TrainConfig, evaluate_run, list_runs, prepare_collection, train
from artlab.training.api import predictions
from artlab.training.tasks import MISSING, Task, Tasks


# ---- the masked loss against a hand computation -------------------------------------------------
def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def test_masked_loss_by_hand():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 5)).astype(np.float32)  # task a: 3 classes, task b: 2 labels (multi-label)
    a = np.array([0, 2, MISSING, 1, MISSING, 0])
    b = np.array([[1, 0], [np.nan, np.nan], [0, 1], [1, 1], [0, 0], [np.nan, np.nan]], dtype=np.float32)
    heads = Tasks([Task("a", list("xyz"), False, 2.0, 0), Task("b", ["p", "q"], True, 0.5, 3)])
    loss = heads.loss(torch.from_numpy(logits), {"a": torch.from_numpy(a), "b": torch.from_numpy(b)})

    rows_a = np.flatnonzero(a != MISSING)
    ce = -np.mean(_log_softmax(logits[rows_a, :3])[np.arange(len(rows_a)), a[rows_a]])
    rows_b = [0, 2, 3, 4]
    z, y = logits[rows_b, 3:].astype(np.float64), b[rows_b]
    bce = np.mean(np.log1p(np.exp(-np.abs(z))) + np.maximum(z, 0) - z * y)
    assert loss.item() == pytest.approx(2.0 * ce + 0.5 * bce, rel=1e-5)


def test_an_unlabelled_image_sends_no_gradient_to_that_task():
    logits = torch.randn(4, 5, requires_grad=True)
    heads = Tasks([Task("a", list("xyz"), False, 1.0, 0), Task("b", ["p", "q"], False, 1.0, 3)])
    heads.loss(logits, {"a": torch.tensor([0, MISSING, 2, MISSING]), "b": torch.tensor([1, 0, MISSING, 1])}).backward()
    grad = logits.grad
    assert torch.all(grad[[1, 3], :3] == 0) and torch.all(grad[2, 3:] == 0)
    assert torch.all(grad[[0, 2], :3].abs().sum(1) > 0) and torch.all(grad[[0, 1, 3], 3:].abs().sum(1) > 0)


def test_a_batch_without_any_label_of_a_task_adds_nothing():
    heads = Tasks([Task("a", list("xy"), False, 1.0, 0)])
    loss = heads.loss(torch.randn(3, 2), {"a": torch.tensor([MISSING] * 3)})
    assert loss.item() == 0.0


# ---- configuration ---------------------------------------------------------------------------
def test_task_lists_are_read_from_text_and_checked():
    config = TrainConfig(task="style, artist", task_weights="1,0.5")
    assert config.task == ["style", "artist"] and config.tasks == ["style", "artist"]
    assert config.task_weights == [1.0, 0.5]
    assert TrainConfig(task=["style"]).task == "style"  # one task stays a plain name (same run names as before)
    assert "style+artist" in TrainConfig(task="style,artist").resolved(["style"]).name
    for bad, message in ((dict(task="style,style"), "twice"), (dict(task="a,b", task_weights="1"), "2 task"),
                         (dict(task="a,b", task_weights="0,0"), "not all 0"),
                         (dict(task="a,b", strategy="off_the_shelf"), "one per task")):
        with pytest.raises(ValueError, match=message):
            TrainConfig(**bad)


# ---- end to end on a manifest mixing single- and multi-label tasks with gaps -------------------
@pytest.fixture(scope="module")
def gappy(small_synthetic, tmp_path_factory) -> Path:
    """style (complete), artist (a third missing) and tags (multi-label, a sixth missing)."""
    table = small_synthetic.table.copy()
    table["artist"] = [a if i % 3 else "" for i, a in enumerate(table["artist"])]
    table["tags"] = [f"{s};{m}" if i % 6 != 1 else "" for i, (s, m) in
                     enumerate(zip(table["style"], table["medium"]))]
    path = tmp_path_factory.mktemp("gappy") / "gappy.csv"
    table[["path", "style", "artist", "tags"]].to_csv(path, index=False)
    return path


def _config(path: Path, **overrides) -> TrainConfig:
    settings = dict(data=str(path), task="style,artist,tags", separator=";", multi_label="tags", image_size=64,
                    epochs=3, batch_size=16, device="cpu")
    return TrainConfig(**(settings | overrides))


def test_images_missing_one_label_are_kept_for_the_others(gappy):
    collection = prepare_collection(_config(gappy).resolved([]))
    manifest = pd.read_csv(gappy, keep_default_na=False)
    assert len(collection) == len(manifest)  # nothing dropped: every image has a style
    assert collection.multi_label == {"style": False, "artist": False, "tags": True}
    assert collection.table["artist"].isna().sum() == (manifest["artist"] == "").sum()


def test_multi_task_run_end_to_end(gappy, tmp_path):
    result = train(_config(gappy, name="multi"), runs_dir=tmp_path)
    run = result.run
    card = run.card()
    assert card.tasks == ("style", "artist", "tags") and card.multi_label["tags"]
    model = load_network(run)
    assert model(torch.zeros(1, 3, 64, 64)).shape[1] == card.num_outputs == 8 + 24 + 11

    split = pd.read_csv(run.file("split.csv"), keep_default_na=False)
    test = split[split["split"] == "test"]
    metrics = result.metrics["tasks"]
    assert metrics["style"]["n_images"] == len(test)
    assert metrics["artist"]["n_images"] == (test["artist"] != "").sum()  # unlabelled images masked out
    assert metrics["tags"]["n_images"] == (test["tags"] != "[]").sum()
    assert "mAP" in metrics["tags"] and "accuracy" in metrics["artist"]
    assert {"val_score_style", "val_score_artist", "val_score_tags"} <= set(run.history().columns)

    # the per-task metrics are what the per-task scores say, recomputed from the saved model
    artist = predictions(run, task="artist")
    assert len(artist.paths) == metrics["artist"]["n_images"] and artist.scores.shape[1] == 24
    assert metrics["artist"]["accuracy"] == pytest.approx(np.mean(artist.scores.argmax(1) == artist.targets))
    assert evaluate_run(run)["tasks"]["artist"]["accuracy"] == pytest.approx(metrics["artist"]["accuracy"])
    # style is learned on the synthetic collection (8 styles: chance 12.5%)
    assert metrics["style"]["accuracy"] > 0.3

    row = list_runs(tmp_path).set_index("run").loc["multi"]
    assert row["style accuracy"] == pytest.approx(metrics["style"]["accuracy"])
    found = audit(run, by="style", task="artist", min_size=1)
    assert found.table["images"].sum() == metrics["artist"]["n_images"]
    with pytest.raises(KeyError, match="trained on"):
        predictions(run, task="medium")

    # the analyses take the task whose classes measure the top-k concentration
    from artlab.analysis import Comparison, analyze

    found = analyze(Comparison(str(run.path), task="artist", what=("topk",), k=3))
    assert sorted(found.labels) == sorted(a for a in split["artist"] if a)  # the images with an artist label
    unlabelled = found.tables["skipped_images"]
    assert len(unlabelled) == (split["artist"] == "").sum() and set(unlabelled["reason"]) == {"no artist label"}
    with pytest.raises(ValueError, match="no task 'medium'"):
        analyze(Comparison(str(run.path), task="medium", what=("params",)))


@pytest.mark.slow
def test_multi_task_resumes_and_works_from_the_cli(gappy, tmp_path, capsys):
    args = ["--runs-dir", str(tmp_path), "--data", str(gappy), "--task", "style,artist", "--image-size", "64",
            "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--name", "cli-multi",
            "--task-weights", "1,2", "--strategy", "scratch"]
    assert main(["train", *args]) == 0
    assert main(["eval", str(tmp_path / "cli-multi")]) == 0
    out = capsys.readouterr().out
    assert "artist" in out and "style" in out
    # a single-task run on the same data is unchanged by multi-task support: flat metrics
    single = train(_config(gappy, task="style", name="single", epochs=1, multi_label=None, separator=None),
                   runs_dir=tmp_path)
    assert "accuracy" in single.metrics and "tasks" not in single.metrics


def test_multitask_study_pairs_each_task_on_the_same_test_images(gappy, tmp_path):
    from artlab.experiments import multitask_study

    base = _config(gappy, task=None, separator=None, multi_label=None, epochs=1)
    study = multitask_study(base, ["style", "artist"], seeds=(0,), runs_dir=tmp_path, name="mt")
    assert sorted(zip(study.cells["setting"], study.cells["task"])) == [
        ("multi-task", "artist"), ("multi-task", "style"), ("single-task", "artist"), ("single-task", "style")]
    multi = pd.read_csv(tmp_path / "mt-all-seed0" / "split.csv", keep_default_na=False)
    alone = pd.read_csv(tmp_path / "mt-artist-seed0" / "split.csv", keep_default_na=False)
    labelled = multi[multi["artist"] != ""]
    assert dict(zip(alone["path"], alone["split"])) == dict(zip(labelled["path"], labelled["split"]))
    cells = study.cells.set_index(["task", "setting"])["score"]
    row = study.difference.set_index("task").loc["artist"]
    assert row["multi - single"] == pytest.approx(cells["artist", "multi-task"] - cells["artist", "single-task"])
    assert study.report.is_file() and (tmp_path / "reports" / "mt-cells.csv").is_file()
    assert study.run(0) == tmp_path / "mt-all-seed0" and study.run(0, "artist") == tmp_path / "mt-artist-seed0"
    weights = (tmp_path / "mt-all-seed0" / "model.safetensors").stat().st_mtime_ns
    again = multitask_study(base, ["style", "artist"], seeds=(0,), runs_dir=tmp_path, name="mt")
    assert (tmp_path / "mt-all-seed0" / "model.safetensors").stat().st_mtime_ns == weights  # reused, not retrained
    pd.testing.assert_frame_equal(again.cells, study.cells)
