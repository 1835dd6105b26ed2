"""The notebooks' recorded outputs, which nbval compares in `make test`, and how both sides are sanitised.

The committed notebooks carry no outputs, so `notebook_outputs.json` beside this file holds, per notebook
and cell id, what a quick run printed: settings, collection counts, tables, run names and messages.
Only deterministic text is compared: figures, images and widgets are left out (they are drawn, not
read), and so is stderr (progress and log lines that depend on what earlier runs left in the cache);
paths of the session's runs and cache folders, decimal numbers (accuracies move with the CPU's
arithmetic) and runs of spaces are sanitised on both sides. Record again after editing a notebook:

    .venv/bin/python tests/notebook_outputs.py            # all notebooks, about 3 minutes
    .venv/bin/python tests/notebook_outputs.py 04 05      # some of them
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
RECORD = Path(__file__).with_name("notebook_outputs.json")
RECORD_COMMAND = "python tests/notebook_outputs.py"
#: The variables a notebook's kernel runs with, here and under nbval (see conftest.py).
KERNEL_ENV = {"ARTLAB_STATIC": "1", "TQDM_DISABLE": "1"}
TEXT_TYPES = ("text/plain", "text/html", "text/markdown")
#: (regex, replacement) in order: first a long value pandas cut short (where depends on the folders' length),
#: then the session's folders (see `patterns`), then the rest.
CUT = (r"(?<=<td>)[^<]*\.\.\.(?=</td>)", "<cut>")
PATTERNS = [
    (r"0x[0-9a-fA-F]{6,}", "0x?"),  # object addresses in reprs
    (r"-?\d+(?:\.\d+(?:[eE][-+]?\d+)?|[eE][-+]?\d+)", "<num>"),  # accuracies, losses, distances (1.5, 2e-05)
    (r"[ \t]+", " "),  # column alignment, which follows the numbers' widths
]
#: Cells that run but whose outputs are not compared: what they show follows which images a trained network
#: ranks first, which can change with the CPU's arithmetic (the numbers alone are sanitised elsewhere).
NOT_COMPARED = {
    ("03_what_finetuning_changed.ipynb", "cell-15"): "the pretrained layer most like the fine-tuned one",
    ("04_filter_visualisation.ipynb", "cell-08"): "the most changed channel and its most frequent top-k class",
    ("06_why_did_it_say_that.ipynb", "cell-05"): "the classes a network ranks first for an artwork",
    ("08_multi_task.ipynb", "cell-11"): "the classes a network ranks first for an artwork",
    ("09_factors_and_bias.ipynb", "cell-15"): "correct answers per group, groups ordered by accuracy",
}


def source_digest(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]


def comparable(outputs: list) -> list:
    """The outputs compared: stdout, errors and text displays (tables as their HTML), not figures or widgets."""
    kept = []
    for output in outputs:
        kind = output.get("output_type")
        if kind == "stream":
            if output.get("name") == "stdout":
                kept.append(output)
        elif kind in ("display_data", "execute_result"):
            data = output.get("data", {})
            html = data.get("text/html", "")
            if not set(data) <= set(TEXT_TYPES) or "<script" in html or "<img" in html:
                continue  # a plotly figure, plotly.js itself, an image, a widget view
            keep = ["text/html"] if html else [t for t in TEXT_TYPES if t in data]
            kept.append(nbformat.from_dict({**output, "data": {t: data[t] for t in keep}, "metadata": {}}))
        else:
            kept.append(output)  # an error: compared, and fatal anyway
    return kept


def patterns(env: Mapping[str, str]) -> list[tuple[str, str]]:
    """Every (regex, replacement) in order; the session's runs and cache folders become <runs> and <cache>."""
    patterns = [CUT]
    for name, placeholder in (("ARTLAB_RUNS", "<runs>"), ("ARTLAB_CACHE", "<cache>")):
        if env.get(name):
            for form in sorted({env[name], str(Path(env[name]).resolve())}, key=len, reverse=True):
                patterns.append((re.escape(form.rstrip("/")), placeholder))
    return patterns + PATTERNS


def sanitizer(env: Mapping[str, str]) -> Callable[[str], str]:
    compiled = [(re.compile(regex), replace) for regex, replace in patterns(env)]

    def sanitize(text: str) -> str:
        for regex, replace in compiled:
            text = regex.sub(replace, text)
        return text

    return sanitize


