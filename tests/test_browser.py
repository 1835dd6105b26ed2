"""A real browser on the notebooks: JupyterLab, Debian's chromium driven by Playwright, live widgets.

One JupyterLab server (127.0.0.1, a free port, a token) serves copies of the nine notebooks for the whole
module (nothing is saved into the repository) and is stopped, with its kernels, whatever happens; one
chromium page keeps JupyterLab open. Each test opens one notebook from the file browser, runs all its cells
as committed (quick settings, the synthetic collection; runs go to the session's runs folder, where later
notebooks and the nbval run reuse them), changes one control of each of its explorers, then closes the
notebook and ends its kernel. It asserts: every cell ran without an error, each explorer's view changed, no
widget failed to display ("Error displaying widget: ..."), chromium's console logged no error, and no
control text, dropdown choice or chart title is cut short. It keeps a screenshot of each explorer after its
change (the paths are printed; `pytest -s` shows them). The kernels run as under `make lab`: live widgets
and progress bars. About 3 minutes on 2 cores, most of it the notebooks' own work.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CHROMIUM = Path("/usr/bin/chromium")
#: The machine's network is closed: no first-run, sync, update or QUIC traffic; a fresh profile per module.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: Bounds on every wait, in seconds: a notebook's Run All (the slowest, 07, takes about 25 s here), an
#: explorer's answer to a change (02's trains a run), the kernel's start.
RUN_ALL_TIMEOUT_S = 240
CHANGE_TIMEOUT_S = 120
KERNEL_TIMEOUT_S = 60


def browser_or_skip():
    """Playwright's sync API, or a skip saying what is missing."""
    if not CHROMIUM.is_file() or not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"Debian's chromium is not installed at {CHROMIUM} (make test installs it with apt-get "
                    "when it runs as root or with password-less sudo)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is missing: .venv/bin/pip install -e '.[test]'")
    return sync_playwright


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


#: Starts JupyterLab (in this process, as `python -m jupyterlab` does) after asking Linux to SIGTERM it when the
#: test process dies, even killed, so that a CI timeout leaves no server or kernel behind (the server stops its
#: kernels). A launcher, not preexec_fn, which is unsafe in a parent with threads (torch's). The server's event
#: logger imports jsonschema: artlab's import of it skips 1 s of compiling IRI grammars the server never uses.
#: Kernels start warm, as under `make lab`.
LAUNCHER = """import ctypes, os, signal, sys
if sys.platform == "linux" and ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM) != 0:  # PR_SET_PDEATHSIG
    sys.exit("prctl(PR_SET_PDEATHSIG) failed")
if os.getppid() != int(sys.argv[1]):
    sys.exit("the test process is already gone")
from artlab.lazy import import_jsonschema
import_jsonschema()
from artlab.tools.warm_kernels import use_warm_kernels
assert use_warm_kernels(), "artlab's kernel provisioner is not installed: make install"
from jupyterlab.labapp import main
sys.argv = ["jupyter-lab", *sys.argv[2:]]
sys.exit(main())
"""


