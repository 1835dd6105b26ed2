"""Hostile input (issue 19): a wrong argument is one line naming it and leaves no folder; a stopped sweep or
notebook leaves no orphan process and no traceback; files and skipped lists say what they are."""

from __future__ import annotations

import importlib
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from artlab.cli import main
from artlab.training import TrainConfig, train

execution = importlib.import_module("artlab.experiments.sweep.execution")


def _painting(path: Path, seed: int, size: int = 40) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)


def _manifest(root: Path, columns: dict[str, list[str]], n: int = 24) -> Path:
    """`n` distinct images and the label columns given (each cycled over the rows)."""
    rows = ["path," + ",".join(columns)]
    for i in range(n):
        _painting(root / "img" / f"{i}.png", i)
        rows.append(f"img/{i}.png," + ",".join(values[i % len(values)] for values in columns.values()))
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root / "manifest.csv"


@pytest.fixture(scope="module")
def styles(tmp_path_factory) -> Path:
    return _manifest(tmp_path_factory.mktemp("styles"), {"style": ["a", "b", "c"], "medium": ["oil", "ink"]})


def _one_line(capsys, *words: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("artlab: error: ") and err.count("\n") == 1, err
    assert all(word in err for word in words), (words, err)
    return err


# ---- 5. one-line errors, and no folder left behind --------------------------------------------------------
@pytest.mark.parametrize("option, value, named", [
    ("--patience", "0", "patience must be at least 1"), ("--patience", "-2", "patience"),
    ("--num-workers", "-1", "num_workers must be 0"),
    ("--device", "cuda", "device 'cuda' is not available")])
def test_train_options_are_refused_before_a_folder_exists(styles, tmp_path, capsys, option, value, named):
    if option == "--device" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    runs = tmp_path / "runs"
    assert main(["train", "--data", str(styles), "--task", "style", option, value, "--runs-dir", str(runs)]) == 2
    _one_line(capsys, named)
    assert not runs.exists()


def test_patience_of_one_epoch_still_trains_and_saves(styles, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["train", "--data", str(styles), "--task", "style", "--patience", "1", "--epochs", "2",
                 "--image-size", "32", "--batch-size", "8", "--device", "cpu", "--name", "p",
                 "--runs-dir", str(runs)]) == 0
    assert (runs / "p" / "model.safetensors").is_file() and (runs / "p" / "metrics.json").is_file()


@pytest.mark.parametrize("field, value, wanted", [
    ("epochs", "3", "an integer"), ("image_size", 64.5, "an integer"), ("batch_size", 8.0, "an integer"),
    ("freeze", True, "an integer"), ("lr", True, "a number"), ("lr", "fast", "a number"),
    ("augment", 1, "True or False"), ("name", 5, "a string"), ("patience", 2.5, "an integer or None"),
    ("multi_label", 3, "a list or None")])
def test_wrong_python_types_are_refused_when_the_config_is_made(field, value, wanted):
    with pytest.raises(ValueError, match=rf"^{field} must be {wanted}, not "):
        TrainConfig(**{field: value})


def test_right_types_are_kept_or_made_plain():
    config = TrainConfig(data=Path("/x/wikiart"), epochs=np.int64(3), lr=1, weight_decay=np.float32(0.5),
                         multi_label=("a", "b"), patience=2)
    assert config.data == "/x/wikiart" and type(config.epochs) is int and config.lr == 1
    assert type(config.weight_decay) is float and config.multi_label == ["a", "b"]
    assert TrainConfig.from_dict(config.to_dict()) == config  # a saved config reads back the same
    # a run trained on a GPU is read on a machine without one; a new config asking for it is refused
    assert TrainConfig.from_dict({"device": "cuda:7"}).device == "cuda:7"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="base: device 'cuda' is not available"):
            TrainConfig.coerce({"device": "cuda"}, "base")


@pytest.mark.parametrize("size", ["0", "16", "5000"])
def test_distance_image_size_is_checked_before_any_number(capsys, size):
    assert main(["distance", "synthetic", "synthetic", "--image-size", size]) == 2
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err == f"artlab: error: --image-size must be between 32 and 1024 px (the " \
                                                f"sizes artlab trains at), not {size}\n"


def _yaml(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text, named", [
    ("source: [a, b]\ntarget: {data: synthetic}\n", "'source' must be a mapping"),
    ("source: {data: synthetic}\ntarget: 3\n", "'target' must be a mapping"),
    ("source: {data: synthetic}\ntarget: {data: synthetic}\nseed: [1]\n", "unknown keys ['seed']"),
    ("source: {data: synthetic, epoch: 2}\ntarget: {data: synthetic}\n", "unknown config keys ['epoch']"),
    ("source: {data: synthetic}\ntarget: {data: synthetic}\nseeds: []\n", "seeds must be one or more")])
def test_double_study_yaml_mistakes_are_one_line(tmp_path, capsys, text, named):
    runs = tmp_path / "runs"
    assert main(["study", "double", _yaml(tmp_path / "double.yaml", text), "--runs-dir", str(runs)]) == 2
    _one_line(capsys, named)
    assert not runs.exists()


