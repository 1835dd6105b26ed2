"""A workshop pack round trip: notebooks 03-06 run on a teacher's machine and packed with the images shrunk (the
`teacher` fixture, shared with the offline pages' tests), unpacked into an empty place with an empty cache, and
run again there on the shrunk images (stand-ins of the teacher's) computing nothing (training, forward passes
over images, renders, attributions and t-SNE raise in the kernels, see tests/no_compute/sitecustomize.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from artlab.cli import main
from artlab.data.standins import original_of
from artlab.tools.notebooks import run_series

ROOT = Path(__file__).resolve().parent.parent


def test_notebooks_03_to_06_show_an_unpacked_pack_without_computing(teacher, tmp_path, monkeypatch, capsys):
    assert [r["error"] for r in teacher.series.records.values()] == [None] * 4
    monkeypatch.setenv("ARTLAB_CACHE", str(tmp_path / "laptop-cache"))  # nothing cached on the laptop
    assert main(["unpack", str(teacher.pack), "--to", str(tmp_path / "laptop")]) == 0
    capsys.readouterr()
    collection = tmp_path / "laptop" / "data" / "paintings"
    images = list(collection.rglob("*.png"))
    # every painting travels as a stand-in, answering to its original
    assert len(images) == teacher.paintings and all(original_of(p) for p in images[::20])
    assert {max(Image.open(p).size) for p in images[::20]} == {teacher.image_size}
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT / "tests" / "no_compute"), str(ROOT),
                                                                  os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("ARTLAB_REFUSE_COMPUTING", "1")
    series = run_series(tmp_path / "laptop-pages", quick=True, data=str(collection / "manifest.csv"),
                        only=teacher.notebooks, log=None, runs_dir=tmp_path / "laptop" / "runs")
    assert [r["error"] for r in series.records.values()] == [None] * 4


def test_the_kernels_refuse_to_compute_when_told(small_synthetic, tmp_path, monkeypatch):
    """The guard itself: a notebook that trains fails under it (so the test above cannot pass vacuously)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT / "tests" / "no_compute"), str(ROOT),
                                                                  os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("ARTLAB_REFUSE_COMPUTING", "1")
    from artlab.tools.notebooks import NotebookFailed

    manifest = small_synthetic.root / "manifest.csv"  # any collection: training is refused first
    with pytest.raises(NotebookFailed, match="computed in a notebook shown from a pack: training"):
        run_series(tmp_path / "pages", quick=True, data=str(manifest), only="03", log=None, runs_dir=tmp_path / "runs")


def test_the_guard_reaches_every_way_of_computing():
    """Each computation the guard refuses, as the modules that run it see it."""
    import subprocess
    import sys

    env = os.environ | {"ARTLAB_REFUSE_COMPUTING": "1", "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT / "tests" / "no_compute"), str(ROOT), os.environ.get("PYTHONPATH")]))}
    calls = {"a forward pass": "import artlab.analysis.onepass as m; m.forward_pass()",
             "training": "import artlab.training.api as m; m.fit()",
             "an attribution": "import artlab.interpret.attribution as m; m.attribute(None, 'x.png')",
             "a feature visualisation": "import artlab.interpret.featurevis as m; m.optimise()",
             "t-SNE": "import sklearn.manifold as m; m.TSNE().fit_transform(None)"}
    script = "".join(f"try:\n    {code}\nexcept Exception as error:\n    print({what!r}, '->', error)\n"
                     for what, code in calls.items())  # one process: the guard is installed once, at start-up
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    for what in calls:
        assert f"{what} -> computed in a notebook shown from a pack: {what}" in done.stdout, (what, done.stdout,
                                                                                             done.stderr[-300:])