def stop(server: subprocess.Popen) -> None:
    """SIGTERM the server's process group (the server and its kernels), then SIGKILL what is left."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(server.pid, signal.SIGKILL)  # kernels that outlived the server
    except ProcessLookupError:
        pass
    server.wait(timeout=10)


@dataclass
class Lab:
    """A running JupyterLab: its address, token, the folder it serves and the module's scratch folder."""

    url: str
    token: str
    root: Path
    scratch: Path
    pid: int  # the server's process

    def api(self, path: str, method: str = "GET"):
        request = urllib.request.Request(f"{self.url}/api/{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            body = answer.read()
        return json.loads(body) if body else None

    def warm_kernels(self) -> list[int]:
        """The kernels forked by the server's zygotes (artlab.tools.warm_kernels), as under `make lab`."""
        import psutil

        zygotes = [child for child in psutil.Process(self.pid).children()
                   if any(part.endswith("kernel_zygote.py") for part in child.cmdline())]
        return [kernel.pid for zygote in zygotes for kernel in zygote.children()]

    def shut_down_kernels(self) -> None:
        """End every session and its kernel (a finished notebook's kernel holds its networks in memory)."""
        for session in self.api("sessions"):
            self.api(f"sessions/{session['id']}", method="DELETE")


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 over copies of the notebooks, shared by the module; stopped at teardown."""
    pytest.importorskip("jupyterlab", reason="jupyterlab is missing: .venv/bin/pip install -e '.[notebooks]'")
    scratch = tmp_path_factory.mktemp("browser")
    root = scratch / "notebooks"
    root.mkdir()
    for notebook in NOTEBOOKS:
        (root / notebook.name).write_bytes(notebook.read_bytes())
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(scratch / "jupyter-config"),
           "JUPYTER_RUNTIME_DIR": str(scratch / "jupyter-runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(scratch / "lab-settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(scratch / "lab-workspaces")}
    for name in ("ARTLAB_STATIC", "TQDM_DISABLE"):  # live widgets and progress bars, as under `make lab`
        env.pop(name, None)
    labconfig = scratch / "jupyter-config" / "labconfig"
    labconfig.mkdir(parents=True)  # no "get notified about Jupyter news?" toast over the notebook
    (labconfig / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    log_path = scratch / "jupyterlab.log"
    log = log_path.open("w")
    server = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(os.getpid()), "--no-browser", "--ip=127.0.0.1",
                               f"--port={port}", "--port-retries=0", f"--IdentityProvider.token={token}",
                               f"--ServerApp.root_dir={root}", "--allow-root", "--LabApp.news_url=None",
                               "--LabApp.extension_manager=readonly",  # no registry look-ups
                               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
                              env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise AssertionError(f"JupyterLab exited with {server.returncode}: see {log_path}")
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"JupyterLab did not answer on {url} within 120 s: see {log_path}") from None
                time.sleep(0.5)
        yield Lab(url, token, root, scratch, server.pid)
    finally:
        stop(server)
        log.close()


class LabPage:
    """JupyterLab in one chromium page for the module's notebooks, opened one after the other from its file
    browser (loading the app again for each costs some 3 s of CPU); what the console logs as errors is kept."""

    def __init__(self, context, lab: Lab):
        self.context, self.lab, self.page, self.console, self.pages = context, lab, None, [], 0

    def open(self, name: str):
        """The page, with notebook `name` open (the app loaded first when there is no page)."""
        if self.page is None:
            self.page = self.context.new_page()
            self.page.on("console", lambda msg: self.console.append(
                f"{msg.text} ({msg.location.get('url', '')}:{msg.location.get('lineNumber', '')})")
                if msg.type == "error" else None)
            self.page.on("pageerror", lambda error: self.console.append(f"uncaught: {error}"))
            self.pages += 1  # a workspace of its own: a page dropped after a failure left its notebook open there
            self.page.goto(f"{self.lab.url}/lab/workspaces/page{self.pages}?token={self.lab.token}")
        item = self.page.locator(".jp-DirListing-itemText", has_text=re.compile(f"^{re.escape(name)}$"))
        item.dblclick(timeout=KERNEL_TIMEOUT_S * 1000)
        self.page.get_by_role("tabpanel", name=name).wait_for(timeout=KERNEL_TIMEOUT_S * 1000)
        assert self.page.locator(".jp-NotebookPanel").count() == 1, "another notebook is still open"
        return self.page

    def close_notebook(self) -> None:
        """Close the notebook's tab without saving it and end its kernel; on any trouble, drop the page (the next
        notebook gets a fresh one)."""
        try:
            if self.page is not None:
                self.page.keyboard.press("Escape")  # no menu or completer left open over the tab bar
                self.page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current .lm-TabBar-tabCloseIcon").click()
                discard = self.page.locator(".jp-Dialog button", has_text="Discard")  # "Save your work?"
                deadline = time.monotonic() + 10
                while self.page.locator(".jp-NotebookPanel").count():
                    assert time.monotonic() < deadline, "the notebook's tab did not close"
                    if discard.count():
                        discard.click()
                    time.sleep(0.2)
        except Exception:
            self.drop()
        finally:
            self.lab.shut_down_kernels()

    def drop(self) -> None:
        if self.page is not None:
            self.page.close()
            self.page = None


@pytest.fixture(scope="module")
def lab_page(jupyterlab):
    """One headless chromium (a fresh profile) with JupyterLab open, for the module's notebooks."""
    sync_playwright = browser_or_skip()
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(jupyterlab.scratch / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_FLAGS, viewport={"width": 1400, "height": 1000})
        try:
            yield LabPage(context, jupyterlab)
        finally:
            context.close()


