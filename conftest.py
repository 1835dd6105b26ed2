"""pytest set-up for the whole repository, the test suite and the notebooks that nbval runs.

Each session gets its own generated data, feature cache and default runs folder (the notebooks'
kernels inherit them, so no run outlives the data it points to), progress bars off and explorers
static (no browser is attached); nbval compares the notebooks' cells with tests/notebook_outputs.json.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from tests.notebook_outputs import KERNEL_ENV, use_record

_SCRATCH: list[str] = []


def pytest_configure(config):
    scratch = tempfile.mkdtemp(prefix="artlab-pytest-")
    _SCRATCH.append(scratch)
    os.environ["ARTLAB_CACHE"] = os.path.join(scratch, "cache")
    os.environ["ARTLAB_RUNS"] = os.path.join(scratch, "runs")
    os.environ.update(KERNEL_ENV)  # as recorded: static explorers, no progress bars, plotly's default renderer
    os.environ.pop("PLOTLY_RENDERER", None)


def pytest_unconfigure(config):
    for scratch in _SCRATCH:
        shutil.rmtree(scratch, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    use_record(items)
