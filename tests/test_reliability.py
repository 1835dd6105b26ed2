"""What artlab guarantees: a run folder never lies, never escapes runs/, never leaks test images.

Each test reproduces one way a hostile but realistic user broke an earlier version.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from artlab.cli import main
from artlab.io import DamagedFile, read_json, write_json
from artlab.runs import Run, RunBusy
from artlab.training import TrainConfig, evaluate_run, train


def _painting(path: Path, seed: int, size: int = 48) -> None:
    """A small distinct image (noise from `seed`), so no two files are byte-identical."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _collection(root: Path, classes: int = 3, per_class: int = 12, tag_column: bool = False) -> Path:
    """A manifest collection of `classes` x `per_class` distinct images; returns the manifest path."""
    rows = ["path,style" + (",tags" if tag_column else "")]
    for c in range(classes):
        for i in range(per_class):
            name = f"img/c{c}_{i}.png"
            _painting(root / name, 1000 * c + i)
            rows.append(f"{name},style{c}" + (f",t{c}|x;other" if tag_column else ""))
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root / "manifest.csv"


def quick(data: Path | str, **overrides) -> TrainConfig:
    settings = dict(data=str(data), task="style", image_size=32, epochs=2, batch_size=8, device="cpu",
                    strategy="fine_tune", name="r")
    return TrainConfig(**(settings | overrides))


def _interrupted(config: TrainConfig, runs: Path, monkeypatch) -> Run:
    """A run stopped after training, before its final evaluation: a model and a checkpoint, no metrics."""
    import artlab.training.api as api

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(api, "_evaluate", stop)
        with pytest.raises(KeyboardInterrupt):
            train(config, runs_dir=runs)
    run = Run(runs / config.name)
    assert run.file("checkpoint.safetensors").is_file() and not run.finished
    return run


# ---- 1. a run folder is a promise ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../x", "a/b", "/abs", "..", ".", "x/../../y", ""])
def test_run_names_must_be_plain(name, tmp_path):
    with pytest.raises(ValueError, match="plain name"):
        Run.named(name, tmp_path)
    if name:
        with pytest.raises(ValueError, match="plain name"):
            TrainConfig(name=name)