def server_log_tail(log: Path, lines: int = 40) -> str:
    """The end of JupyterLab's log (kernel starts, restarts, websocket errors), printed when the test fails."""
    try:
        tail = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"no JupyterLab log at {log}"
    return "\n".join([f"last {len(tail)} lines of {log}:", *tail])


# ---- what each notebook's explorers are, and the change made to each ---------------------------------------
def pick(index: int) -> Callable:
    """Choose the option at `index` of a dropdown, or the button at `index` of a row of toggle buttons."""
    def change(control, box, page) -> None:
        select = control.locator("select")
        if select.count():
            before = select.input_value()
            select.select_option(index=index)
            assert select.input_value() != before, "the option picked is the one shown already"
        else:
            control.locator("button").nth(index).click()
    return change


def type_number(value: int) -> Callable:
    """Type `value` into a number box and press Enter (the value reaches the kernel on Enter)."""
    def change(control, box, page) -> None:
        field = control.locator("input")
        assert field.input_value() != str(value), "the value typed is the one shown already"
        field.fill(str(value))
        field.press("Enter")
    return change


def off_the_shelf_one_layer_down(control, box, page) -> None:
    """Choose off-the-shelf (the slider then offers layers), slide to the layer below its own, train and compare."""
    pick_label = page.locator(".widget-label", has_text=re.compile("^strategy$"))
    box.locator("xpath=./*[1]/*", has=pick_label).locator("select").select_option(label="off-the-shelf: feature layer")
    slider = box.locator("xpath=./*[1]/*", has=page.locator(".widget-label", has_text=re.compile("^layer$")))
    readout = slider.locator(".widget-readout")
    expect_text(readout, re.compile(r"^\S+\.\d+$"))  # a layer's name, the feature layer (features.18)
    before = readout.inner_text()
    slider.locator(".noUi-handle").press("ArrowLeft")
    expect_text(readout, re.compile(f"^(?!{re.escape(before)}$)"))
    button = box.get_by_role("button", name="train and compare")
    # clicked once the kernel has the slider's value (the tooltip names the run): ipywidgets holds a control's
    # change back while the kernel is busy with the one before, but sends a click at once
    expect_attribute(button, "title", re.compile(re.escape(f"train off-the-shelf ({readout.inner_text()})")))
    button.click()


def expect_text(locator, pattern: re.Pattern) -> None:
    """Until the element's text matches (bounded): a control's answer to the one before."""
    from playwright.sync_api import expect

    expect(locator).to_have_text(pattern, timeout=CHANGE_TIMEOUT_S * 1000)


def expect_attribute(locator, name: str, pattern: re.Pattern) -> None:
    """Until the element's attribute matches (bounded): the kernel's answer to a control."""
    from playwright.sync_api import expect

    expect(locator).to_have_attribute(name, pattern, timeout=CHANGE_TIMEOUT_S * 1000)


@dataclass(frozen=True)
class Change:
    explorer: str  # the explorer's class, for the messages and the screenshot's name
    control: str  # the description of the control changed
    act: Callable  # act(control, explorer box, page): the change
    shows: str = ""  # a text the view shows after the change (beside changing)


#: Each notebook's explorers, in the order they appear, and the change made to each (07 has none). Every
#: explorer type is here at least once; a notebook showing more or fewer explorers than listed fails.
EXPLORERS: dict[str, list[Change]] = {
    "01": [Change("CollectionBrowser", "class", pick(1))],
    "02": [Change("StrategyExplorer", "frozen blocks", off_the_shelf_one_layer_down,  # trains that probe
                  shows="off-the-shelf (features.17)")],
    "03": [Change("ChangeExplorer", "layer", pick(0))],  # it opens on the deepest layer
    "04": [Change("ChannelExplorer", "channel", pick(1))],  # renders the second most changed channel
    "05": [Change("TopKBrowser", "network", pick(1))],
    "06": [Change("ArtworkInspector", "artwork", pick(1)), Change("CollectionMap", "colour by", pick(1))],
    "07": [],
    "08": [Change("ArtworkInspector", "method", pick(1))],
    "09": [Change("SweepExplorer", "metric", pick(1)), Change("AuditExplorer", "min. images", type_number(2))],
}

