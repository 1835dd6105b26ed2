"""The run index: every run folder under a root as one row, with the columns its caller describes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from artlab.io import DamagedFile
from artlab.runs.folder import MODEL_FILE, RUN_FILES, Run, runs_root


def status(run: Run) -> str:
    """"finished", "training" (another process holds its lock) or "incomplete"; a run finished without its
    model is damaged (raises DamagedFile)."""
    if run.finished:
        if not run.file(MODEL_FILE).is_file():
            raise DamagedFile(f"{run.path} has metrics.json but no {MODEL_FILE}: its result is gone")
        return "finished"
    return "training" if run.lock().held_elsewhere() else "incomplete"


def index(root: str | Path | None = None, describe: Callable[[Run], dict] | None = None) -> pd.DataFrame:
    """One row per run under `root`: its name, then the columns `describe(run)` gives (by default its `status`).

    A folder holding any run file is a run: one without config.yaml, or finished without its model,
    is listed as "damaged" with the reason, as is one whose files cannot be read, never hiding the others.
    """
    rows = []
    folders = sorted(path for path in runs_root(root).glob("*/") if any((path / f).is_file() for f in RUN_FILES))
    for folder in folders:
        run = Run(folder)
        try:
            run.config()  # a damaged config.yaml makes the run damaged, whoever describes it
            rows.append({"run": run.name} | (describe(run) if describe else {"status": status(run)}))
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            rows.append({"run": run.name, "status": "damaged", "problem": str(exc)})
    return pd.DataFrame(rows)
