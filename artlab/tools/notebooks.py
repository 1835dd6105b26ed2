"""Run the notebook series headless: papermill in order, an HTML page of each, an index page, resumable.

Notebooks are `NN_name.ipynb` files in the notebooks folder, run in name order in the current
interpreter's kernel with the notebook's folder as working directory (started warm where the notebook uses
artlab: `artlab.tools.warm_kernels`). Each gets only the
parameters it declares (`quick`, `data`). The kernel runs with ARTLAB_STATIC=1 (explorers print
static figures: papermill can hang after a live widget, nbclient issue 312) and plotly's
`plotly_mimetype` renderer (the executed notebook holds each figure once, as data JupyterLab draws);
the HTML export draws them with plotly.js inline, so each page works alone, offline, and asks
nothing of the network; progress bars are off. `status.json` records each notebook's outcome:
a rerun keeps the leading notebooks that succeeded with the same parameters, source and artlab code,
and starts again at the first that did not (the failed one), running every notebook after it.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import html
import json
import logging
import os
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING

from artlab.experiments.settings import METADATA_KEY, collections_and_tasks, data_parameter
from artlab.io import atomic_path, remove_partial_files, write_json, write_text
from artlab.lazy import import_jsonschema

if TYPE_CHECKING:
    from nbconvert import HTMLExporter

PATTERN = "[0-9][0-9]_*.ipynb"
#: The artlab package folder (this module sits in its tools/ folder).
PACKAGE = Path(__file__).resolve().parent.parent
#: Seconds any one cell may run before the notebook counts as failed, so a headless run always ends.
DEFAULT_TIMEOUT = 900
#: The kernel's environment: static explorers, plotly figures as data (JupyterLab draws them; `export_html` too).
KERNEL_ENV = {"ARTLAB_STATIC": "1", "PLOTLY_RENDERER": "plotly_mimetype"}
STATUS_FILE = "status.json"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
#: The output metadata of an explorer drawn for a page without a kernel (artlab.widgets.offline.MARK).
OFFLINE_MARK = "artlab_offline_explorer"
#: JupyterLab's page template without what it would fetch from a CDN: MathJax and mermaid (the series has no
#: formulas or diagrams) and require.js, which only a notebook with saved widget state needs (static explorers
#: save none).
OFFLINE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- if "widgets" in nb.metadata -%}{{ super() }}{%- endif -%}{%- endblock -%}
{%- block html_head_js_mathjax -%}{%- endblock -%}
{%- block html_head_js_mermaidjs -%}{%- endblock -%}
"""


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
    return here if here.is_dir() else PACKAGE.parent / "notebooks"


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


def _cells(path: Path) -> list[dict]:
    """A notebook's cells as stored ([] when it cannot be read)."""
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError, AttributeError):
        return []


def description(path: Path) -> str:
    """The notebook's one-line description: its first markdown heading ("" when it cannot be read)."""
    for cell in _cells(path):
        if cell.get("cell_type") == "markdown":
            for line in "".join(cell.get("source", "")).splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return ""


def parameters_for(path: Path, quick: bool = True, data: str | None = None, extra: dict | None = None) -> dict:
    """The run's parameters that `path` declares in its `parameters` cell (others are not passed): `quick`,
    `data` in the parameter that takes a collection (`experiments.settings.data_parameter`: a notebook's `data`,
    or the `target` of double fine-tuning, where your collection is the small target), and the `extra` ones
    (`--param NAME=VALUE`) it declares."""
    import_jsonschema()
    import papermill

    declared = papermill.inspect_notebook(str(path))
    wanted = {"quick": quick}
    collection = data_parameter(declared)
    if data is not None and collection is not None:
        wanted[collection] = _collection_value(data)
    wanted |= {name: _collection_value(value) if isinstance(value, str) else value
               for name, value in (extra or {}).items()}
    return {name: value for name, value in wanted.items() if name in declared}


def _collection_value(value: str) -> str:
    """A path that exists, made absolute (the kernel works in the notebooks folder); anything else as given."""
    return str(Path(value).resolve()) if Path(value).exists() else value