#: An explorer as displayed: a VBox holding a row of controls and an Output with the view.
EXPLORER_BOXES = ".jp-Notebook .widget-vbox:has(> .widget-hbox):has(> .widget-output)"
IDLE = ".jp-Notebook-ExecutionIndicator[data-status='idle']"

#: A digest of what an explorer's output shows: its text (tables, chart titles and labels) and its images.
VIEW_DIGEST = """box => {
    const out = box.querySelector(':scope > .widget-output');
    const images = [...out.querySelectorAll('image, img')]
        .map(i => i.getAttribute('href') || i.getAttribute('xlink:href') || i.getAttribute('src') || '');
    const text = [out.textContent, ...images].join('\\u0000');
    let hash = 5381;
    for (let i = 0; i < text.length; i++) hash = (hash * 33 + text.charCodeAt(i)) | 0;
    return `${text.length}:${hash}:${out.querySelectorAll('.js-plotly-plot').length}`;
}"""

#: What is cut short in the notebook: control labels, slider readouts and button texts wider than their box
#: (ipywidgets ends them with "..."), a dropdown's choice wider than the dropdown, and chart titles, axis titles
#: and annotations drawn past their figure's edges.
CUT_SHORT = """() => {
    const cut = [];
    const texts = '.widget-label, .widget-readout, .widget-button, .widget-toggle-button';
    for (const label of document.querySelectorAll(texts.split(', ').map(s => `.jp-Notebook ${s}`).join(', '))) {
        if (label.offsetParent !== null && label.scrollWidth > label.clientWidth + 1)
            cut.push(`control text "${label.textContent}" (${label.scrollWidth} px in ${label.clientWidth} px)`);
    }
    const ruler = document.createElement('canvas').getContext('2d');
    for (const select of document.querySelectorAll('.jp-Notebook .widget-dropdown select')) {
        const style = getComputedStyle(select), text = select.options[select.selectedIndex]?.text ?? '';
        ruler.font = `${style.fontSize} ${style.fontFamily}`;
        const room = select.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
        if (select.offsetParent !== null && ruler.measureText(text).width > room + 1)
            cut.push(`dropdown choice "${text}" (${Math.round(ruler.measureText(text).width)} px in ${room} px)`);
    }
    for (const plot of document.querySelectorAll('.jp-Notebook .js-plotly-plot')) {
        const svg = plot.querySelector('svg.main-svg');
        if (!svg) continue;
        const edge = svg.getBoundingClientRect();
        if (edge.width === 0) continue;
        for (const text of plot.querySelectorAll('.gtitle, .xtitle, .ytitle, .annotation-text')) {
            const box = text.getBoundingClientRect();
            if (box.width === 0) continue;
            if (box.left < edge.left - 1 || box.right > edge.right + 1 || box.top < edge.top - 1)
                cut.push(`chart text "${text.textContent}" (${Math.round(box.left - edge.left)} to `
                         + `${Math.round(box.right - edge.left)} px, top ${Math.round(box.top - edge.top)} px, `
                         + `in a figure ${Math.round(edge.width)} px wide)`);
        }
    }
    return cut;
}"""


def prompts(page) -> list[str]:
    """Each code cell's prompt: "[3]:" when it ran, "[*]:" while queued or running, "[ ]:" when it did not (the
    text, not innerText: cells out of view are not rendered, content-visibility)."""
    return page.locator(".jp-Notebook .jp-CodeCell .jp-InputPrompt").all_text_contents()


def steady(sample: Callable[[], object], timeout_s: float, hold_s: float = 0.5, poll_s: float = 0.25) -> bool:
    """Whether `sample()` returned the same value, not None, for `hold_s` seconds within `timeout_s`, sampled every
    `poll_s`: at least as steady as two samples `hold_s` apart, a change seen sooner, a steady value as soon."""
    deadline, last, since = time.monotonic() + timeout_s, None, 0.0
    while time.monotonic() < deadline:
        value, now = sample(), time.monotonic()
        if value is None or value != last:
            last, since = value, now
        elif now - since >= hold_s:
            return True
        time.sleep(poll_s)
    return False


