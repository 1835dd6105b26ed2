"""Run the notebook series headless: papermill in order, an HTML page of each, an index page, resumable.

Notebooks are `NN_name.ipynb` files in the notebooks folder, run in name order in the current
interpreter's kernel with the notebook's folder as working directory. Each gets only the
parameters it declares (`quick`, `data`). The kernel runs with ARTLAB_STATIC=1 (explorers print
static figures: papermill can hang after a live widget, nbclient issue 312) and plotly's
`plotly_mimetype+notebook` renderer, whose HTML output carries plotly.js inline, so the exported
pages show their charts offline. `status.json` records each notebook's outcome: a rerun keeps the
notebooks that succeeded with the same parameters and source, and starts again at the failed one.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from artlab.io import atomic_path, remove_partial_files, write_json, write_text

PATTERN = "[0-9][0-9]_*.ipynb"
#: Seconds any one cell may run before the notebook counts as failed, so a headless run always ends.
DEFAULT_TIMEOUT = 900
#: The kernel's environment: static explorers, plotly output that renders in JupyterLab and in exported HTML.
KERNEL_ENV = {"ARTLAB_STATIC": "1", "PLOTLY_RENDERER": "plotly_mimetype+notebook"}
STATUS_FILE = "status.json"


class NotebookFailed(RuntimeError):
    """A notebook of the series raised: the message names it and the failing cell's error."""

    def __init__(self, message: str, index: Path):
        super().__init__(message)
        self.index = index


@dataclass
class Series:
    """The outcome of `run_series`: the index page and each notebook's record (by file name)."""

    index: Path
    records: dict[str, dict]


def default_folder() -> Path:
    """./notebooks when it exists, else the notebooks folder beside the artlab package (an editable install)."""
    here = Path("notebooks")
    return here if here.is_dir() else Path(__file__).resolve().parent.parent / "notebooks"


def discover(folder: str | Path) -> list[Path]:
    """The series: `NN_name.ipynb` files of `folder`, in name order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(2, "no notebooks folder", str(folder))
    return sorted(folder.glob(PATTERN))


def select(notebooks: list[Path], only: str | list[str] | None) -> list[Path]:
    """The notebooks named by `only` ("04,05": numbers or file stems), in series order; all if None."""
    if not only:
        return notebooks
    wanted = [w.strip() for w in (only.split(",") if isinstance(only, str) else only) if w.strip()]
    keys = {nb: {nb.name[:2], nb.stem, nb.name} for nb in notebooks}
    unknown = [w for w in wanted if not any(w in k for k in keys.values())]
    if unknown:
        have = ", ".join(nb.name[:2] for nb in notebooks) or "none"
        raise ValueError(f"--only: no notebook {', '.join(unknown)} in the series (have {have})")
    return [nb for nb in notebooks if keys[nb] & set(wanted)]


def description(path: Path) -> str:
    """The notebook's one-line description: its first markdown heading ("" when it cannot be read)."""
    try:
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError, AttributeError):
        return ""
    for cell in cells:
        if cell.get("cell_type") == "markdown":
            for line in "".join(cell.get("source", "")).splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return ""


def parameters_for(path: Path, quick: bool = True, data: str | None = None) -> dict:
    """The run's parameters that `path` declares in its `parameters` cell (others are not passed)."""
    import papermill

    declared = papermill.inspect_notebook(str(path))
    wanted = {"quick": quick}
    if data is not None:
        wanted["data"] = str(Path(data).resolve()) if Path(data).exists() else data
    return {name: value for name, value in wanted.items() if name in declared}