def parse_parameters(items: list[str] | None) -> dict:
    """`NAME=VALUE` pairs as parameters: VALUE read as a Python literal (10, [0, 1], None, 'x'), else a string."""
    parameters = {}
    for item in items or []:
        name, sep, text = item.partition("=")
        if not sep or not name.strip().isidentifier():
            raise ValueError(f"--param takes NAME=VALUE (e.g. epochs=5 or source=../shared/data/wikiart_styles), "
                             f"not {item!r}")
        try:
            parameters[name.strip()] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            parameters[name.strip()] = text
    return parameters


def settings_shown(node: dict) -> dict | None:
    """The settings an executed notebook ran with, as its `notebook_settings` output left them (None if none)."""
    for cell in node.get("cells", []):
        for output in cell.get("outputs", []):
            found = output.get("metadata", {}).get(METADATA_KEY)
            if isinstance(found, dict) and isinstance(found.get("values"), dict):
                return found
    return None


def source_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def code_digest() -> str:
    """A digest of the artlab package's source: what a notebook shows depends on it as much as on the notebook."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")):
        digest.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


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


def draw_plotly_figures(node: dict) -> None:
    """Give each plotly figure output of a notebook an HTML view for its page (in place): plotly.js inline
    before the first figure only, no MathJax, stable element ids."""
    import plotly.io as pio

    figures = 0
    for c, cell in enumerate(node.get("cells", [])):
        for o, output in enumerate(cell.get("outputs", [])):
            if output.get("metadata", {}).get(OFFLINE_MARK) and figures == 0:  # its script draws with plotly.js
                from plotly.offline import get_plotlyjs

                output["data"]["text/html"] = f"<script>{get_plotlyjs()}</script>{output['data']['text/html']}"
                figures += 1
            figure = output.get("data", {}).get(PLOTLY_MIME)
            if not isinstance(figure, dict):
                continue
            output["data"]["text/html"] = pio.to_html(  # validated in the kernel that drew it
                figure, config=figure.get("config"), full_html=False, include_plotlyjs=figures == 0,
                include_mathjax=False, div_id=f"figure-{c}-{o}", default_width="100%", default_height=525,
                validate=False)
            figures += 1


@functools.cache
def _html_exporter() -> HTMLExporter:
    """The page exporter, made once per process: it compiles its templates on first use, then reuses them. Not
    thread-safe (it registers each notebook's filters on its template environment): pages are written one at a time."""
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    return HTMLExporter(template_name="lab", template_file="artlab-offline.html.j2",
                        extra_loaders=[DictLoader({"artlab-offline.html.j2": OFFLINE_TEMPLATE})])


def export_html(notebook: str | Path | dict, target: Path) -> Path:
    """An executed notebook (a path or a NotebookNode) as one self-contained HTML page, written atomically:
    its charts drawn by the plotly.js it carries, nothing fetched from the network."""
    import_jsonschema()
    import nbformat

    node = nbformat.read(str(notebook), as_version=4) if isinstance(notebook, str | Path) else notebook
    draw_plotly_figures(node)
    body, _ = _html_exporter().from_notebook_node(node, resources={"metadata": {"name": target.stem}})
    write_text(target, body)
    return target


def own_kernel_first() -> str:
    """JUPYTER_PATH with this interpreter's share/jupyter first, so that "python3" is its kernel (with artlab),
    not one a user registered for another Python in ~/.local/share/jupyter/kernels."""
    own = str(Path(sys.prefix) / "share" / "jupyter")
    return os.pathsep.join([own, *[p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p]])


def local_kernel_manager(stderr: IO[bytes] | None = None) -> type | None:
    """A kernel manager whose kernel talks over local (ipc) sockets, not TCP ports, on POSIX; None elsewhere.

    Only the user's own processes can reach a kernel that has no port, and ipykernel 7 warns,
    for every notebook of the series, that a TCP kernel is "susceptible to eavesdropping".
    `stderr`: where the kernel process's own messages go (its log; cells' output is in the notebook), so
    that a kernel stopped at a timeout prints no traceback of its own. Its client is `ready_client()`'s.
    """
    if os.name != "posix":
        return None
    from uuid import uuid4

    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.paths import jupyter_runtime_dir
    from traitlets import default

    client = ready_client()

    class LocalKernelManager(AsyncKernelManager):
        @default("client_factory")
        def _default_client_factory(self) -> type:
            return client

        @default("transport")
        def _default_transport(self) -> str:
            return "ipc"

        @default("ip")
        def _default_ip(self) -> str:  # the sockets' files: in Jupyter's runtime folder, not the notebook's
            Path(jupyter_runtime_dir()).mkdir(mode=0o700, parents=True, exist_ok=True)  # as Jupyter makes it
            return str(Path(jupyter_runtime_dir()) / f"artlab-kernel-{uuid4().hex[:12]}")

        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: object) -> None:
            if stderr is not None:
                kw["stderr"] = stderr
            await super()._async_launch_kernel(kernel_cmd, **kw)

    return LocalKernelManager