def wait_for_kernel(page, lab: Lab, name: str) -> None:
    """Until the notebook's kernel is idle and stays the one it is for half a second (on a fresh server JupyterLab
    may shut down the first kernel it starts and start another, dropping the cells queued meanwhile)."""
    page.wait_for_selector(IDLE, timeout=KERNEL_TIMEOUT_S * 1000)

    def idle_kernel() -> str | None:
        idle = [session["kernel"]["id"] for session in lab.api("sessions")
                if session["path"].endswith(name) and session["kernel"]["execution_state"] == "idle"]
        return idle[0] if len(idle) == 1 else None

    assert steady(idle_kernel, KERNEL_TIMEOUT_S), \
        f"the kernel of {name} was not idle and steady within {KERNEL_TIMEOUT_S} s"


def run_all_cells(page, tries: int = 2) -> None:
    """Run > Run All Cells, again if no cell started within 30 s (a click while the kernel is still
    connecting is dropped by JupyterLab)."""
    for _ in range(tries):
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator("li.lm-Menu-item[data-command='runmenu:run-all']").click()
        try:
            page.wait_for_function("""() => [...document.querySelectorAll('.jp-InputPrompt')]
                                       .some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))""", timeout=30_000)
            return
        except Exception:
            page.keyboard.press("Escape")
    raise AssertionError(f"Run All Cells started no cell in {tries} tries")


def wait_until_ran(page, timeout_s: float) -> None:
    """Until no cell is queued or running and the kernel is idle (Run All stops at a cell that fails)."""
    page.wait_for_function(f"""() => document.querySelector("{IDLE}") !== null
                                     && ![...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
                                        .some(p => p.textContent.includes('*'))""",
                           timeout=timeout_s * 1000, polling=200)


def settle(page, box, lab: Lab, name: str) -> None:
    """Until the kernel has done with the change and the explorer's view stays as it is for half a second.

    The kernel's state comes from the server: the notebook's busy indicator follows cells only, not the
    widget messages that a control sends (a training run started by a button).
    """
    def view() -> str | None:
        busy = [session for session in lab.api("sessions")
                if session["path"].endswith(name) and session["kernel"]["execution_state"] != "idle"]
        return None if busy else box.evaluate(VIEW_DIGEST)

    assert steady(view, CHANGE_TIMEOUT_S), \
        f"the kernel of {name} was still busy, or the view still changing, after {CHANGE_TIMEOUT_S} s"