def source_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextmanager
def kernel_environment(extra: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the kernels started inside the block, then restore them."""
    saved = {name: os.environ.get(name) for name in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def export_html(notebook: str | Path | dict, target: Path) -> Path:
    """An executed notebook (a path or a NotebookNode) as one HTML page, written atomically."""
    import nbformat
    from nbconvert import HTMLExporter

    node = nbformat.read(str(notebook), as_version=4) if isinstance(notebook, str | Path) else notebook
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(node, resources={"metadata": {
        "name": target.stem}})
    write_text(target, body)
    return target


def _failure(exc: Exception, timeout: float) -> str:
    """The failing cell and its error, on one line (papermill's error, a cell timeout, or a dead kernel)."""
    from nbclient.exceptions import CellTimeoutError
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        evalue = (str(exc.evalue).strip().splitlines() or [""])[0]
        return f"cell [{exc.exec_count}]: {exc.ename}: {evalue}"
    if isinstance(exc, CellTimeoutError):
        return f"a cell ran longer than the {timeout:g} s limit (--timeout)"
    return f"a cell: the kernel died ({type(exc).__name__}; out of memory?)"


def run_notebook(path: Path, out_dir: Path, parameters: dict, timeout: float = DEFAULT_TIMEOUT,
                 runs_dir: str | Path | None = None) -> dict:
    """Execute one notebook into `out_dir` (executed .ipynb and .html, also when it fails); its record."""
    import papermill
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    ipynb, page = out_dir / path.name, out_dir / f"{path.stem}.html"
    record = {"notebook": path.name, "parameters": parameters, "source_sha256": source_digest(path),
              "ipynb": ipynb.name, "html": page.name, "error": None}
    # absolute, so that runs land where the command line's do although the kernel works in the notebooks folder
    env = {**KERNEL_ENV, "ARTLAB_RUNS": str(Path(runs_dir or os.environ.get("ARTLAB_RUNS") or "runs").resolve())}
    start = time.perf_counter()
    with atomic_path(ipynb) as partial, kernel_environment(env), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"The specified file .* does not end in")  # the .part file
        try:
            papermill.execute_notebook(str(path), str(partial), parameters=parameters, cwd=str(path.parent),
                                       kernel_name="python3", execution_timeout=timeout, progress_bar=False)
            record["status"] = "succeeded"
        except (PapermillExecutionError, CellTimeoutError, DeadKernelError) as exc:
            record["status"], record["error"] = "failed", _failure(exc, timeout)
    record["seconds"] = round(time.perf_counter() - start, 1)
    record["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    export_html(ipynb, page)
    return record


def read_status(out_dir: Path) -> dict[str, dict]:
    """The records of earlier runs into `out_dir` (none when the file is missing or damaged)."""
    try:
        records = json.loads((out_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return records if isinstance(records, dict) else {}


def is_current(record: dict | None, path: Path, parameters: dict, out_dir: Path) -> bool:
    """Whether an earlier run of `path` succeeded with these parameters and this source, its files still there."""
    return bool(record) and record.get("status") == "succeeded" and record.get("parameters") == parameters \
        and record.get("source_sha256") == source_digest(path) \
        and (out_dir / record["ipynb"]).is_file() and (out_dir / record["html"]).is_file()


def write_index(out_dir: Path, notebooks: list[Path], records: dict[str, dict], title: str) -> Path:
    """index.html: one line per notebook with its description, status, run time and links (no script)."""
    rows = []
    for path in notebooks:
        record = records.get(path.name, {})
        status = record.get("status", "not run")
        name = html.escape(path.stem)
        link = f'<a href="{html.escape(record["html"])}">{name}</a>' if record else name
        files = f'<a href="{html.escape(record["ipynb"])}">.ipynb</a>' if record else ""
        seconds = f"{record['seconds']:.1f} s" if "seconds" in record else ""
        error = f'<div class="error">{html.escape(record["error"])}</div>' if record.get("error") else ""
        rows.append(f'<tr class="{status.replace(" ", "-")}"><td>{link}</td><td>{html.escape(description(path))}'
                    f"{error}</td><td>{status}</td><td class=\"time\">{seconds}</td><td>{files}</td></tr>")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}} td,th{{padding:.3em .8em;text-align:left;
vertical-align:top}} tr:nth-child(even){{background:#f4f4f4}} .failed td{{color:#a00}} .not-run td{{color:#888}}
.error{{font-family:monospace;font-size:90%}} .time{{text-align:right}}</style></head>
<body><h1>{html.escape(title)}</h1>
<table><tr><th>notebook</th><th>what it shows</th><th>status</th><th>run time</th><th>executed</th></tr>
{chr(10).join(rows)}
</table></body></html>
"""
    target = out_dir / "index.html"
    write_text(target, page)
    return target


def run_series(out_dir: str | Path, quick: bool = True, data: str | None = None, only: str | list[str] | None = None,
               timeout: float = DEFAULT_TIMEOUT, folder: str | Path | None = None,
               runs_dir: str | Path | None = None, log: Callable[[str], None] | None = print) -> Series:
    """Run the series (or the `only` ones) into `out_dir`; raise NotebookFailed at the first failing notebook.

    Earlier outputs are kept; notebooks that already succeeded with the same parameters and source are
    not run again, so a rerun continues at the one that failed.
    """
    say = log or (lambda _line: None)
    out_dir = Path(out_dir)
    notebooks = discover(folder if folder is not None else default_folder())
    chosen = select(notebooks, only)
    if not chosen:
        raise ValueError(f"no notebooks matching {PATTERN} in {folder or default_folder()}")
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_partial_files(out_dir)
    records = read_status(out_dir)
    mode = "quick" if quick else "full"
    title = f"artlab notebooks ({mode}{f', data {data}' if data else ''})"
    for path in chosen:
        parameters = parameters_for(path, quick, data)
        if is_current(records.get(path.name), path, parameters, out_dir):
            say(f"{path.stem}: unchanged since its last run ({records[path.name]['seconds']:.1f} s), kept")
            continue
        say(f"{path.stem}: running ({', '.join(f'{k}={v}' for k, v in parameters.items()) or 'its defaults'})")
        record = run_notebook(path, out_dir, parameters, timeout, runs_dir)
        records[path.name] = record
        write_json(out_dir / STATUS_FILE, records)
        index = write_index(out_dir, notebooks, records, title)
        if record["status"] == "failed":
            raise NotebookFailed(f"{path.name} failed in {record['error']} (see {out_dir / record['html']})", index)
        say(f"{path.stem}: succeeded in {record['seconds']:.1f} s")
    return Series(write_index(out_dir, notebooks, records, title), records)
