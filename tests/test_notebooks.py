"""The headless notebook runner on a tiny generated series, and the committed notebooks' shape."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from artlab.cli import main
from artlab.tools.notebooks import PATTERN, NotebookFailed, run_series
from tests.notebook_outputs import NOT_COMPARED, RECORD, RECORD_COMMAND, read_record, stale_cells

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")


def _notebook(path: Path, cells: list, parameters: str | None = None) -> None:
    book = nbformat.v4.new_notebook()
    head = [nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]})] if parameters else []
    book.cells = [nbformat.v4.new_markdown_cell(f"# {path.stem.split('_', 1)[-1]}: a test notebook\n\ntext"),
                  *head, *(nbformat.v4.new_code_cell(source) for source in cells)]
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(book, path)


def _log(name: str) -> str:
    """A cell that appends the notebook's name to ran.txt beside it: the order in which notebooks ran."""
    return f"with open('ran.txt', 'a') as f:\n    f.write('{name}\\n')"


def _series(tmp_path: Path, chart: bool) -> Path:
    """01 (with `chart`: draws plotly charts and a progress bar, says how its kernel runs; else prints a line);
    02 fails while fail.flag exists; 03 declares no parameters; a non-series file."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(folder / "01_chart.ipynb", [
        _log("01"),
        "import os\nprint(os.environ.get('ARTLAB_STATIC'), os.environ.get('PLOTLY_RENDERER'), quick, data)",
        "from ipykernel.connect import get_connection_info as info\nprint('transport', info(unpack=True)['transport'])",
        "import plotly.graph_objects as go\ngo.Figure(go.Bar(x=['a', 'b'], y=[1, 3 if quick else 4]))",
        "go.Figure(go.Scatter(x=[1, 2, 3], y=[2, 1, 2]))",
        "from artlab.progress import progress\nfor _ in progress(range(3), desc='a bar'):\n    pass"] if chart else [
        _log("01"), "print('first', quick, data)"],
        parameters="quick = True\ndata = 'synthetic'")
    _notebook(folder / "02_fails.ipynb", [
        _log("02"), "from pathlib import Path\nvalue = 41",
        "if Path('fail.flag').exists():\n    raise ValueError('broken on purpose\\nsecond line')",
        "print(value + 1)"], parameters="quick = True")
    _notebook(folder / "03_plain.ipynb", [_log("03"), "print('third')"])
    _notebook(folder / "notes.ipynb", ["raise RuntimeError('not part of the series')"])
    (folder / "fail.flag").touch()
    return folder


@pytest.fixture
def series(tmp_path) -> Path:
    """The series whose 01 draws charts (what its pages and records hold)."""
    return _series(tmp_path, chart=True)


@pytest.fixture
def plain_series(tmp_path) -> Path:
    """The series whose 01 prints a line: for what runs when, a kernel with no chart to draw starts faster."""
    return _series(tmp_path, chart=False)


def _ran(folder: Path) -> list[str]:
    path = folder / "ran.txt"
    return path.read_text().split() if path.exists() else []


def _index_rows(index: Path) -> list[tuple[str, str]]:
    """(notebook name, status) per row of the index page, in page order."""
    rows = re.findall(r"<tr class=\"[^\"]*\"><td>(?:<a href=\"[^\"]+\">)?([^<]+)(?:</a>)?</td><td>.*?</td>"
                      r"<td>([^<]+)</td>", index.read_text())
    return rows


def test_a_failing_notebook_stops_the_series_and_a_rerun_continues(series, tmp_path, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)  # progress bars are off by ARTLAB_STATIC alone
    out = tmp_path / "out"
    environ = dict(os.environ)
    with pytest.raises(NotebookFailed) as failed:
        run_series(out, folder=series, log=None)
    message = str(failed.value)
    assert "02_fails.ipynb" in message and "ValueError: broken on purpose" in message and "second line" not in message
    assert re.search(r"cell \[\d+\]", message)
    assert _ran(series) == ["01", "02"]  # in order, stopped at 02: 03 never started
    assert dict(os.environ) == environ  # the kernel's variables did not leak into this process

    # earlier outputs and the failing notebook's partial output are kept, as .ipynb and HTML
    assert {p.name for p in out.iterdir()} == {"01_chart.ipynb", "01_chart.html", "02_fails.ipynb", "02_fails.html",
                                             "index.html", "status.json"}
    executed = nbformat.read(out / "01_chart.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert "1 plotly_mimetype True synthetic" in printed  # static widgets, plotly figures as data, parameters
    assert "transport ipc" in printed  # a kernel without a TCP port (POSIX)
    kinds = {kind for c in executed.cells if c.cell_type == "code" for o in c.outputs for kind in o.get("data", {})}
    assert "application/vnd.plotly.v1+json" in kinds
    assert "application/vnd.jupyter.widget-view+json" not in kinds  # no progress widget no page could show
    partial = nbformat.read(out / "02_fails.ipynb", as_version=4)
    errors = [o for c in partial.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert [e.evalue for e in errors] == ["broken on purpose\nsecond line"]
    assert "broken on purpose" in (out / "02_fails.html").read_text()
    assert _index_rows(out / "index.html") == [("01_chart", "succeeded"), ("02_fails", "failed"),
                                               ("03_plain", "not run")]
    assert "chart: a test notebook" in (out / "index.html").read_text()  # the first heading describes it
    assert "1 of 3 notebooks succeeded" in (out / "index.html").read_text()
    status = json.loads((out / "status.json").read_text())
    assert status["02_fails.ipynb"]["status"] == "failed" and status["01_chart.ipynb"]["parameters"] == {
        "quick": True}

    # fixed: the rerun keeps 01 (same parameters, same source), runs 02 again, then 03
    (series / "fail.flag").unlink()
    result = run_series(out, folder=series, log=None)
    assert _ran(series) == ["01", "02", "02", "03"]
    assert [r["status"] for r in result.records.values()] == ["succeeded"] * 3
    assert result.records["03_plain.ipynb"]["parameters"] == {}  # it declares none: none are passed
    assert _index_rows(result.index) == [("01_chart", "succeeded"), ("02_fails", "succeeded"),
                                         ("03_plain", "succeeded")]
    assert all(re.search(rf"{name}.*?[\d.]+ s", result.index.read_text(), re.S) for name in ("01", "02", "03"))
    total = sum(record["seconds"] for record in result.records.values())
    assert f"3 of 3 notebooks succeeded, in {total:.0f} s of run time" in result.index.read_text()

    # other parameters, or an edited notebook, run again
    run_series(out, quick=False, only="01", folder=series, log=None)
    assert _ran(series)[-1] == "01"
    run_series(out, quick=False, folder=series, log=None)
    assert _ran(series)[5:] == ["02", "03"]  # 01 ran so just now; 02 declares quick; 03 comes after one that ran
    assert [s for _, s in _index_settings(out / "index.html")] == ["full", "full", "its defaults"]
    (series / "03_plain.ipynb").write_text((series / "03_plain.ipynb").read_text().replace("third", "3rd"))
    run_series(out, quick=False, folder=series, log=None)
    assert _ran(series)[7:] == ["03"]


def _index_settings(index: Path) -> list[tuple[str, str]]:
    """(notebook name, settings) per row of the index page."""
    return re.findall(r"<tr class=\"[^\"]*\"><td>(?:<a href=\"[^\"]+\">)?([^<]+)(?:</a>)?</td><td>.*?</td>"
                      r"<td>[^<]+</td><td>([^<]*)</td>", index.read_text())


def test_other_artlab_code_or_a_damaged_record_runs_the_notebooks_again(plain_series, tmp_path, monkeypatch):
    series = plain_series
    (series / "fail.flag").unlink()
    out = tmp_path / "out"
    run_series(out, only="01,02", folder=series, log=None)
    assert _ran(series) == ["01", "02"]
    status = json.loads((out / "status.json").read_text())
    del status["02_fails.ipynb"]["seconds"]  # damaged by hand: run again, not a KeyError
    (out / "status.json").write_text(json.dumps(status))
    run_series(out, only="01,02", folder=series, log=None)
    assert _ran(series) == ["01", "02", "02"]
    monkeypatch.setattr("artlab.tools.notebooks.code_digest", lambda: "other artlab code")
    run_series(out, only="01,02", folder=series, log=None)
    assert _ran(series) == ["01", "02", "02", "01", "02"]
    # 01 edited and run alone: 02 may have used what the old 01 made, so it is outdated until it runs again
    (series / "01_chart.ipynb").write_text((series / "01_chart.ipynb").read_text().replace("first", "1st"))
    run_series(out, only="01", folder=series, log=None)
    assert _index_rows(out / "index.html")[:2] == [("01_chart", "succeeded"), ("02_fails", "outdated")]
    run_series(out, only="01,02", folder=series, log=None)
    assert _ran(series)[5:] == ["01", "02"]


def test_cli_only_and_failures(plain_series, tmp_path, capsys):
    series = plain_series
    out = tmp_path / "out"
    assert main(["notebooks", "run", "--notebooks", str(series), "--out", str(out), "--only", "03,01_chart"]) == 0
    assert _ran(series) == ["01", "03"]
    assert f"index: {(out / 'index.html').resolve()}" in capsys.readouterr().out
    assert main(["notebooks", "run", "--notebooks", str(series), "--out", str(out), "--only", "02"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("artlab: error: 02_fails.ipynb failed in cell [")
    assert main(["notebooks", "run", "--notebooks", str(series), "--out", str(out), "--only", "04"]) == 2
    assert "no notebook 04 in the series (have 01, 02, 03)" in capsys.readouterr().err
    assert main(["notebooks", "run", "--notebooks", str(tmp_path / "nowhere"), "--out", str(out)]) == 2


def test_a_cell_that_runs_too_long_fails_the_notebook(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(folder / "01_slow.ipynb", ["import time\ntime.sleep(60)"])
    with pytest.raises(NotebookFailed, match=r"01_slow.ipynb failed in a cell .*longer than the 3 s limit"):
        run_series(tmp_path / "out", folder=folder, timeout=3, log=None)
    assert (tmp_path / "out" / "01_slow.html").is_file()


def test_a_series_kernel_is_ready_once_it_answers_even_while_iopub_never_falls_silent():
    """jupyter_client counts a kernel ready after IOPub has also been silent for 0.2 s (0.2 s or more at each
    notebook's start); the series' client does not wait for that, as nbclient reads only the answers to its own
    requests: with channels where the kernel answers `kernel_info` and IOPub carries a message every 10 ms, the
    series' client is ready at once, jupyter_client's is not within a second. (Every series in these tests runs
    real kernels through it.)"""
    import asyncio

    from jupyter_client.asynchronous import AsyncKernelClient

    from artlab.tools.notebooks import ready_client

    class Shell:
        async def get_msg(self, timeout=None):
            return {"msg_type": "kernel_info_reply", "content": {"status": "ok", "protocol_version": "5.3"}}

    class Chatter:  # a message of no request's every 10 ms, never silent
        async def get_msg(self, timeout=None):
            await asyncio.sleep(0.01)
            return {"msg_type": "stream", "parent_header": {}, "content": {"name": "stdout", "text": "chatter"}}

    def on_channels(client_class: type) -> AsyncKernelClient:
        class Client(client_class):
            shell_channel, iopub_channel, asked = Shell(), Chatter(), []

            def kernel_info(self):
                self.asked.append("kernel_info")

            async def _async_is_alive(self):
                return True

        return Client()

    async def ready_within(client: AsyncKernelClient, seconds: float) -> bool:
        try:
            await asyncio.wait_for(client.wait_for_ready(timeout=30), seconds)
        except asyncio.TimeoutError:
            return False
        return client.asked == ["kernel_info"]

    assert asyncio.run(ready_within(on_channels(ready_client()), 1.0))
    assert not asyncio.run(ready_within(on_channels(AsyncKernelClient), 1.0))


def test_a_kernel_that_dies_fails_its_notebook_and_keeps_what_ran(tmp_path):
    """A kernel that ends mid-notebook (out of memory, say) fails it in one line, and its page keeps the cells that
    ran before (the executed notebook is written once, at the end, whatever the end)."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(folder / "01_dies.ipynb", ["print('before the end')", "import os\nos._exit(1)", "print('never')"])
    with pytest.raises(NotebookFailed, match=r"01_dies.ipynb failed in a cell: the kernel died .*cell \[2\]"):
        run_series(tmp_path / "out", folder=folder, log=None)
    executed = nbformat.read(tmp_path / "out" / "01_dies.ipynb", as_version=4)
    printed = [o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs]
    assert printed == ["before the end\n"] and "before the end" in (tmp_path / "out" / "01_dies.html").read_text()


def test_the_index_shows_the_collection_and_task_each_notebook_ran_with(one_task, tmp_path):
    """--data reaches a notebook's `data`, or its `target` where it has no `data`; the index says what ran,
    a task the collection lacks replaced by its own (as the notebook's settings show)."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    shown = "from artlab import notebook_settings\nnotebook_settings(quick, {})"
    _notebook(folder / "01_settings.ipynb", [shown.format("data=data, task=task")],
              parameters="quick = True\ndata = 'synthetic'\ntask = 'style'")
    _notebook(folder / "02_target.ipynb", [shown.format("source=source, source_task='style', target=target, "
                                                        "target_task='medium'")],
              parameters="quick = True\nsource = 'synthetic'\ntarget = 'synthetic'")
    result = run_series(tmp_path / "out", data=str(one_task), folder=folder, log=None)
    assert result.records["02_target.ipynb"]["parameters"] == {"quick": True, "target": str(one_task.resolve())}
    assert _index_settings(result.index) == [
        ("01_settings", f"quick, data {one_task.name}, task label (given style)"),
        ("02_target", f"quick, source synthetic, source_task style, target {one_task.name}, target_task label "
                      f"(given medium)")]
    assert "has no such task" in (tmp_path / "out" / "01_settings.html").read_text()  # and the page says why


def test_html_export_shows_plotly_offline(series, tmp_path):
    """The executed notebook holds each figure once, as data; its page carries plotly.js once, inline: in chromium
    with the network off, both charts are drawn and the page asked nothing of the network."""
    (series / "fail.flag").unlink()
    out = run_series(tmp_path / "out", only="01", folder=series, log=None).index.parent
    executed = nbformat.read(out / "01_chart.ipynb", as_version=4)
    bundles = [o.data for c in executed.cells if c.cell_type == "code" for o in c.outputs if "data" in o]
    figures = [b for b in bundles if "application/vnd.plotly.v1+json" in b]
    assert len(figures) == 2 and not any("text/html" in b for b in bundles)  # no copy of plotly.js in the .ipynb
    text = (out / "01_chart.html").read_text()
    library = "/**\n* plotly.js v"  # the banner that opens plotly.min.js
    assert text.count(library) == 1 and text.count("Plotly.newPlot") == 2
    assert text.index(library) < text.index("Plotly.newPlot")  # loaded before the first chart draws
    assert not re.search(r"<script[^>]*\ssrc=", text)  # no script from elsewhere: CDN MathJax, require.js
    bar_chart, line_chart = re.findall(r'class="plotly-graph-div" id="(figure-\d+-\d+)"', text)
    if not CHROMIUM.is_file():
        pytest.skip(f"Debian's chromium is not installed at {CHROMIUM}: the page was not opened in a browser")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    remote, errors = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            context = browser.new_context(offline=True)
            context.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
                          else (remote.append(route.request.url), route.abort()))
            tab = context.new_page()
            tab.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            tab.on("pageerror", lambda error: errors.append(str(error)))
            tab.goto((out / "01_chart.html").as_uri())
            tab.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 2",
                                  timeout=30_000)
            bars = tab.locator(f"#{bar_chart} .trace.bars .point").count()
            points = tab.locator(f"#{line_chart} .scatterlayer .trace").count()
        finally:
            browser.close()
    assert bars == 2 and points == 1  # each figure in its own, stably named element, drawn by the inline plotly.js
    assert remote == [] and errors == []


def test_committed_notebooks_are_clean_and_take_quick():
    """No outputs in the repository; each notebook's `parameters` cell declares `quick` (default True)."""
    import papermill

    notebooks = sorted((ROOT / "notebooks").glob(PATTERN))
    assert notebooks
    for path in notebooks:
        book = nbformat.read(path, as_version=4)
        for number, cell in enumerate(book.cells):
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} cell {number} has outputs"
        declared = papermill.inspect_notebook(str(path))
        assert "quick" in declared, f"{path.name}: its parameters cell declares no `quick`"
        assert declared["quick"]["default"] == "True", f"{path.name}: commit it with quick = True"