def errors_shown(page) -> list[str]:
    """Tracebacks in the cells' outputs (explorers' outputs included), and widgets that failed to display."""
    shown = []
    for output in page.locator(".jp-Notebook .jp-OutputArea-output").all():
        text = output.text_content() or ""
        if "Traceback (most recent call last)" in text or "Error displaying widget" in text:
            shown.append(text[-1500:])
    return shown


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[n.name[:2] for n in NOTEBOOKS])
def test_notebook_in_jupyterlab(notebook, jupyterlab, lab_page):
    """Run all of a notebook's cells, change one control of each explorer: its view changes, nothing fails."""
    changes = EXPLORERS[notebook.name[:2]]
    shots = jupyterlab.scratch / "screenshots"
    shots.mkdir(exist_ok=True)
    logged = len(lab_page.console)
    started, times = time.monotonic(), {}
    try:
        page = lab_page.open(notebook.name)
        wait_for_kernel(page, jupyterlab, notebook.name)
        assert jupyterlab.warm_kernels(), "the notebook's kernel was not forked warm, as under `make lab`"
        times["opened"] = time.monotonic()
        run_all_cells(page)
        wait_until_ran(page, RUN_ALL_TIMEOUT_S)
        times["ran"] = time.monotonic()
        ran = prompts(page)
        assert ran and all(re.fullmatch(r"\[\d+\]:", p.strip()) for p in ran), f"cells that did not run: {ran}"
        assert not errors_shown(page), errors_shown(page)

        boxes = page.locator(EXPLORER_BOXES)
        assert boxes.count() == len(changes), f"{boxes.count()} explorers shown, {len(changes)} listed in EXPLORERS"
        for i, change in enumerate(changes):
            box = boxes.nth(i)
            box.scroll_into_view_if_needed()
            page.wait_for_function("box => box.querySelector(':scope > .widget-output').childElementCount > 0",
                                   arg=box.element_handle(), timeout=CHANGE_TIMEOUT_S * 1000)
            before = box.evaluate(VIEW_DIGEST)
            label = page.locator(".widget-label", has_text=re.compile(f"^{re.escape(change.control)}$"))
            control = box.locator("xpath=./*[1]/*", has=label)  # among the controls, in the explorer's first row
            assert control.count() == 1, f"{change.explorer}: no control {change.control!r}"
            change.act(control, box, page)
            page.wait_for_function(f"([box, before]) => ({VIEW_DIGEST})(box) !== before",
                                   arg=[box.element_handle(), before], timeout=CHANGE_TIMEOUT_S * 1000, polling=250)
            settle(page, box, jupyterlab, notebook.name)
            assert box.evaluate(VIEW_DIGEST) != before, f"{change.explorer}: the view is as before the change"
            assert change.shows in box.locator("xpath=./*[2]").text_content(), f"{change.explorer}: no {change.shows!r}"
            box.evaluate("box => box.scrollIntoView({block: 'start'})")  # its controls and first figures
            shot = shots / f"{notebook.stem}-{i + 1}-{change.explorer}.png"
            page.screenshot(path=str(shot))
            print(f"screenshot: {shot}")
        page.wait_for_selector(IDLE, timeout=KERNEL_TIMEOUT_S * 1000)
        assert not errors_shown(page), errors_shown(page)
        # an explorer's output lists only what it shows: no view of a widget gone (a closed progress bar)
        page.wait_for_function(f"""() => ![...document.querySelectorAll("{EXPLORER_BOXES} > .widget-output")]
                                          .some(out => out.textContent.includes('Loading widget'))""",
                               timeout=10_000)
        cut = page.evaluate(CUT_SHORT)
        assert not cut, f"cut short in {notebook.name}:\n" + "\n".join(cut)
        console = lab_page.console[logged:]
        assert not console, "chromium's console logged errors:\n" + "\n".join(console)
    except Exception:
        failure = shots / f"{notebook.stem}-failure.png"
        if lab_page.page is not None:
            lab_page.page.screenshot(path=str(failure))
            print(f"screenshot of the failure: {failure}")
        print("console errors:", *lab_page.console[logged:], sep="\n")
        print(server_log_tail(jupyterlab.scratch / "jupyterlab.log"))
        lab_page.drop()
        raise
    finally:
        times["done"] = time.monotonic()
        steps = ", ".join(f"{step} after {at - started:.0f} s" for step, at in times.items())
        print(f"{notebook.name}: {steps}")
        lab_page.close_notebook()


def test_titles_wrap_and_controls_read_in_full():
    """What the browser test checks, without a browser: a long chart title wraps at spaces (after the run's name
    first) with room above the plot, an explorer's controls get their description's width and its dropdowns and
    buttons their text's, and toggle buttons sit beside their description."""
    import ipywidgets as widgets
    import plotly.graph_objects as go

    from artlab.plots import TITLE_CHARS, readable_title
    from artlab.widgets import Explorer

    run = "sweep-synthetic-style-fine_tune-freeze-lr-49c6c0-freeze10-lr0.01-seed0"
    figure = readable_title(go.Figure(layout={"title": f"{run}: test accuracy per medium (95% Wilson intervals; "
                                                       "grey: fewer than 10 images)"}))
    lines = figure.layout.title.text.split("<br>")
    assert lines[0] == f"{run}:" and all(len(line) <= TITLE_CHARS for line in lines) and len(lines) == 2
    assert figure.layout.margin.t >= 40 + 1.3 * 17 * len(lines)
    assert readable_title(figure).layout.title.text == "<br>".join(lines)  # wrapped once
    assert readable_title(go.Figure(layout={"title": "short", "width": 400})).layout.title.text == "short"

    class Controls(Explorer):
        def view(self):
            return []

        def controls(self):
            return [widgets.Dropdown(options=["a"], description="group by"),
                    widgets.BoundedIntText(value=10, description="min. images"),
                    widgets.ToggleButtons(options=["gradcam", "ig"], description="method"),
                    widgets.Button(description="train and compare")]

    row = Controls().widget().children[0]
    dropdown, number, toggles, button, notice = row.children  # the notice: "Computing..." while a view computes
    assert isinstance(notice, widgets.Label) and notice.value == ""
    assert all(control.style.description_width == "initial" for control in (dropdown, number, toggles))
    assert dropdown.layout.width == button.layout.width == "max-content"
    assert toggles.layout.display == "flex" and row.layout.flex_flow == "row wrap"
