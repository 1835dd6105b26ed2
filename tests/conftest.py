"""Shared fixtures: a small synthetic collection, the real collections in ../shared/data, quiet progress bars."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ARTLAB_SHARED_DATA", ROOT.parent / "shared" / "data"))


def pytest_configure(config):
    os.environ.setdefault("TQDM_DISABLE", "1")


def pytest_collection_modifyitems(config, items):
    """Tests that use ../shared/data are marked `shared`, wherever they are (the fixtures say it)."""
    for item in items:
        if {"peopleart_dir", "genres_dir"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.shared)


@pytest.fixture(scope="session", autouse=True)
def artlab_cache(tmp_path_factory):
    """Each test session gets its own generated data, feature cache and default runs folder.

    The notebooks' kernels inherit both variables, so their runs never outlive the data they point
    to (torch's weights cache is shared).
    """
    cache = tmp_path_factory.mktemp("artlab-cache")
    os.environ["ARTLAB_CACHE"] = str(cache)
    os.environ["ARTLAB_RUNS"] = str(tmp_path_factory.mktemp("artlab-runs"))
    return cache


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