def test_double_study_seeds_option_is_checked(tmp_path, capsys):
    assert main(["study", "double", "--source", "synthetic", "--target", "synthetic", "--seeds", "0,x",
                 "--runs-dir", str(tmp_path / "runs")]) == 2
    _one_line(capsys, "--seeds must be one or more integer seeds")


def test_sweep_with_no_seeds_is_refused(styles, tmp_path, capsys):
    runs = tmp_path / "runs"
    config = _yaml(tmp_path / "sweep.yaml", f"base: {{data: {styles}, task: style}}\ngrid: {{lr: [0.1]}}\nseeds: []\n")
    assert main(["sweep", config, "--runs-dir", str(runs)]) == 2
    _one_line(capsys, "sweep.yaml: seeds must be one or more integer seeds")
    assert not runs.exists()


@pytest.mark.parametrize("timeout", ["0", "-5", "nan"])
def test_notebook_timeout_must_be_positive(tmp_path, capsys, timeout):
    assert main(["notebooks", "run", "--out", str(tmp_path / "out"), "--timeout", timeout]) == 2
    _one_line(capsys, "--timeout must be above 0 seconds")
    assert not (tmp_path / "out").exists()


def test_audit_min_size_below_zero(tmp_path, capsys):
    assert main(["audit", str(tmp_path / "any"), "--by", "style", "--min-size", "-1"]) == 2
    _one_line(capsys, "--min-size must be 0 or more images, not -1")


def test_explorers_say_what_they_take():
    from artlab import widgets

    cases = [(lambda: widgets.ChannelExplorer("runs/x"), "ChannelExplorer takes an Analysis"),
             (lambda: widgets.ChangeExplorer("runs/x"), "ChangeExplorer takes an Analysis"),
             (lambda: widgets.TopKBrowser("runs/x"), "TopKBrowser takes an Analysis that ran 'topk'"),
             (lambda: widgets.CollectionBrowser("data/x"), "CollectionBrowser takes an ArtCollection"),
             (lambda: widgets.StrategyExplorer("runs/x"), "StrategyExplorer takes a StrategyComparison"),
             (lambda: widgets.SweepExplorer("runs/x"), "SweepExplorer takes a Sweep"),
             (lambda: widgets.CollectionMap("runs/x", {}), "CollectionMap takes dicts"),
             (lambda: widgets.ArtworkInspector("runs/x", ["a.jpg"]), "ArtworkInspector takes a dict"),
             (lambda: widgets.AuditExplorer(3), "AuditExplorer takes a finished run")]
    for make, message in cases:
        with pytest.raises(TypeError, match=message) as raised:
            make()
        assert "\n" not in str(raised.value) and "not a " in str(raised.value)


