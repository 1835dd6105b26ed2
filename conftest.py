"""pytest set-up for the whole repository, the test suite and the notebooks that nbval runs.

Each session gets its own generated data (one folder for all its workers), feature cache and default runs folder
(the notebooks' kernels inherit them, so no run outlives the data it points to), progress bars off and explorers
static (no browser is attached); nbval compares the notebooks' cells with tests/notebook_outputs.json.

With pytest-xdist (`make test` runs `-n 2`), each worker has its own folders (the generated collections apart) and its
share of the cores as torch threads (its notebooks' kernels too), so two workers on 2 cores do not slow each other down;
each test file runs on one worker (its module fixtures made once), and the browser test, which trains the runs that
nbval's notebooks then reuse, goes first with those notebooks on one worker. The other groups follow longest first
(LONGEST_FIRST), so that the last ones are short and the two workers end together.
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile

import pytest

from tests.notebook_outputs import KERNEL_ENV, use_record

_SCRATCH: list[str] = []
#: The variable naming the session's shared folder of generated collections (see _share_synthetic_collections).
SHARED_SYNTHETIC = "ARTLAB_PYTEST_SYNTHETIC"
_OWNS_SHARED: list[bool] = []  # [True] in the process that made that folder and set the variable


#: The browser test and nbval's notebooks: one worker, first (the longest group), in this order.
NOTEBOOKS_GROUP = "notebooks"
#: The groups of 5 s or more, longest first (as a suite's --durations on 2 cores measures them), handed out in this
#: order so that the last ones are short and the two workers end together; the others follow in file order.
LONGEST_FIRST = (NOTEBOOKS_GROUP, "teacher", "tests/test_notebooks.py", "tests/test_train.py",
                 "tests/test_distributed.py", "tests/test_reliability.py", "tests/test_api.py",
                 "tests/test_warm_kernels.py", "tests/test_double.py", "tests/test_hostile_input.py",
                 "tests/test_sweep.py", "tests/test_analysis.py", "tests/test_prefix_cache.py",
                 "tests/test_speed_paths.py", "tests/test_multitask.py", "tests/test_widgets.py",
                 "tests/test_distance.py", "tests/test_featurevis.py", "tests/test_portable_runs.py",
                 "tests/test_notebook_api.py", "tests/test_models.py")


def pytest_configure(config):
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:  # a worker of pytest-xdist: its share of the cores, for itself and the processes it starts
        from artlab.io import usable_cores

        threads = max(1, usable_cores() // workers)  # the cores this process may run on (a container's share)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        import torch

        torch.set_num_threads(threads)
    scratch = tempfile.mkdtemp(prefix="artlab-pytest-")
    _SCRATCH.append(scratch)
    os.environ["ARTLAB_CACHE"] = os.path.join(scratch, "cache")
    _share_synthetic_collections(scratch)
    os.environ["ARTLAB_RUNS"] = os.path.join(scratch, "runs")
    os.environ.update(KERNEL_ENV)  # as recorded: static explorers, no progress bars, plotly's default renderer
    os.environ.pop("PLOTLY_RENDERER", None)
    from artlab.tools.warm_kernels import use_warm_kernels

    use_warm_kernels()  # nbval's kernels too, as the series' and `make lab`'s


def _share_synthetic_collections(scratch: str) -> None:
    """The session's generated collections, in one folder for all its workers: each is generated once, not once per
    worker (the default one takes 3-4 s). The first process (xdist's controller) makes the folder and names it in
    SHARED_SYNTHETIC for the workers it starts, and removes both in pytest_unconfigure, after they ended; a worker
    links its cache's `synthetic` to it. A generation is atomic and keeps the copy another process finished first."""
    if SHARED_SYNTHETIC not in os.environ:
        os.environ[SHARED_SYNTHETIC] = tempfile.mkdtemp(prefix="artlab-pytest-synthetic-")
        _SCRATCH.append(os.environ[SHARED_SYNTHETIC])
        _OWNS_SHARED.append(True)
    os.makedirs(os.path.join(scratch, "cache"))
    os.symlink(os.environ[SHARED_SYNTHETIC], os.path.join(scratch, "cache", "synthetic"))


def pytest_unconfigure(config):
    for scratch in _SCRATCH:
        shutil.rmtree(scratch, ignore_errors=True)  # a link is removed, not followed
    if _OWNS_SHARED:
        os.environ.pop(SHARED_SYNTHETIC, None)
    _SCRATCH.clear()
    _OWNS_SHARED.clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """After a test file's last test, its module fixtures torn down: collect the garbage, then leave what is still
    alive out of the collector's later passes (`gc.freeze`). What outlives a test file (the modules imported, session
    fixtures, caches) lives as long as the process, and every full collection would walk it again: some 300,000
    objects, 0.2 s a pass, 7 s of a worker's run. Only a cycle among those objects dropped later is never collected."""
    yield
    if nextitem is None or nextitem.path != item.path:
        gc.collect()
        gc.freeze()


def pytest_collection_modifyitems(config, items):
    use_record(items)
    if os.environ.get("PYTEST_XDIST_WORKER"):  # the longest groups first (stable: the browser test before nbval)
        items.sort(key=lambda item: _rank(_group(item)))


def _rank(group: str) -> int:
    """Where a group comes in the order that workers take groups: LONGEST_FIRST, then the rest."""
    return LONGEST_FIRST.index(group) if group in LONGEST_FIRST else len(LONGEST_FIRST)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Each test file on one worker (its module fixtures made once), the browser test and the notebooks together, and
    the files that share a session fixture together;
    an explicit --dist other than the default (load) is left to xdist."""
    if config.getoption("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByFile(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _group_of(nodeid.split("::", 1)[0])

    config.option.loadscopereorder = False  # groups in the order collected (LONGEST_FIRST), not by number of tests
    return ByFile(config, log)


def _group(item) -> str:
    return _group_of(item.path.relative_to(item.config.rootpath).as_posix())


#: Test files that share a session fixture (tests/conftest.py: `teacher`), run on one worker so it is made once.
SHARING = {"tests/test_offline_pages.py": "teacher", "tests/test_workshop_pack.py": "teacher"}


def _group_of(path: str) -> str:
    """The worker group of a test file (its path from the repository root)."""
    if path.startswith("notebooks/") or path == "tests/test_browser.py":
        return NOTEBOOKS_GROUP
    return SHARING.get(path, path)
