"""Shared fixtures: a small synthetic collection and the real collections in ../shared/data.

The session's data, cache and runs folders and its quiet progress bars are set in ../conftest.py.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ARTLAB_SHARED_DATA", ROOT.parent / "shared" / "data"))


def pytest_collection_modifyitems(config, items):
    """Tests that use ../shared/data are marked `shared`, wherever they are (the fixtures say it)."""
    for item in items:
        if {"peopleart_dir", "genres_dir"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.shared)


def _shared(name: str) -> Path:
    path = SHARED / name
    if not path.is_dir():
        pytest.skip(f"real art collection {name!r} not found at {path} (the ../shared/data folder beside the "
                    f"repository; set ARTLAB_SHARED_DATA to point elsewhere)")
    return path


@pytest.fixture(scope="session")
def peopleart_dir() -> Path:
    return _shared("peopleart")


@pytest.fixture(scope="session")
def genres_dir() -> Path:
    return _shared("genres")


@pytest.fixture(scope="session")
def small_synthetic():
    """A small synthetic collection (8 styles x 3 artists x 6 images, 96 px) shared by the tests."""
    from artlab.data import load_synthetic

    return load_synthetic(per_artist=6, size=96)


@pytest.fixture(scope="session")
def one_task(small_synthetic, tmp_path_factory) -> Path:
    """A folder of class sub-folders (2 x 3 images): a collection with one task, `label`."""
    root = tmp_path_factory.mktemp("one-task")
    for style in ("cubism", "drip"):
        (root / style).mkdir()
        for source in small_synthetic.table.query("style == @style")["path"][:3]:
            shutil.copy(source, root / style / Path(source).name)
    return root


@pytest.fixture(scope="session")
def tuned_run(small_synthetic, tmp_path_factory):
    """A one-epoch fine-tuned run on the small synthetic collection (64 px), shared by the explorers' tests."""
    from artlab.training import TrainConfig, train

    manifest = str(small_synthetic.root / "manifest.csv")
    return train(TrainConfig(name="ft", data=manifest, task="style", image_size=64, epochs=1, device="cpu", lr=0.05,
                             backbone_lr_mult=1.0), runs_dir=tmp_path_factory.mktemp("runs")).run


@dataclass
class RenderCalls:
    """What the patched renders were handed: each render's network and stop event (`rendered`), and the stop event
    of each `side_by_side` call (`handed`)."""

    rendered: list = field(default_factory=list)
    handed: list = field(default_factory=list)


@pytest.fixture
def render_calls(monkeypatch) -> RenderCalls:
    """Feature-visualisation renders replaced by blank 32 px images that record their network and stop event, and
    `side_by_side` by a loop that records its own: which networks a view renders, and what stops them."""
    import numpy as np

    from artlab import models
    from artlab.interpret import featurevis

    calls = RenderCalls()

    def render(model, layer, channels, stop=None, **options):
        calls.rendered.append((model, stop))
        return np.zeros((len(channels), 32, 32, 3), dtype=np.uint8)

    def side_by_side(jobs, stop=None):
        calls.handed.append(stop)
        return [job() for job in jobs]

    monkeypatch.setattr(featurevis, "render_channels", render)
    monkeypatch.setattr(models, "side_by_side", side_by_side)
    return calls


#: The notebooks a workshop pack is tested with, and the size its images travel at (stand-ins).
TEACHER_NOTEBOOKS = "03,04,05,06"
TEACHER_IMAGE_SIZE = 96
#: The teacher's collection: the synthetic one with this many paintings per artist (8 styles x 3 artists, at the
#: default 160 px), fewer than the default's 20 and still every style in each split (the fixture checks it).
TEACHER_PER_ARTIST = 8


@dataclass(frozen=True)
class Teacher:
    """A workshop as a teacher prepares it: notebooks 03-06 run and packed, then pages with `--interactive`."""

    series: Any  # artlab.tools.notebooks.Series of the run that was packed
    pack: Path
    pages: Path  # the interactive pages of 03, 04 and 06
    interactive: Any  # their Series
    paintings: int  # in its collection
    notebooks: str = TEACHER_NOTEBOOKS
    image_size: int = TEACHER_IMAGE_SIZE  # the pack's images, shrunk


@pytest.fixture(scope="session")
def teacher(tmp_path_factory) -> Teacher:
    """Notebooks 03-06 run as the README's workshop recipe has the teacher run them, without `--interactive` and
    with their default parameters, in a cache of their own, on a collection of files (the synthetic one with
    TEACHER_PER_ARTIST paintings per artist, at 160 px), then packed with the images at 96 px (`artlab pack
    --image-size 96`: every image travels as a stand-in). Packing before any interactive page keeps the round
    trip honest: the pack holds what the plain recipe computed, not what drawing pages ahead added. After that,
    the interactive pages of 03, 04 and 06 on the same runs and cache (the inspector's 2 test artworks and the
    channel explorer's 2 layers keep 2 or more choices in every select).
    The workshop pack's round trip and the offline pages' browser tests share it (../conftest.py puts both files
    on one worker, and hands that group out among the first)."""
    import pandas as pd

    from artlab.cli import main
    from artlab.data.synthetic import synthetic_manifest
    from artlab.tools.notebooks import run_series

    root = tmp_path_factory.mktemp("teacher")
    collection = synthetic_manifest(per_artist=TEACHER_PER_ARTIST, root=root / "paintings")
    runs = root / "runs"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ARTLAB_CACHE", str(root / "cache"))
        series = run_series(root / "prepared", quick=True, data=str(collection), only=TEACHER_NOTEBOOKS, log=None,
                            runs_dir=runs)
        assert main(["pack", str(root / "workshop.zip"), "--runs-dir", str(runs), "--image-size",
                     str(TEACHER_IMAGE_SIZE)]) == 0
        interactive = run_series(root / "pages", quick=True, data=str(collection), only="03,04,06", log=None,
                                 interactive=True, runs_dir=runs,
                                 parameters={"artworks": 2, "layers": ["features.16", "features.17"]})
    assert [r["status"] for r in interactive.records.values()] == ["succeeded"] * 3
    [split_file] = runs.glob("*/split.csv")  # the one run, 03's fine-tuning (04-06 reuse it): every style in each split
    split = pd.read_csv(split_file)
    assert split.groupby("split")["style"].nunique().to_dict() == dict.fromkeys(("test", "train", "val"), 8)
    paintings = len(collection.read_text().splitlines()) - 1  # the manifest's rows
    return Teacher(series, root / "workshop.zip", root / "pages", interactive, paintings)