def test_cli_refuses_a_name_that_escapes_runs(tmp_path, capsys):
    data = _collection(tmp_path / "c")
    assert main(["train", "--data", str(data), "--name", "../escaped", "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "plain name" in capsys.readouterr().err
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "runs").exists()


def test_a_second_process_on_the_same_run_is_refused_and_a_dead_ones_lock_taken_over(tmp_path):
    from artlab.training import list_runs

    data = _collection(tmp_path / "c")
    runs = tmp_path / "runs"
    holder = ("import sys, time\nfrom artlab.runs import Run\nlock = Run(sys.argv[1]).lock()\nlock.acquire()\n"
              "print('locked', flush=True)\ntime.sleep(60)\n")
    owner = subprocess.Popen([sys.executable, "-c", holder, str(runs / "r")], stdout=subprocess.PIPE, text=True,
                             env=os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    try:
        assert owner.stdout.readline().strip() == "locked"
        with pytest.raises(RunBusy, match=f"process {owner.pid}"):
            train(quick(data, strategy="off_the_shelf"), runs_dir=runs)
        assert not (runs / "r" / "config.yaml").exists(), "the refused process wrote into the run"
    finally:
        owner.kill()  # killed while holding the lock: the system releases it
        owner.wait()
    result = train(quick(data, strategy="off_the_shelf"), runs_dir=runs)
    assert result.run.finished and list_runs(runs).loc[0, "status"] == "finished"


def test_eval_never_marks_an_unfinished_run_finished(tmp_path, monkeypatch, capsys):
    data = _collection(tmp_path / "c")
    run = _interrupted(quick(data, epochs=3), tmp_path / "runs", monkeypatch)
    metrics = evaluate_run(run)
    assert "accuracy" in metrics and not run.finished and not run.file("evaluations").exists()
    assert main(["eval", str(run.path)]) == 0
    assert "unfinished" in capsys.readouterr().out and not run.finished
    resumed = train(quick(data, epochs=3), runs_dir=tmp_path / "runs", resume=True)
    assert resumed.run.finished and resumed.run.history()["epoch"].tolist() == [1, 2, 3]


def test_eval_of_a_finished_run_writes_beside_metrics_and_warns_on_changed_images(tmp_path):
    data = _collection(tmp_path / "c")
    run = train(quick(data, strategy="off_the_shelf"), runs_dir=tmp_path / "runs").run
    original = run.file("metrics.json").read_bytes()
    test_image = run.split_table().query("split == 'test'")["path"].iloc[0]
    _painting(Path(test_image), seed=999)  # the same file, other content
    with pytest.warns(UserWarning, match="1 changed"):
        metrics = evaluate_run(run)
    assert run.file("metrics.json").read_bytes() == original
    files = list(run.file("evaluations").glob("*-test.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["images_changed_since_training"] == 1
    assert metrics["images_changed_since_training"] == 1


def test_resume_reuses_the_recorded_split_or_refuses_with_the_difference(tmp_path, monkeypatch):
    data = _collection(tmp_path / "c")
    runs = tmp_path / "runs"
    run = _interrupted(quick(data), runs, monkeypatch)
    recorded = run.file("split.csv").read_bytes()
    # images added to the collection: the resumed run keeps its split, exactly
    with open(data, "a") as manifest:
        for i in range(6):
            _painting(tmp_path / "c" / "img" / f"new{i}.png", 5000 + i)
            manifest.write(f"img/new{i}.png,style{i % 3}\n")
    with pytest.warns(UserWarning, match="6 image"):
        result = train(quick(data), runs_dir=runs, resume=True)
    assert run.file("split.csv").read_bytes() == recorded and result.metrics["n_images"] == \
        (run.split_table()["split"] == "test").sum()
    # an image removed from an interrupted run: refused, naming what went missing
    run2 = _interrupted(quick(data, name="r2"), runs, monkeypatch)
    gone = run2.split_table()["path"].iloc[0]
    os.remove(gone)
    with pytest.raises(ValueError, match="1 image\\(s\\) went missing"):
        train(quick(data, name="r2"), runs_dir=runs, resume=True)


def test_a_finished_run_reused_on_a_changed_collection_says_what_changed(tmp_path):
    data = _collection(tmp_path / "c")
    runs = tmp_path / "runs"
    first = train(quick(data, strategy="off_the_shelf"), runs_dir=runs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the collection as it was: reused without a word
        assert train(quick(data, strategy="off_the_shelf"), runs_dir=runs, resume=True).metrics == first.metrics
    split, recorded = first.run.split_table(), first.run.file("split.csv").read_text()
    rows = data.read_text().splitlines()
    rows[1] = rows[1].replace("style0", "style1")  # relabelled
    rows += ["img/new0.png,style2", "img/new1.png,style0"]  # added
    data.write_text("\n".join(rows) + "\n")
    for i in range(2):
        _painting(tmp_path / "c" / "img" / f"new{i}.png", 7000 + i)
    os.remove(split["path"].iloc[5])  # missing
    _painting(Path(split["path"].iloc[6]), seed=999)  # the same file, other content
    with pytest.warns(UserWarning, match=r"reused as trained.*2 image\(s\) added, 1 image\(s\) missing, "
                                         r"1 image\(s\) changed, 1 image\(s\) relabelled.*--name"):
        again = train(quick(data, strategy="off_the_shelf"), runs_dir=runs, resume=True)
    assert again.metrics == first.metrics and again.run.file("split.csv").read_text() == recorded


def test_a_damaged_split_is_never_trusted(tmp_path, monkeypatch):
    data = _collection(tmp_path / "c")
    run = _interrupted(quick(data), tmp_path / "runs", monkeypatch)
    text = run.file("split.csv").read_text()
    run.file("split.csv").write_text(text[: len(text) // 2])  # truncated by hand or by a full disk
    with pytest.raises(DamagedFile, match="split.csv is damaged"):
        train(quick(data), runs_dir=tmp_path / "runs", resume=True)
    with pytest.raises(DamagedFile, match="split.csv"):
        evaluate_run(run)


def test_history_comes_from_the_checkpoint(tmp_path, monkeypatch):
    """A kill between the checkpoint and the history write loses no history row."""
    data = _collection(tmp_path / "c")
    run = _interrupted(quick(data, epochs=2), tmp_path / "runs", monkeypatch)
    run.file("history.csv").write_text("epoch,train_loss\n1,0.5\n")  # as if killed before row 2 was written
    result = train(quick(data, epochs=2), runs_dir=tmp_path / "runs", resume=True)
    assert result.run.history()["epoch"].tolist() == [1, 2]
    assert "val_score" in result.run.history()


def test_a_failed_start_leaves_nothing_that_blocks_the_name(tmp_path):
    data = _collection(tmp_path / "c")
    runs = tmp_path / "runs"
    with pytest.raises(KeyError, match="features.99"):
        train(quick(data, strategy="off_the_shelf", layer="features.99"), runs_dir=runs)
    with pytest.raises(ValueError, match="at most 19"):
        train(quick(data, freeze=25), runs_dir=runs)
    assert not (runs / "r").exists()
    # a folder left by a start that failed before training anything is taken over by a corrected rerun
    (runs / "r").mkdir(parents=True)
    (runs / "r" / "config.yaml").write_text("name: r\nlr: 0.5\n")
    assert train(quick(data, strategy="off_the_shelf"), runs_dir=runs).run.finished


# ---- 2. no silent wrong science -----------------------------------------------------------------------------
def test_duplicated_manifest_rows_never_cross_train_and_test(tmp_path):
    data = _collection(tmp_path / "c", classes=3, per_class=20)
    lines = data.read_text().splitlines()
    data.write_text("\n".join(lines + lines[1:]) + "\n")  # every row twice
    result = train(quick(data, strategy="off_the_shelf"), runs_dir=tmp_path / "runs")
    split = result.run.split_table()
    assert not split["path"].duplicated().any()
    skipped = pd.read_csv(result.run.file("skipped.csv"))
    assert skipped["reason"].str.contains("repeats row").sum() == 60


def test_byte_identical_files_under_two_names_stay_in_one_split(tmp_path):
    from artlab.data import load

    data = _collection(tmp_path / "c", classes=2, per_class=30)
    rows = data.read_text().splitlines()
    for i in range(10):  # copies of ten images under other names, some in the other class
        shutil.copy(tmp_path / "c" / "img" / f"c0_{i}.png", tmp_path / "c" / "img" / f"copy{i}.png")
        rows.append(f"img/copy{i}.png,style{i % 2}")
    data.write_text("\n".join(rows) + "\n")
    collection = load(str(data)).check_images()
    duplicates = collection.duplicates()
    assert len(duplicates) == 20 and duplicates["group"].nunique() == 10
    for seed in range(5):
        split = collection.split(task="style", seed=seed)
        merged = split.duplicates()
        assert (merged.groupby("group")["split"].nunique() == 1).all(), seed
    # an official split that puts copies on both sides keeps the held-out copy only
    table = collection.table.assign(split=["test" if "copy" in p else "train" for p in collection.table["path"]])
    official = type(collection)(table, collection.multi_label, "c", image_info=collection.image_info).split()
    assert len(official) == len(collection) - 10
    assert official.skipped["reason"].str.contains("byte-identical to a test image").sum() == 10


def test_non_finite_learning_rates_are_refused(tmp_path, capsys):
    data = _collection(tmp_path / "c")
    for bad in ("nan", "inf", "-0.1", "1e300"):
        assert main(["train", "--data", str(data), "--lr", bad, "--runs-dir", str(tmp_path / "runs")]) == 2
        assert "lr must be" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def _train_counting_steps(data: Path, runs: Path, capsys) -> tuple[int, str, int]:
    import artlab.training.loops as loops

    steps = []
    real = loops._check_finite
    loops._check_finite = lambda model, desc: (steps.append(desc), real(model, desc))
    try:
        code = main(["train", "--data", str(data), "--image-size", "32", "--epochs", "2", "--name", "bad",
                     "--runs-dir", str(runs)])
    finally:
        loops._check_finite = real
    return code, capsys.readouterr().err, len(steps)


def test_a_loss_that_becomes_nan_stops_on_its_first_step(tmp_path, capsys, monkeypatch):
    from artlab.training.tasks import Tasks

    plain = Tasks.loss
    monkeypatch.setattr(Tasks, "loss", lambda self, *a: plain(self, *a) * float("nan"))
    code, err, steps = _train_counting_steps(_collection(tmp_path / "c"), tmp_path / "runs", capsys)
    assert code == 2 and steps == 0
    assert err == "artlab: error: epoch 1: loss became nan; lower the learning rate (--lr)\n"
    assert not (tmp_path / "runs" / "bad" / "model.safetensors").exists()


def test_weights_that_become_infinite_stop_the_run_and_are_never_saved(tmp_path, capsys, monkeypatch):
    from artlab.models.optim import SGD  # the optimiser a run trains with

    real_step = SGD.step

    def overflowing_step(self, *args, **kwargs):
        out = real_step(self, *args, **kwargs)
        self.param_groups[0]["params"][0].data.fill_(float("inf"))
        return out

    monkeypatch.setattr(SGD, "step", overflowing_step)
    code, err, steps = _train_counting_steps(_collection(tmp_path / "c"), tmp_path / "runs", capsys)
    assert code == 2 and steps == 1 and "NaN or infinite" in err and err.count("\n") == 1
    assert not (tmp_path / "runs" / "bad" / "model.safetensors").exists()


def test_one_class_is_refused_and_tiny_classes_are_named(tmp_path):
    data = _collection(tmp_path / "c", classes=1)
    with pytest.raises(ValueError, match="at least two"):
        train(quick(data, strategy="off_the_shelf"), runs_dir=tmp_path / "runs")
    rows = _collection(tmp_path / "d", classes=2, per_class=15).read_text().splitlines()
    _painting(tmp_path / "d" / "img" / "lonely.png", 77)
    (tmp_path / "d" / "manifest.csv").write_text("\n".join(rows + ["img/lonely.png,rare"]) + "\n")
    with pytest.warns(UserWarning, match="class 'rare' has 1 image"):
        train(quick(tmp_path / "d" / "manifest.csv", strategy="off_the_shelf"), runs_dir=tmp_path / "runs")


def test_unlabelled_rows_and_vanished_images_are_counted(tmp_path):
    data = _collection(tmp_path / "c")
    rows = data.read_text().splitlines()
    _painting(tmp_path / "c" / "img" / "nolabel.png", 55)
    data.write_text("\n".join(rows + ["img/nolabel.png,"]) + "\n")
    run = train(quick(data, strategy="off_the_shelf"), runs_dir=tmp_path / "runs").run
    skipped = pd.read_csv(run.file("skipped.csv"))
    assert skipped["reason"].tolist() == ["no style label"]
    os.remove(run.split_table().query("split == 'test'")["path"].iloc[0])
    with pytest.warns(UserWarning, match="1 of its 36 images are missing"):
        metrics = evaluate_run(run)
    assert metrics["images_missing_since_training"] == 1


def test_class_names_with_separators_work_end_to_end(tmp_path):
    root = tmp_path / "c"
    rows = ["path,tags"]
    for i in range(36):
        _painting(root / f"{i}.png", i)
        rows.append(f"{i}.png,\"{'a|b' if i % 2 else 'c,d'};{'x' if i % 3 else 'y|z'}\"")
    (root / "m.csv").write_text("\n".join(rows) + "\n")
    result = train(quick(root / "m.csv", task="tags", separator=";", strategy="off_the_shelf"),
                   runs_dir=tmp_path / "runs")
    assert set(result.metrics["classes"]) == {"a|b", "c,d", "x", "y|z"}
    assert evaluate_run(result.run)["mAP"] == pytest.approx(result.metrics["mAP"])


@pytest.mark.parametrize("value", [0.0, 1.0, 1e3, -7.5])
def test_cka_of_constant_features_is_nan_with_a_warning(value):
    from artlab.analysis import cka_of_features

    constant = np.full((20, 4), value)
    other = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.warns(RuntimeWarning, match="constant"):
        assert np.isnan(cka_of_features(constant, other))
    with pytest.warns(RuntimeWarning, match="constant"):
        assert np.isnan(cka_of_features(other, constant, debiased=True))


# ---- 3. one-line errors for users' mistakes and broken files -------------------------------------------------
def test_damaged_run_files_give_one_line_errors_and_runs_lists_the_rest(tmp_path, capsys):
    data = _collection(tmp_path / "c")
    runs = tmp_path / "runs"
    good = train(quick(data, strategy="off_the_shelf", name="good"), runs_dir=runs).run
    shutil.copytree(good.path, runs / "truncated")
    model = runs / "truncated" / "model.safetensors"
    model.write_bytes(model.read_bytes()[:100])
    assert main(["eval", str(runs / "truncated")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.safetensors" in err and "damaged" in err
    (runs / "empty-model").mkdir()
    shutil.copy(good.file("config.yaml"), runs / "empty-model")
    (runs / "empty-model" / "model.safetensors").write_bytes(b"")
    assert main(["eval", str(runs / "empty-model")]) == 2
    assert "damaged" in capsys.readouterr().err
    (runs / "bad-yaml").mkdir()
    (runs / "bad-yaml" / "config.yaml").write_text("name: [unclosed\n")
    (runs / "bad-json").mkdir()
    shutil.copy(good.file("config.yaml"), runs / "bad-json")
    (runs / "bad-json" / "metrics.json").write_text("{\"accuracy\": 0.")
    assert main(["runs", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "good" in out and "finished" in out and "bad-yaml" in out
    from artlab.training import list_runs

    status = list_runs(runs).set_index("run")["status"].to_dict()
    assert status == {"bad-json": "damaged", "bad-yaml": "damaged", "empty-model": "incomplete",
                      "good": "finished", "truncated": "finished"}


def test_user_mistakes_about_data_give_one_line_errors(tmp_path, capsys):
    _painting(tmp_path / "a.jpg", 1)
    assert main(["train", "--data", str(tmp_path / "a.jpg"), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "is a file, not a collection" in capsys.readouterr().err
    for i in range(4):
        (tmp_path / "broken" / "cls").mkdir(parents=True, exist_ok=True)
        (tmp_path / "broken" / "cls" / f"{i}.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    assert main(["train", "--data", str(tmp_path / "broken"), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "none of its 4 image files is usable" in err and err.count("\n") == 1
    assert main(["train", "--data", str(tmp_path), "--image-size", "100000"]) == 2
    assert "image_size must be between 32 and 1024" in capsys.readouterr().err


def test_read_only_runs_folder_is_one_line(tmp_path, capsys, monkeypatch):
    import artlab.io

    data = _collection(tmp_path / "c")

    def denied(*args, dir=None, **kwargs):
        raise PermissionError(13, "Permission denied", str(dir))

    monkeypatch.setattr(artlab.io.tempfile, "mkstemp", denied)
    assert main(["train", "--data", str(data), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("artlab: error: permission denied") and err.count("\n") == 1


def test_an_image_unreadable_during_training_is_skipped_and_reported(tmp_path, monkeypatch):
    import artlab.data.loading as loading
    from artlab.data.images import ImageError

    data = _collection(tmp_path / "c")
    victim = str((tmp_path / "c" / "img" / "c1_3.png").resolve())
    real = loading.load_rgb

    def flaky(path, *args, **kwargs):
        if str(path) == victim:
            raise ImageError(path, "corrupt or truncated: became unreadable")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(loading, "load_rgb", flaky)
    result = train(quick(data, epochs=1), runs_dir=tmp_path / "runs")
    skipped = pd.read_csv(result.run.file("skipped.csv"))
    assert skipped["path"].tolist() == [victim] and "during training" in skipped["reason"].iloc[0]
    split = result.run.split_table().set_index("path")["split"]
    assert result.metrics["images_unreadable_now"] == int(split[victim] == "test")


def test_the_image_check_cache_does_not_vouch_for_changed_content(tmp_path):
    from artlab.data import scan

    path = tmp_path / "a.png"
    _painting(path, 1)
    assert scan([str(path)])["error"].isna().all()
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[-20:] = b"\0" * 20  # same size, same modification time, broken tail
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert scan([str(path)])["error"].notna().all()


def test_permission_denied_is_reported_as_unreadable(tmp_path, monkeypatch):
    import PIL.Image

    from artlab.data.images import ImageError, load_rgb

    _painting(tmp_path / "a.png", 1)

    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(PIL.Image, "open", denied)
    with pytest.raises(ImageError, match="unreadable: permission denied"):
        load_rgb(tmp_path / "a.png")


# ---- 4. collections as their publishers ship them -------------------------------------------------------------
@pytest.mark.parametrize("names", [("wikipaintings_train", "wikipaintings_val", "wikipaintings_test"),
                                   ("training", "validation", "testing"), ("Train", "valid", "test-set")])
def test_publishers_split_folders_are_recognised(tmp_path, names, capsys):
    from artlab.data import from_wikiart

    for number, (split_folder, count) in enumerate(zip(names, (6, 2, 3))):
        for i in range(count):
            _painting(tmp_path / split_folder / "Baroque" / f"rembrandt_{split_folder}{i}.jpg", 100 * number + i)
    collection = from_wikiart(tmp_path)
    assert Counter(collection.table["split"]) == {"train": 6, "val": 2, "test": 3}
    assert collection.split_origin.startswith("split folders")
    assert main(["data", "summary", str(tmp_path), "--layout", "wikiart"]) == 0
    assert f"Split: split folders {sorted(names)[0]}" in capsys.readouterr().out


def test_class_folders_named_like_splits_are_not_mistaken_for_a_split(tmp_path):
    from artlab.data import from_folders

    _painting(tmp_path / "test_patterns" / "a" / "1.png", 1)  # a class folder of nested images...
    _painting(tmp_path / "portraits" / "b" / "2.png", 2)  # ...beside one that names no split
    assert from_folders(tmp_path).table["split"].isna().all()


def test_data_summary_writes_files_only_where_asked(tmp_path, capsys, monkeypatch):
    data = _collection(tmp_path / "c")
    monkeypatch.chdir(tmp_path)
    assert main(["data", "summary", str(data)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]
    assert main(["data", "summary", str(data), "--html", str(tmp_path / "out" / "chart.html")]) == 0
    assert (tmp_path / "out" / "chart.html").is_file() and (tmp_path / "out" / "plotly.min.js").is_file()


def test_no_warning_escapes_a_clean_run(tmp_path):
    """The guarantees above cost nothing on a clean collection: no warning, no skipped.csv."""
    data = _collection(tmp_path / "c", classes=2, per_class=20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = train(quick(data, strategy="off_the_shelf"), runs_dir=tmp_path / "runs").run
    assert not run.file("skipped.csv").exists() and run.file("split.json").is_file()
    assert torch.isfinite(run.load_model()[0]["weight"]).all()


def test_damaged_cache_entries_are_recomputed_not_trusted(tmp_path, monkeypatch):
    from artlab.cache import cache_dir
    from artlab.data import scan

    monkeypatch.setenv("ARTLAB_CACHE", str(tmp_path / "cache"))  # damage only this test's entries, not the session's
    data = _collection(tmp_path / "c", classes=2, per_class=10)
    first = train(quick(data, strategy="off_the_shelf", name="one"), runs_dir=tmp_path / "runs")
    paths = first.run.split_table()["path"].tolist()
    for entry in list((cache_dir() / "features").glob("*.safetensors")) + list((cache_dir() / "scans").glob("*.csv")):
        entry.write_bytes(entry.read_bytes()[:40])  # truncated behind artlab's back
    assert scan(paths)["error"].isna().all()
    again = train(quick(data, strategy="off_the_shelf", name="two"), runs_dir=tmp_path / "runs")
    assert again.metrics["accuracy"] == first.metrics["accuracy"]


def test_double_fine_tuning_refuses_an_unfinished_first_stage(tmp_path, monkeypatch):
    data = _collection(tmp_path / "c")
    stage1 = _interrupted(quick(data, name="stage1"), tmp_path / "runs", monkeypatch)
    with pytest.raises(ValueError, match="has not finished training"):
        train(quick(data, name="stage2", init_from=str(stage1.path)), runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs" / "stage2").exists()


def test_analysis_reports_images_missing_since_training(tmp_path):
    from artlab.analysis import Comparison, analyze

    data = _collection(tmp_path / "c", classes=2, per_class=12)
    run = train(quick(data, epochs=1), runs_dir=tmp_path / "runs").run
    os.remove(run.split_table()["path"].iloc[0])
    with pytest.warns(UserWarning, match="1 of its 24 images are missing"):
        result = analyze(Comparison(run.path, what=("cka",), image_size=32))
    assert len(result.tables["skipped_images"]) == 1
    assert (run.path / "analysis" / "skipped_images.csv").is_file()
    assert result.tables["cka"]["n_images"].eq(23).all()


def test_the_summary_counts_images_without_a_label(tmp_path):
    from artlab.data import load

    data = _collection(tmp_path / "c", classes=2, per_class=4)
    _painting(tmp_path / "c" / "img" / "nolabel.png", 55)
    data.write_text(data.read_text() + "img/nolabel.png,\n")
    summary = load(str(data)).summary("style")
    assert summary.loc["(no label)", "total"] == 1 and summary["total"].sum() == 9


@pytest.mark.parametrize("data", ["~/art/Peintures françaises", "..", "_private/", "/x/.hidden", "a b"])
def test_default_names_are_always_plain(data):
    from artlab.runs import check_name
    from artlab.training.config import default_name

    assert check_name(default_name(TrainConfig(data=data, task="style")))


def test_options_that_would_crash_later_are_refused_at_once(tmp_path, capsys):
    data = _collection(tmp_path / "c")
    for option, value in (("--label-smoothing", "2"), ("--device", "gpu"), ("--test-fraction", "0.95")):
        assert main(["train", "--data", str(data), option, value, "--runs-dir", str(tmp_path / "runs")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("artlab: error: ") and err.count("\n") == 1, (option, err)
    assert not (tmp_path / "runs").exists()
    (tmp_path / "runs" / "empty").mkdir(parents=True)
    (tmp_path / "runs" / "empty" / "config.yaml").write_text("")
    assert main(["eval", str(tmp_path / "runs" / "empty")]) == 2
    assert "config.yaml is damaged" in capsys.readouterr().err


def test_a_networks_input_settings_survive_saving(tmp_path):
    """GoogLeNet fine-tuned from ImageNet re-scales its inputs: the reloaded network must too."""
    from artlab import models
    from artlab.models import ModelCard
    from artlab.runs import load_network

    model = models.build("googlenet", pretrained=False, num_classes=2)
    model.transform_input = True  # as after loading its ImageNet weights
    card = ModelCard(kind="network", arch="googlenet", tasks=("t",), classes={"t": ["a", "b"]},
                     multi_label={"t": False}, attributes={"transform_input": True})
    run = Run(tmp_path / "g")
    run.save_model(model.state_dict(), card)
    assert load_network(run).transform_input is True


def test_a_run_from_before_a_config_field_existed_is_reused(tmp_path):
    """Runs written by an older artlab (no task_weights, split_from, ... in config.yaml) resume and are reused."""
    import yaml

    config = quick(_collection(tmp_path / "c"), strategy="off_the_shelf")
    first = train(config, runs_dir=tmp_path / "runs")
    path = first.run.file("config.yaml")
    old = {k: v for k, v in yaml.safe_load(path.read_text()).items() if k not in ("task_weights", "split_from")}
    path.write_text(yaml.safe_dump(old))  # as artlab 0.1 wrote it: no closing line
    environment = json.loads(first.run.file("environment.json").read_text())
    first.run.file("environment.json").write_text(json.dumps(environment | {"artlab": "0.1.0"}))
    again = train(config, runs_dir=tmp_path / "runs", resume=True)
    assert again.metrics == first.metrics
    changed = TrainConfig(**(config.to_dict() | {"name": "r", "image_size": 48}))
    with pytest.raises(ValueError, match=r"differs in \['image_size'\]"):
        train(changed, runs_dir=tmp_path / "runs", resume=True)


# ---- 7. no target test image in an earlier stage (the leak guard) ------------------------------------------
def _source_holding(target: Path, root: Path, extra: int = 12) -> Path:
    """A source collection (another task, its own labels) holding byte-identical copies of every image of the
    `target` manifest under other names, plus `extra` images of its own."""
    rows = ["path,genre"]
    for i, line in enumerate(target.read_text().splitlines()[1:] if target.is_file() else []):
        copy = root / "copies" / f"copy_{i}.png"
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(target.parent / line.split(",")[0], copy)
        rows.append(f"{copy},g{i % 2}")
    for i in range(extra):
        _painting(root / "own" / f"own_{i}.png", 50_000 + i)
        rows.append(f"{root / 'own' / f'own_{i}.png'},g{i % 2}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root / "manifest.csv"


def _sha1s(paths) -> set[str]:
    from artlab.cache import file_digest

    return {file_digest(p, "sha1") for p in paths}


def _held_out(config: TrainConfig) -> set[str]:
    from artlab.training import prepare_collection

    table = prepare_collection(config).table
    return _sha1s(table.loc[table["split"].isin(["val", "test"]), "path"])


def test_a_source_stage_keeps_the_targets_validation_and_test_images_out(tmp_path):
    from artlab.training.api import keep_apart, kept_out

    target = quick(_collection(tmp_path / "t"), name="target")
    source = quick(_source_holding(Path(target.data), tmp_path / "s"), task="genre", name="source")
    unrelated = quick(_source_holding(tmp_path / "none.csv", tmp_path / "u"), task="genre", name="u")
    assert keep_apart(unrelated, [target]).keep_out is None  # nothing shared: the config (and its runs) unchanged
    guarded = keep_apart(source, [target])
    assert guarded.keep_out == [target.held_out_settings()]
    result = train(guarded, runs_dir=tmp_path / "runs")
    trained = _sha1s(result.run.split_table()["path"])
    held = _held_out(target)
    assert held and not trained & held  # no held-out target image in any part of the source stage
    skipped = pd.read_csv(result.run.file("skipped.csv"))
    assert _sha1s(skipped["path"]) == held and kept_out(result.run) == len(held)
    assert len(trained) == 36 + 12 - len(held)  # every other image is used
    # the target continues from the guarded source; from an unguarded one it is refused with the count
    assert train(replace_config(target, init_from=str(result.run.path)), runs_dir=tmp_path / "runs").run.finished
    leaky = train(replace_config(source, name="leaky"), runs_dir=tmp_path / "runs")
    split = leaky.run.split_table()
    leaked = len(held & _sha1s(split.loc[split["split"] == "train", "path"]))  # what it trained on
    with pytest.raises(ValueError, match=rf"trained on {leaked} image\(s\) of this run's validation or test"):
        train(replace_config(target, name="after-leaky", init_from=str(leaky.run.path)), runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs" / "after-leaky").exists()


def replace_config(config: TrainConfig, **changes) -> TrainConfig:
    return TrainConfig(**(config.to_dict() | changes))


def test_the_same_artwork_at_another_size_is_kept_out_too(tmp_path):
    from artlab.training import prepare_collection
    from artlab.training.api import keep_apart

    target = quick(_collection(tmp_path / "t"), name="target")
    table = prepare_collection(target).table
    test_image = table.loc[table["split"] == "test", "path"].iloc[0]
    source_manifest = _source_holding(tmp_path / "none.csv", tmp_path / "s", extra=6)  # no file in common
    bigger = tmp_path / "s" / "own" / "rescan.png"
    Image.open(test_image).resize((96, 96), Image.Resampling.BICUBIC).save(bigger)  # not the same file
    with source_manifest.open("a") as handle:
        handle.write(f"{bigger},g0\n")
    source = quick(source_manifest, task="genre", name="source")
    guarded = keep_apart(source, [target])  # a look-alike alone is enough to guard the source stage
    assert guarded.keep_out == [target.held_out_settings()]
    prepared = prepare_collection(guarded)
    assert str(bigger) not in set(prepared.table["path"]) and len(prepared) == 6
    assert prepared.skipped["reason"].tolist() == ["kept out: it looks like an image (perceptual hash within 6 "
                                                   "bits) in the validation or test split of manifest"]
    assert keep_apart(replace_config(source, data=str(_source_holding(tmp_path / "none.csv", tmp_path / "u",
                                                                       extra=6))), [target]).keep_out is None


def test_double_fine_tuning_and_sweeps_keep_the_target_test_split_out_of_their_source(tmp_path):
    import yaml

    from artlab.experiments import double_finetune, sweep

    target = quick(_collection(tmp_path / "t"), epochs=1, name="")
    source = quick(_source_holding(Path(target.data), tmp_path / "s"), task="genre", epochs=1, name="")
    study = double_finetune(source, target, seeds=(0,), runs_dir=tmp_path / "runs")
    first = Run(study.run("source stage", 0))
    assert first.name.endswith("-apart-source-seed0") or "-apart-" in first.name
    assert not _sha1s(first.split_table()["path"]) & _held_out(target)
    kept = int(study.cells.loc[study.cells["route"] == "source stage", "kept out"].iloc[0])
    assert kept == len(_held_out(target)) and f"{kept} (seed 0)" in study.report.read_text()
    # a sweep whose source is its own collection (the N largest classes first) keeps each seed's held-out images out
    result = sweep(target, {"source_classes": [2]}, seeds=[1], source=replace_config(target, epochs=1),
                   runs_dir=tmp_path / "runs", workers=1)
    source_run = Run(tmp_path / "runs" / next(n for n in os.listdir(tmp_path / "runs") if "-source-top2-seed1" in n))
    assert source_run.config()["keep_out"] == [target.held_out_settings()]
    held = _held_out(replace_config(target, seed=1))
    assert held and not _sha1s(source_run.split_table()["path"]) & held
    assert (result.cells["status"] == "finished").all()
    spec = yaml.safe_load(result.files[2].read_text())
    skipped = pd.read_csv(source_run.file("skipped.csv"))
    kept = skipped[skipped["reason"].str.startswith("kept out")]
    assert 0 < len(kept) and _sha1s(kept["path"]) <= held  # the held-out images among its two classes
    assert spec["kept out of the source runs"] == {source_run.name: len(kept)}


def test_one_source_stage_for_every_seed_keeps_every_seeds_test_split_out(tmp_path):
    from artlab.experiments import ROUTES, double_finetune
    from artlab.training.api import kept_out

    target = quick(_collection(tmp_path / "t"), epochs=1, name="")
    source = quick(_source_holding(Path(target.data), tmp_path / "s"), task="genre", epochs=1, name="")
    study = double_finetune(source, target, seeds=(0, 1), routes=(ROUTES[3],), shared_source=True,
                            runs_dir=tmp_path / "runs")
    assert study.run("source stage", 0) == study.run("source stage", 1)  # trained once
    first = Run(study.run("source stage", 0))
    each = [_held_out(replace_config(target, seed=seed)) for seed in (0, 1)]
    assert each[0] != each[1]  # the two seeds hold different images out: one split's guard would not do
    assert not _sha1s(first.split_table()["path"]) & (each[0] | each[1])
    assert kept_out(first) == len(each[0] | each[1])
    for seed in (0, 1):  # each seed's double route starts from it (the check of an earlier stage passed)
        assert Run(study.run(ROUTES[3], seed)).config()["init_from"] == str(first.path)
    assert "(seeds 0, 1)" in study.report.read_text() and study.report.stem.endswith("-shared0-1")
    assert study.summary.set_index("route").loc["source stage", "seeds"] == 1  # one run, counted once


def test_a_later_stage_is_reused_by_the_weights_it_started_from(tmp_path, monkeypatch):
    import artlab.training.api as api

    data = _collection(tmp_path / "c")
    runs = tmp_path / "runs"
    first = train(quick(data, epochs=1, name="source"), runs_dir=runs).run
    later = quick(data, epochs=1, name="later", init_from=str(first.path))
    result = train(later, runs_dir=runs)
    assert result.run.started_from() == first.weights_id() == api._started_from(later, result.run)

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    real_fit = api._fit
    monkeypatch.setattr(api, "_fit", no_training)
    renamed = tmp_path / "elsewhere" / "source-copy"  # the same network under another name: reused by its weights
    shutil.copytree(first.path, renamed)
    again = train(replace_config(later, init_from=str(renamed)), runs_dir=runs, resume=True)
    assert again.metrics == result.metrics
    shutil.rmtree(first.path)  # the earlier stage trained again under its name: another network
    monkeypatch.setattr(api, "_fit", real_fit)
    train(quick(data, epochs=1, name="source", seed=1), runs_dir=runs)
    monkeypatch.setattr(api, "_fit", no_training)
    assert api.reusable(later, runs) is None  # what sweeps ask before they train a cell
    for resume in (True, False):
        with pytest.raises(ValueError, match="before it was trained again"):
            train(later, runs_dir=runs, resume=resume)
    environment = result.run.file("environment.json")  # a run recorded before artlab kept its start: by name
    write_json(environment, {k: v for k, v in read_json(environment).items() if k != "started_from"})
    assert train(later, runs_dir=runs, resume=True).metrics == result.metrics
    assert api._started_from(later, result.run) is None  # resumed, it would not take today's weights for its start


# ---- 8. finished means finished ---------------------------------------------------------------------------
def test_an_unfinished_run_is_not_audited_and_its_analysis_warns(tmp_path, monkeypatch, capsys):
    from artlab.experiments import audit

    run = _interrupted(quick(_collection(tmp_path / "c"), epochs=1), tmp_path / "runs", monkeypatch)
    with pytest.raises(ValueError, match="has not finished training"):
        audit(run, by="style")
    assert main(["audit", str(run.path), "--by", "style"]) == 2
    assert "has not finished training" in capsys.readouterr().err and not run.file("audit").exists()
    from artlab.analysis import Comparison, analyze

    with pytest.warns(UserWarning, match="has not finished training"):
        analyze(Comparison(run.path, what=("params",)))


def test_a_config_cut_short_is_refused_naming_the_file(tmp_path, capsys):
    result = train(quick(_collection(tmp_path / "c"), strategy="off_the_shelf"), runs_dir=tmp_path / "runs")
    path = result.run.file("config.yaml")
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: len(lines) // 2]))  # still a valid mapping, half of the options
    assert main(["eval", str(result.run.path)]) == 2
    err = capsys.readouterr().err
    assert "config.yaml is damaged" in err and "cut short" in err and len(err.strip().splitlines()) == 1
    from artlab.training import list_runs

    assert list_runs(tmp_path / "runs").set_index("run").loc["r", "status"] == "damaged"


def test_runs_without_config_or_model_are_listed_as_damaged(tmp_path):
    from artlab.training import list_runs

    data = _collection(tmp_path / "c")
    for name in ("no-config", "no-model", "good"):
        train(quick(data, strategy="off_the_shelf", name=name), runs_dir=tmp_path / "runs")
    (tmp_path / "runs" / "no-config" / "config.yaml").unlink()
    (tmp_path / "runs" / "no-model" / "model.safetensors").unlink()
    (tmp_path / "runs" / "reports").mkdir()  # a study's reports beside the runs: not a run
    table = list_runs(tmp_path / "runs").set_index("run")
    assert table["status"].to_dict() == {"good": "finished", "no-config": "damaged", "no-model": "damaged"}
    assert "no config.yaml" in table.loc["no-config", "problem"]
    assert "no model.safetensors" in table.loc["no-model", "problem"]


def test_resuming_after_a_relabelled_row_is_refused_with_the_difference(tmp_path, monkeypatch):
    data = _collection(tmp_path / "c")
    config = quick(data, epochs=2)
    _interrupted(config, tmp_path / "runs", monkeypatch)
    lines = data.read_text().splitlines()
    lines[1] = lines[1].replace("style0", "style1")
    data.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"0 changed and 1 were relabelled \(e\.g\. \['.*c0_0\.png'\]\)"):
        train(config, runs_dir=tmp_path / "runs", resume=True)