def read_record(path: Path = RECORD) -> dict:
    """{notebook file name: {cell id: {"source": digest, "outputs": [...]}}} ({} when there is none yet)."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def cell_record(cell, sanitize: Callable[[str], str]) -> dict:
    """A cell's comparable outputs, sanitised, with its source's digest."""
    from nbval.plugin import coalesce_streams  # as nbval merges consecutive prints before comparing

    outputs = []
    for output in comparable(coalesce_streams(cell.outputs)):
        output = json.loads(json.dumps(output))  # plain dicts
        output.pop("execution_count", None)
        if "text" in output:
            output["text"] = sanitize(output["text"])
        if "data" in output:
            output["data"] = {kind: sanitize(value) for kind, value in output["data"].items()}
        outputs.append(output)
    return {"source": source_digest(cell.source), "outputs": outputs}


def stale_cells(notebook: Path, record: dict) -> list[str]:
    """Cells of `notebook` whose source is not the one recorded (or that have no record): record again."""
    book = nbformat.read(notebook, as_version=4)
    cells = record.get(notebook.name, {})
    code = [cell for cell in book.cells if cell.cell_type == "code"]
    stale = [cell.id for cell in code if cells.get(cell.id, {}).get("source") != source_digest(cell.source)]
    stale += sorted(set(cells) - {cell.id for cell in code})  # recorded cells the notebook no longer has
    return stale


def use_record(items: list, record: dict | None = None, env: Mapping[str, str] = os.environ,
               folder: Path = NOTEBOOKS) -> None:
    """nbval items of the notebooks in `folder`: compare each cell with its recorded outputs.

    Both sides are reduced to `comparable` outputs and sanitised. A cell without a record of its
    current source fails, saying how to record it again; NOT_COMPARED cells only run.
    """
    record = read_record() if record is None else record
    ordered = patterns(env)
    for item in items:
        cell = getattr(item, "cell", None)
        path = Path(str(getattr(item, "fspath", ""))).resolve()
        if cell is None or path.parent != Path(folder).resolve() or not hasattr(item, "compare_outputs"):
            continue
        if (path.name, cell.get("id")) in NOT_COMPARED:
            continue
        recorded = record.get(path.name, {}).get(cell.get("id"))
        item.options["check"] = True
        cell.execution_count = cell.execution_count or 1  # nbval compares only cells that ran
        if not recorded or recorded["source"] != source_digest(cell.source):
            item.compare_outputs = partial(_stale, item, f"{path.name} cell {cell.get('id')}")
            continue
        cell.outputs = [nbformat.from_dict(output) for output in recorded["outputs"]]
        item.parent.sanitize_patterns.update(ordered)
        original = item.compare_outputs
        item.compare_outputs = lambda test, ref, skip=None, original=original: original(comparable(test), ref, skip)


def _stale(item, cell: str, *_outputs) -> bool:
    """nbval's comparison of a cell whose source is not the recorded one: a failure that says what to do."""
    item.comparison_traceback = [f"{cell} has no recorded outputs for its current source: {RECORD_COMMAND}"]
    return False


def record_outputs(only: list[str] | None = None, timeout: int = 900) -> Path:
    """Run the notebooks (all, or those named) as nbval will, in fresh folders, and write their record."""
    from nbclient import NotebookClient

    record = read_record()
    notebooks = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if only:
        notebooks = [nb for nb in notebooks if nb.name[:2] in only or nb.stem in only]
    with tempfile.TemporaryDirectory(prefix="artlab-record-") as scratch:
        env = {**KERNEL_ENV, "ARTLAB_RUNS": f"{scratch}/runs", "ARTLAB_CACHE": f"{scratch}/cache"}
        os.environ.update(env)
        os.environ.pop("PLOTLY_RENDERER", None)  # as conftest.py runs nbval
        sanitize = sanitizer(env)
        for notebook in notebooks:
            print(f"{notebook.name}: running", flush=True)
            book = nbformat.read(notebook, as_version=4)
            NotebookClient(book, timeout=timeout, kernel_name="python3",
                           resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
            record[notebook.name] = {cell.id: cell_record(cell, sanitize) for cell in book.cells
                                     if cell.cell_type == "code"}
    partial = RECORD.with_suffix(".json.part")
    partial.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    partial.replace(RECORD)
    return RECORD


if __name__ == "__main__":
    print(f"recorded: {record_outputs(sys.argv[1:] or None)}")