def test_data_reaches_every_committed_notebook():
    """`--data` fills a collection parameter that each notebook's parameters cell declares (`data`, or the target
    of double fine-tuning)."""
    import papermill

    from artlab.experiments.settings import data_parameter

    for path in sorted((ROOT / "notebooks").glob(PATTERN)):
        declared = papermill.inspect_notebook(str(path))
        assert data_parameter(declared) in declared, f"{path.name}: --data would reach none of {list(declared)}"


def test_notebook_outputs_are_recorded():
    """Every cell of every committed notebook has recorded outputs for nbval, from its current source."""
    record = read_record()
    notebooks = sorted((ROOT / "notebooks").glob(PATTERN))
    stale = {nb.name: cells for nb in notebooks if (cells := stale_cells(nb, record))}
    assert not stale, f"{RECORD.name} does not match these cells (edited?): {stale}; record again: {RECORD_COMMAND}"
    assert set(record) == {nb.name for nb in notebooks}, f"{RECORD.name} records notebooks that are gone"
    gone = [key for key in NOT_COMPARED if key[1] not in record.get(key[0], {})]
    assert not gone, f"NOT_COMPARED names cells that no notebook has: {gone}"


#: A printed line with a folder and a number; a figure as plotly's notebook renderer shows it (plotly.js in a
#: script, then the figure as JSON, HTML with a fresh id and text), a line on stderr and a table, all in one cell.
#: The figure is displayed raw: plotly's renderer would cost each of the five kernels 2 s of imports.
NBVAL_NOTEBOOK_CELLS = [
    "import os, sys\nprint('runs in', os.environ['ARTLAB_RUNS'], 'took', 1.5 + float(os.environ['SHIFT']))",
    "import uuid\nimport pandas as pd\n"
    "shift, div = float(os.environ['SHIFT']), uuid.uuid4()\n"
    "display({'text/html': '<script type=\"text/javascript\">window.PlotlyConfig = {};</script>'}, raw=True)\n"
    "display({'application/vnd.plotly.v1+json': {'data': [{'type': 'bar', 'y': [shift]}]},\n"
    "         'text/html': f'<div id=\"{div}\"></div><script>Plotly.newPlot(\"{div}\", [{{y: [{shift}]}}])</script>',\n"
    "         'text/plain': f'Figure({{\"data\": [{{\"y\": [{shift}]}}]}})'}, raw=True)\n"
    "print('warming up', os.environ['SHIFT'], file=sys.stderr)\npd.DataFrame({'class': ['a'], 'accuracy': [0.25]})",
]