def test_a_large_sweep_says_its_size_and_then_its_time(styles, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(execution, "run_cell", lambda config, runs_dir: {"status": "finished", "accuracy": 0.5})
    base = TrainConfig(data=str(styles), task="style", strategy="off_the_shelf", image_size=32, device="cpu")
    result = execution.sweep(base, {"lr": [round(0.001 * (i + 1), 3) for i in range(120)]}, workers=1,
                             runs_dir=tmp_path / "runs")
    assert len(result.cells) == 120
    err = capsys.readouterr().err
    assert "120 runs (120 to train, 0 already finished), 1 at a time" in err
    assert "the first run trained in" in err and "more for the 119 left, 1 at a time" in err
    for run in result.cells["run"][:10]:  # runs that finished earlier tell the time at once: 30 s each
        (tmp_path / "runs" / run).mkdir(parents=True)
        for name, when in (("config.yaml", 1_000_000), ("metrics.json", 1_000_030)):
            (tmp_path / "runs" / run / name).write_text("{}")
            os.utime(tmp_path / "runs" / run / name, (when, when))
    execution.sweep(base, {"lr": [round(0.001 * (i + 1), 3) for i in range(120)]}, workers=1,
                    runs_dir=tmp_path / "runs")
    err = capsys.readouterr().err
    assert "120 runs (110 to train, 10 already finished), 1 at a time; about 55 min on this machine (its " \
           "finished runs took about 30 s each)" in err and "the first run trained" not in err
    execution.sweep(base, {"lr": [0.1, 0.2]}, workers=1, runs_dir=tmp_path / "runs")
    assert "runs (" not in capsys.readouterr().err  # a small sweep goes without


# ---- 3. clean stops ----------------------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def _is_worker(pid: int) -> bool:
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped is dead)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM])
def test_workers_die_with_a_stopped_sweep(styles, tmp_path, stop):
    runs = tmp_path / "runs"
    config = _yaml(tmp_path / "sweep.yaml", f"base: {{data: {styles}, task: style, strategy: scratch, epochs: 5000, "
                                            f"image_size: 32, batch_size: 8, device: cpu}}\n"
                                            f"grid: {{lr: [0.01, 0.02, 0.03]}}\n")
    parent = subprocess.Popen([sys.executable, "-m", "artlab", "sweep", config, "--workers", "2", "--runs-dir",
                               str(runs)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env={**os.environ, "TQDM_DISABLE": "1"})
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(list(runs.glob("*/config.yaml"))) < 2:  # both workers are training: past their start-up
            assert parent.poll() is None and time.monotonic() < deadline, parent.stderr.read().decode()
            time.sleep(0.2)
        workers = [pid for pid in _children(parent.pid) if _is_worker(pid)]
        assert len(workers) == 2
        os.kill(parent.pid, stop)
        code = parent.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(map(_alive, workers)), "orphan workers outlived the sweep"
        if stop == signal.SIGTERM:
            assert code == 128 + signal.SIGTERM
            assert "Traceback" not in parent.stderr.read().decode()
    finally:
        for pid in [*workers, parent.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        parent.wait(timeout=30)
        parent.stderr.close()


def _notebook(path: Path, code: str) -> None:
    import nbformat

    book = nbformat.v4.new_notebook()
    book.cells = [nbformat.v4.new_markdown_cell("# Slow"),
                  nbformat.v4.new_code_cell("quick = True", metadata={"tags": ["parameters"]}),
                  nbformat.v4.new_code_cell(code)]
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(book, str(path))


def test_a_notebook_stopped_by_its_timeout_is_one_line(tmp_path, capfd):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(folder / "01_slow.ipynb", "import time\ntime.sleep(60)")
    assert main(["notebooks", "run", "--notebooks", str(folder), "--out", str(tmp_path / "out"), "--timeout", "3",
                 "--runs-dir", str(tmp_path / "runs")]) == 1
    err = capfd.readouterr().err  # the kernel's own stderr too
    assert "Traceback" not in err and "Timeout waiting" not in err, err
    assert err.count("\n") == 1 and err.startswith("artlab: error: 01_slow.ipynb failed in a cell that ran longer "
                                                   "than the 3 s limit (--timeout), cell [3]"), err


# ---- 6. small lies -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_tasks(styles, tmp_path_factory):
    return train(TrainConfig(name="two", data=str(styles), task="style,medium", image_size=32, epochs=1,
                             batch_size=8, device="cpu"), runs_dir=tmp_path_factory.mktemp("runs")).run


def test_audits_of_other_splits_and_tasks_keep_their_own_files(two_tasks, capsys):
    from artlab.experiments import audit

    test, train_split = audit(two_tasks, by="medium", min_size=1), audit(two_tasks, by="medium", split="train",
                                                                         min_size=1)
    assert [p.name for p in test.files] == ["test-style-by-medium.csv", "test-style-by-medium.html"]
    assert train_split.files[0].name == "train-style-by-medium.csv" and test.files[0].is_file()
    assert test.task == "style" and train_split.table["images"].sum() > test.table["images"].sum()
    assert main(["audit", str(two_tasks.path), "--by", "style", "--task", "medium", "--min-size", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("task medium, test split") and "test-medium-by-style.csv" in out
    assert (two_tasks.path / "audit" / "test-medium-by-style.csv").is_file()
    assert main(["audit", str(two_tasks.path), "--by", "style", "--task", "colour"]) == 2
    _one_line(capsys, "no task 'colour'", "['style', 'medium']")


def test_dangling_links_are_listed_among_skipped_files(tmp_path, capsys):
    from artlab.data import load

    for label in ("a", "b"):
        for i in range(3):
            _painting(tmp_path / "folders" / label / f"{i}.png", 10 * ord(label) + i)
    (tmp_path / "folders" / "a" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    collection = load(tmp_path / "folders")
    assert len(collection) == 6
    skipped = collection.skipped.set_index("path")["reason"]
    assert skipped[str(tmp_path / "folders" / "a" / "gone.png")] == f"broken link to {tmp_path / 'nowhere.png'}"
    assert main(["data", "summary", str(tmp_path / "folders")]) == 0
    assert "broken link to" in capsys.readouterr().out

    manifest = tmp_path / "folders" / "manifest.csv"
    manifest.write_text("path,label\na/0.png,a\na/gone.png,a\nb/0.png,b\n")
    reasons = load(manifest).skipped["reason"].tolist()
    assert reasons == [f"manifest.csv row 3: broken link to {tmp_path / 'nowhere.png'}"]


def test_numeric_labels_beside_missing_ones_stay_as_written(tmp_path):
    from artlab.data import collection_summary, load

    manifest = _manifest(tmp_path, {"grade": ["1", " 2", " ", "3"]}, n=24)
    collection = load(manifest)
    assert collection.classes("grade") == ["1", "2", "3"]
    assert set(collection_summary(collection.check_images()).classes["grade"].index) == {"1", "2", "3", "(no label)"}
    run = train(TrainConfig(name="grades", data=str(manifest), strategy="off_the_shelf", image_size=32,
                            device="cpu"), runs_dir=tmp_path / "runs").run
    assert run.card().classes["grade"] == ["1", "2", "3"]
    recorded = pd.read_csv(run.file("split.csv"), dtype=str, keep_default_na=False)["grade"]
    assert set(recorded) == {"1", "2", "3"} and not any(math.isnan(float(v)) or "." in v for v in recorded)