@functools.cache
def ready_client() -> type:
    """jupyter_client's asynchronous kernel client, ready as soon as the kernel has answered `kernel_info` and its
    IOPub channel has carried a message. jupyter_client then also waits until IOPub has been silent for 0.2 s,
    dropping what the kernel printed as it started: 0.2 s or more at each notebook's start, for nothing here, as
    nbclient reads only the messages that answer its own requests."""
    from queue import Empty

    from jupyter_client.asynchronous import AsyncKernelClient

    class ReadyClient(AsyncKernelClient):
        async def wait_for_ready(self, timeout: float | None = None) -> None:
            deadline = time.monotonic() + (float("inf") if timeout is None else timeout)
            while True:
                self.kernel_info()
                try:
                    reply = await self.shell_channel.get_msg(timeout=1)
                except Empty:
                    reply = None
                if reply is not None and reply["msg_type"] == "kernel_info_reply":
                    try:
                        await self.iopub_channel.get_msg(timeout=0.2)  # IOPub is connected (a status, at least)
                    except Empty:
                        pass
                    else:
                        self._handle_kernel_info_reply(reply)
                        return
                if not await self._async_is_alive():
                    raise RuntimeError("Kernel died before replying to kernel_info")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Kernel didn't respond in {timeout:.0f} seconds")

    return ReadyClient


#: papermill's name for the engine of `save_once_engine`.
SAVE_ONCE = "artlab-save-once"


@functools.cache
def save_once_engine() -> str:
    """papermill's nbclient engine, registered as SAVE_ONCE, that writes the executed notebook only where papermill
    would not: when the run stops on an exception (a cell timed out, the kernel died, Ctrl-C). papermill writes it
    after a failing cell and at the end; its own engine also wrote it as each cell started and ended, each time
    encoding the whole notebook, figures included: half a second of parent CPU for a notebook of ten cells."""
    from papermill.engines import NBClientEngine, NotebookExecutionManager, papermill_engines
    from papermill.iorw import write_ipynb

    class SaveOnce(NBClientEngine):
        @classmethod
        def execute_notebook(cls, nb, kernel_name, output_path=None, progress_bar=True, log_output=False,
                             autosave_cell_every=30, **kwargs):
            # papermill's Engine.execute_notebook, the manager given no path: it saves nothing on its own
            manager = NotebookExecutionManager(nb, progress_bar=progress_bar, log_output=log_output,
                                               autosave_cell_every=autosave_cell_every)
            manager.notebook_start()
            stopped = True
            try:
                cls.execute_managed_notebook(manager, kernel_name, log_output=log_output, **kwargs)
                stopped = False
            finally:
                manager.cleanup_pbar()
                manager.notebook_complete()
                if stopped and output_path:
                    write_ipynb(manager.nb, output_path)
            return manager.nb

    papermill_engines.register(SAVE_ONCE, SaveOnce)
    return SAVE_ONCE


class _Drop(logging.Filter):
    """Drops the log records that start with one of `prefixes` (nbclient's "Timeout waiting for execute reply",
    "Kernel died ...": the failure is said once, in the notebook's one-line error)."""

    def __init__(self, *prefixes: str):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def _running_cell(node: dict) -> str:
    """The number of the last cell papermill started in an executed notebook, as the kernel counts them (one
    the kernel died in has none yet: the next number); "?" when none started."""
    count = None
    for cell in node.get("cells", []):
        if cell.get("cell_type") == "code" and (cell.get("metadata", {}).get("papermill") or {}).get("start_time"):
            count = cell.get("execution_count") or (count or 0) + 1
    return "?" if count is None else str(count)


