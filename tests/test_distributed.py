"""Fine-tuning under torchrun: two CPU processes (gloo) against one, and a killed two-process run resumed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from artlab.cli import main
from artlab.io import load_tensors
from artlab.runs import Run

ROOT = Path(__file__).resolve().parent.parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def manifest(small_synthetic) -> str:
    return str(small_synthetic.root / "manifest.csv")


def _env() -> dict[str, str]:
    return os.environ | {"TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1",
                         "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def _train(manifest: str, runs: Path, name: str, epochs: int = 3) -> list[str]:
    return ["-m", "artlab", "train", "--data", manifest, "--task", "style", "--strategy", "fine_tune", "--epochs",
            str(epochs), "--image-size", "64", "--batch-size", "16", "--device", "cpu", "--name", name,
            "--runs-dir", str(runs), "--resume"]


def _files(run: Run) -> set[str]:
    return {str(p.relative_to(run.path)) for p in run.path.rglob("*") if p.is_file() and p.name != "run.lock"}


def _torchrun_or_skip() -> None:
    if shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists():
        pytest.skip("torchrun is not installed with torch here")


@pytest.fixture(scope="module")
def two_processes(manifest, tmp_path_factory) -> tuple[Run, subprocess.CompletedProcess]:
    """A two-epoch run trained by two processes under torchrun, and what torchrun printed."""
    _torchrun_or_skip()
    runs = tmp_path_factory.mktemp("torchrun")
    done = subprocess.run([*TORCHRUN, *_train(manifest, runs, "run", epochs=2)], env=_env(), capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return Run(runs / "run"), done


def test_two_processes_train_like_one(manifest, two_processes, tmp_path):
    two, done = two_processes
    assert main(_train(manifest, tmp_path, "one", epochs=2)[2:]) == 0  # one process: this one
    one = Run(tmp_path / "one")
    assert two.finished and _files(two) == _files(one)  # same folder, written once (by rank 0)
    assert two.history()["epoch"].tolist() == [1, 2]
    # the same split and test images; accuracy within the noise of ~22 test images on a learnable task
    assert two.metrics()["n_images"] == one.metrics()["n_images"]
    assert abs(two.metrics()["accuracy"] - one.metrics()["accuracy"]) <= 0.25
    assert two.metrics()["accuracy"] > 0.3  # 8 styles: chance is 12.5%
    load_tensors(two.file("model.safetensors"))
    assert done.stdout.count("run ") == 1  # only rank 0 reports


def test_a_killed_two_process_run_resumes_to_the_same_result(manifest, two_processes, tmp_path):
    reference, _ = two_processes
    run = Run(tmp_path / "killed" / "run")
    process = subprocess.Popen([*TORCHRUN, *_train(manifest, tmp_path / "killed", "run", epochs=2)], env=_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    while not run.file("checkpoint.safetensors").exists():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)  # torchrun and both workers
    process.wait()
    assert not run.finished

    done = subprocess.run([*TORCHRUN, *_train(manifest, tmp_path / "killed", "run", epochs=2)], env=_env(),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert run.finished and run.history()["epoch"].tolist() == [1, 2]
    assert run.history()["train_loss"].tolist() == pytest.approx(reference.history()["train_loss"].tolist())
    assert run.metrics()["confusion_matrix"] == reference.metrics()["confusion_matrix"]