def _nbval(folder: Path, shift: str, runs: Path) -> subprocess.CompletedProcess:
    """pytest --nbval on `folder` with the record beside it, as conftest.py applies it to notebooks/."""
    (folder / "conftest.py").write_text(
        "import json, pathlib\nfrom tests.notebook_outputs import use_record\n"
        "def pytest_collection_modifyitems(config, items):\n"
        "    here = pathlib.Path(__file__).parent\n"
        "    use_record(items, json.loads((here / 'record.json').read_text()), folder=here)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SHIFT": shift, "ARTLAB_RUNS": str(runs)}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                           "--rootdir", str(folder), "-c", os.devnull, str(folder)],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=300)


def test_nbval_compares_recorded_outputs_after_sanitising(tmp_path):
    """Under --nbval-lax as in make test: other folders, numbers, figures and stderr pass; another word in a
    printed line or a table, or a cell edited since it was recorded, fails."""
    from nbclient import NotebookClient

    from tests.notebook_outputs import cell_record, sanitizer

    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(folder / "01_print.ipynb", NBVAL_NOTEBOOK_CELLS)
    book = nbformat.read(folder / "01_print.ipynb", as_version=4)
    recorded_env = {"ARTLAB_RUNS": str(tmp_path / "recorded-runs"), "ARTLAB_CACHE": str(tmp_path / "cache")}
    NotebookClient(book, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute(
        env={**os.environ, **recorded_env, "SHIFT": "0.25"})
    record = {"01_print.ipynb": {c.id: cell_record(c, sanitizer(recorded_env)) for c in book.cells
                                 if c.cell_type == "code"}}
    printed = record["01_print.ipynb"][book.cells[1].id]["outputs"]
    assert printed[0]["text"] == "runs in <runs> took <num>\n"
    table = record["01_print.ipynb"][book.cells[2].id]["outputs"]
    assert [list(o["data"]) for o in table] == [["text/html"]] and "<td><num></td>" in table[0]["data"]["text/html"]
    # one nbval run over four copies of the notebook, each with its own record: as recorded; another word in the
    # printed line; another word in the table; the table cell recorded from another source
    def recorded(edit=None) -> dict:
        cells = json.loads(json.dumps(record["01_print.ipynb"]))
        if edit:
            edit(cells[book.cells[1].id], cells[book.cells[2].id])
        return cells

    def other_word(printed, table):
        printed["outputs"][0]["text"] = "runs at <runs> took <num>\n"

    def other_column(printed, table):
        html = table["outputs"][0]["data"]
        html["text/html"] = html["text/html"].replace(">class<", ">style<")

    def other_source(printed, table):
        table["source"] = "0" * 16

    records = {"01_print.ipynb": recorded(), "02_word.ipynb": recorded(other_word),
               "03_column.ipynb": recorded(other_column), "04_stale.ipynb": recorded(other_source)}
    for name in records:
        if name != "01_print.ipynb":
            (folder / name).write_bytes((folder / "01_print.ipynb").read_bytes())
    (folder / "record.json").write_text(json.dumps(records))
    checked = _nbval(folder, "7.5", tmp_path / "other-runs")  # another runs folder, other numbers and figure
    failed = sorted(re.findall(r"^FAILED (\S+ \d+)", checked.stdout, re.M))
    assert checked.returncode == 1 and "3 failed, 5 passed" in checked.stdout, checked.stdout[-3000:]
    assert failed == ["02_word.ipynb::Cell 0", "03_column.ipynb::Cell 1", "04_stale.ipynb::Cell 1"], failed
    # (nbval counts code cells from 0): the table of 02 still matches, and so do the printed lines of 03 and 04
    # each failure's report, under its heading "___ 02_word.ipynb::Cell 0 ___"
    reasons = dict(zip(*[iter(re.split(r"^_{3,} (\S+)::Cell \d+ _{3,}$", checked.stdout, flags=re.M)[1:])] * 2))
    assert sorted(reasons) == ["02_word.ipynb", "03_column.ipynb", "04_stale.ipynb"], checked.stdout[-3000:]
    assert "Cell outputs differ" in reasons["02_word.ipynb"] and "runs at" in reasons["02_word.ipynb"]
    assert "Cell outputs differ" in reasons["03_column.ipynb"] and "style" in reasons["03_column.ipynb"]
    assert "has no recorded outputs for its current source" in reasons["04_stale.ipynb"]


def test_params_reach_the_notebooks_that_declare_them_and_the_index_states_peak_memory(tmp_path):
    from artlab.tools.notebooks import parse_parameters

    folder = tmp_path / "notebooks"
    folder.mkdir()
    grow = ("import time\nimport numpy as np\nheld = np.ones(size_mib * 2**20 // 8)\ntime.sleep(1)\n"
            "print(len(held), seeds, source)")
    _notebook(folder / "01_memory.ipynb", [grow], parameters="quick = True\nsize_mib = 1\nseeds = [0]\nsource = 'a'")
    _notebook(folder / "02_other.ipynb", ["print(quick)"], parameters="quick = True")
    given = parse_parameters(["size_mib=600", "seeds=[0, 1]", f"source={folder}", "unknown=x"])
    assert given == {"size_mib": 600, "seeds": [0, 1], "source": str(folder), "unknown": "x"}
    result = run_series(tmp_path / "out", folder=folder, log=None, parameters=given)
    first, second = result.records["01_memory.ipynb"], result.records["02_other.ipynb"]
    assert first["parameters"] == {"quick": True, "size_mib": 600, "seeds": [0, 1], "source": str(folder)}
    assert second["parameters"] == {"quick": True}  # only the parameters a notebook declares
    assert f"78643200 [0, 1] {folder}" in (tmp_path / "out" / "01_memory.html").read_text()
    assert first["peak_mib"] > second["peak_mib"] + 400  # the kernel that held 600 MiB more
    assert re.search(r"\d\.\d\d GiB", result.index.read_text())
    with pytest.raises(ValueError, match="--param takes NAME=VALUE"):
        parse_parameters(["epochs"])