def _last_words(stream: IO[bytes]) -> str:
    """The last line the kernel process wrote on its stderr ("" if none), to say why it died."""
    stream.seek(0)
    lines = [line.strip() for line in stream.read().decode(errors="replace").splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def _failure(exc: Exception, timeout: float, cell: str = "?", last_words: str = "") -> str:
    """The failing cell and its error, on one line (papermill's error, a cell timeout, or a dead kernel)."""
    from nbclient.exceptions import CellTimeoutError
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        evalue = (str(exc.evalue).strip().splitlines() or [""])[0]
        return f"cell [{exc.exec_count}]: {exc.ename}: {evalue}"
    if isinstance(exc, CellTimeoutError):
        return f"a cell that ran longer than the {timeout:g} s limit (--timeout), cell [{cell}]"
    said = f"; it said: {last_words}" if last_words else ""
    return f"a cell: the kernel died ({type(exc).__name__}; out of memory?{said}), cell [{cell}]"


def run_notebook(path: Path, out_dir: Path, parameters: dict, timeout: float = DEFAULT_TIMEOUT,
                 runs_dir: str | Path | None = None, interactive: bool = False) -> dict:
    """Execute one notebook into `out_dir` (executed .ipynb and .html, also when it fails); its record.
    `interactive`: the page's explorers keep working offline over states computed ahead (artlab.widgets.offline)."""
    import_jsonschema()
    import nbformat
    import papermill
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    from artlab.tools.warm_kernels import kernels_warm

    ipynb, page = out_dir / path.name, out_dir / f"{path.stem}.html"
    record = {"notebook": path.name, "parameters": parameters, "source_sha256": source_digest(path),
              "artlab_code": code_digest(), "ipynb": ipynb.name, "html": page.name, "error": None,
              "interactive": interactive}
    # absolute, so that runs land where the command line's do although the kernel works in the notebooks folder
    env = {**KERNEL_ENV, "ARTLAB_RUNS": str(Path(runs_dir or os.environ.get("ARTLAB_RUNS") or "runs").resolve()),
           "JUPYTER_PATH": own_kernel_first(), "ARTLAB_INTERACTIVE": "1" if interactive else "0"}
    start, peak = time.perf_counter(), PeakMemory()
    failure, last_words = None, ""
    quiet, log = _Drop("Timeout waiting for execute reply", "Kernel died"), logging.getLogger("papermill")
    with atomic_path(ipynb) as partial, kernel_environment(env), kernels_warm(uses_artlab(path)), \
            warnings.catch_warnings(), tempfile.TemporaryFile() as kernel_log, peak:
        warnings.filterwarnings("ignore", message=r"The specified file .* does not end in")  # the .part file
        log.addFilter(quiet)
        try:
            manager = {"kernel_manager_class": local} if (local := local_kernel_manager(kernel_log)) else {}
            papermill.execute_notebook(str(path), str(partial), parameters=parameters, cwd=str(path.parent),
                                       kernel_name="python3", execution_timeout=timeout, progress_bar=False,
                                       engine_name=save_once_engine(), **manager)
            record["status"] = "succeeded"
        except (PapermillExecutionError, CellTimeoutError, DeadKernelError) as exc:
            record["status"], failure, last_words = "failed", exc, _last_words(kernel_log)
        finally:
            log.removeFilter(quiet)
    record["seconds"] = round(time.perf_counter() - start, 1)
    record["peak_mib"] = peak.mib
    record["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    executed = nbformat.read(str(ipynb), as_version=4)  # read once: for the index and for the page
    if failure is not None:
        record["error"] = _failure(failure, timeout, _running_cell(executed), last_words)
    record["settings"] = settings_shown(executed)
    export_html(executed, page)
    record["page_mib"] = round(page.stat().st_size / 2**20, 2)
    return record


def uses_artlab(path: Path) -> bool:
    """Whether a notebook's code mentions artlab: its kernel will import torch, so it starts warm."""
    return any("artlab" in "".join(cell.get("source", "")) for cell in _cells(path) if cell.get("cell_type") == "code")


class PeakMemory:
    """The peak resident memory of this process's children (the kernel and any workers it starts), summed, sampled
    every `interval` seconds while the block runs: a notebook's peak memory. Where Linux gives each process's own
    peak (VmHWM), that is summed, so a peak between two samples is not missed. The zygote of a warm kernel
    (artlab.tools.warm_kernels) counts with its files' pages, the libraries a fresh kernel would have loaded itself;
    its other pages count in the kernel, which inherited them."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.mib = interval, 0.0
        self._done = threading.Event()

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        import psutil

        from artlab.tools.warm_kernels import zygote_pids

        me = psutil.Process()
        while not self._done.wait(self.interval):
            total, zygotes = 0, zygote_pids()
            for child in me.children(recursive=True):
                try:
                    if child.pid in zygotes:  # its files' pages, which its kernels use without loading them again
                        total += _status_bytes(child.pid, "RssFile:") if child.children() else 0
                    else:
                        total += max(child.memory_info().rss, _status_bytes(child.pid, "VmHWM:"))
                except psutil.Error:  # ended between the listing and the reading
                    continue
            self.mib = max(self.mib, round(total / 2**20, 1))


def _status_bytes(pid: int, field: str) -> int:
    """A process's memory figure from Linux's /proc status, in bytes (VmHWM: its peak resident memory so far;
    RssFile: its files' pages resident); 0 where it cannot be read."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            line = next((line for line in status if line.startswith(field)), "")
    except OSError:
        return 0
    fields = line.split()
    return int(fields[1]) * 1024 if len(fields) >= 2 and fields[1].isdigit() else 0


def read_status(out_dir: Path) -> dict[str, dict]:
    """The records of earlier runs into `out_dir` (none when the file is missing or damaged)."""
    try:
        records = json.loads((out_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return records if isinstance(records, dict) else {}


def is_current(record: dict | None, path: Path, parameters: dict, out_dir: Path, code: str | None = None,
               interactive: bool = False) -> bool:
    """Whether an earlier run of `path` succeeded with these parameters, this source and this artlab code
    (`code_digest()` unless given), its page made the same way (`interactive`), its files still there. A record
    missing any of these is not current."""
    if not isinstance(record, dict) or record.get("status") != "succeeded" or \
            bool(record.get("interactive")) != interactive:
        return False
    files = [record.get("ipynb"), record.get("html")]
    return record.get("parameters") == parameters and record.get("source_sha256") == source_digest(path) \
        and record.get("artlab_code") == (code or code_digest()) and isinstance(record.get("seconds"), int | float) \
        and all(isinstance(name, str) and (out_dir / name).is_file() for name in files)


def _short(value: object) -> str:
    if isinstance(value, list):
        return "+".join(map(str, value))
    return Path(str(value)).name or str(value)


def _settings(record: dict) -> str:
    """What a notebook ran with, for the index ("quick, data genres, task label"): the collections and tasks of
    the settings it showed (how quick shrank the rest goes without saying), a collection or task it replaced
    marked with the one given; else the parameters it was given."""
    shown = record.get("settings")
    if isinstance(shown, dict) and isinstance(shown.get("values"), dict):
        values, changed = shown["values"], shown.get("changed") if isinstance(shown.get("changed"), dict) else {}
        words = ["quick" if shown.get("quick") else "full"]
        for name in collections_and_tasks(values):
            given = f" (given {_short(changed[name])})" if name in changed and changed[name] is not None else ""
            words.append(f"{name} {_short(values[name])}{given}")
        return ", ".join(words)
    parameters = record.get("parameters")
    if not isinstance(parameters, dict):
        return ""
    words = [("quick" if parameters["quick"] else "full")] if "quick" in parameters else []
    words += [f"{name} {Path(str(value)).name or value}" for name, value in parameters.items() if name != "quick"]
    return ", ".join(words) or "its defaults"


def outdate_after(path: Path, notebooks: list[Path], records: dict[str, dict]) -> None:
    """Mark the succeeded notebooks after `path` "outdated": they may have used what its earlier run made, so
    a later call runs them again (their pages stay until then)."""
    for later in notebooks[notebooks.index(path) + 1:]:
        record = records.get(later.name)
        if isinstance(record, dict) and record.get("status") == "succeeded":
            record["status"] = "outdated"


def write_index(out_dir: Path, notebooks: list[Path], records: dict[str, dict], title: str) -> Path:
    """index.html: one line per notebook with its description, status, settings, run time and links (no script)."""
    rows = []
    for path in notebooks:
        record = records.get(path.name)
        record = record if isinstance(record, dict) else {}
        status = str(record.get("status", "not run"))
        name = html.escape(path.stem)
        exported, executed = record.get("html"), record.get("ipynb")
        link = f'<a href="{html.escape(exported)}">{name}</a>' if isinstance(exported, str) else name
        files = f'<a href="{html.escape(executed)}">.ipynb</a>' if isinstance(executed, str) else ""
        seconds = f"{record['seconds']:.1f} s" if isinstance(record.get("seconds"), int | float) else ""
        memory = f"{record['peak_mib'] / 1024:.2f} GiB" if isinstance(record.get("peak_mib"), int | float) else ""
        size = f"{record['page_mib']:.1f} MiB" if isinstance(record.get("page_mib"), int | float) else ""
        error = f'<div class="error">{html.escape(str(record["error"]))}</div>' if record.get("error") else ""
        rows.append(f'<tr class="{html.escape(status.replace(" ", "-"))}"><td>{link}</td>'
                    f"<td>{html.escape(description(path))}{error}</td><td>{html.escape(status)}</td>"
                    f"<td>{html.escape(_settings(record))}</td><td class=\"time\">{seconds}</td>"
                    f"<td class=\"time\">{memory}</td><td class=\"time\">{size}</td><td>{files}</td></tr>")
    done = [r for r in map(records.get, (nb.name for nb in notebooks)) if isinstance(r, dict)]
    total = sum(r["seconds"] for r in done if isinstance(r.get("seconds"), int | float))
    succeeded = sum(r.get("status") == "succeeded" for r in done)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}} td,th{{padding:.3em .8em;text-align:left;
vertical-align:top}} tr:nth-child(even){{background:#f4f4f4}} .failed td{{color:#a00}} .not-run td{{color:#888}}
.outdated td{{color:#a60}} .error{{font-family:monospace;font-size:90%}} .time{{text-align:right}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>{succeeded} of {len(notebooks)} notebooks succeeded, in {total:.0f} s of run time.</p>
<table><tr><th>notebook</th><th>what it shows</th><th>status</th><th>settings</th><th>run time</th>
<th>peak memory</th><th>page</th><th>executed</th>
</tr>
{chr(10).join(rows)}
</table></body></html>
"""
    target = out_dir / "index.html"
    write_text(target, page)
    return target


def run_series(out_dir: str | Path, quick: bool = True, data: str | None = None, only: str | list[str] | None = None,
               timeout: float = DEFAULT_TIMEOUT, folder: str | Path | None = None,
               runs_dir: str | Path | None = None, log: Callable[[str], None] | None = print,
               parameters: dict | None = None, interactive: bool = False) -> Series:
    """Run the series (or the `only` ones) into `out_dir`; raise NotebookFailed at the first failing notebook.

    Earlier outputs are kept. The leading notebooks that already succeeded with the same parameters,
    source and artlab code are not run again, so a rerun continues at the one that failed; once one
    notebook runs, the ones after it run too (they may reuse what it trained), and those it leaves out
    (`only`) are marked outdated, to run on the next call.
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
    title = "artlab notebooks"
    code, running = code_digest(), False
    for path in chosen:
        given = parameters_for(path, quick, data, parameters)
        if not running and is_current(records.get(path.name), path, given, out_dir, code, interactive):
            say(f"{path.stem}: unchanged since its last run ({records[path.name]['seconds']:.1f} s), kept")
            continue
        running = True
        say(f"{path.stem}: running ({', '.join(f'{k}={v}' for k, v in given.items()) or 'its defaults'})")
        record = run_notebook(path, out_dir, given, timeout, runs_dir, interactive)
        records[path.name] = record
        outdate_after(path, notebooks, records)
        write_json(out_dir / STATUS_FILE, records)
        index = write_index(out_dir, notebooks, records, title)
        if record["status"] == "failed":
            raise NotebookFailed(f"{path.name} failed in {record['error']} (see {out_dir / record['html']})", index)
        say(f"{path.stem}: succeeded in {record['seconds']:.1f} s, peak memory {record['peak_mib'] / 1024:.2f} GiB")
    return Series(write_index(out_dir, notebooks, records, title), records)
