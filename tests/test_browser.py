"""A real browser on the notebooks: JupyterLab, Debian's chromium driven by Playwright, live widgets.

The server listens on 127.0.0.1 on a free port with a token, serves a copy of notebook 04 (so nothing
is saved into the repository), and is stopped, with its kernels, whatever happens in the test.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "04_filter_visualisation.ipynb"
CHROMIUM = Path("/usr/bin/chromium")
#: The machine's network is closed: no first-run, sync, update or QUIC traffic; a fresh profile per test.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
RUN_ALL_TIMEOUT_S = 600


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


#: Starts JupyterLab (by exec, same process) after asking Linux to SIGTERM it when the test process dies, even
#: killed, so that a CI timeout leaves no server or kernel behind (the server stops its kernels). A launcher,
#: not preexec_fn, which is unsafe in a parent with threads (torch's).
LAUNCHER = """import ctypes, os, signal, sys
if sys.platform == "linux" and ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM) != 0:  # PR_SET_PDEATHSIG
    sys.exit("prctl(PR_SET_PDEATHSIG) failed")
if os.getppid() != int(sys.argv[1]):
    sys.exit("the test process is already gone")
os.execv(sys.executable, [sys.executable, "-m", "jupyterlab", *sys.argv[2:]])
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


@pytest.fixture
def jupyterlab(tmp_path):
    """A JupyterLab server on 127.0.0.1 over a copy of notebook 04: (base URL, token); stopped at teardown."""
    pytest.importorskip("jupyterlab", reason="jupyterlab is missing: .venv/bin/pip install -e '.[notebooks]'")
    root = tmp_path / "notebooks"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "lab-workspaces")}
    env.pop("ARTLAB_STATIC", None)  # live widgets: a browser is attached
    labconfig = tmp_path / "jupyter-config" / "labconfig"
    labconfig.mkdir(parents=True)  # no "get notified about Jupyter news?" toast over the notebook
    (labconfig / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    log = (tmp_path / "jupyterlab.log").open("w")
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
                raise AssertionError(f"JupyterLab exited with {server.returncode}: see {log.name}")
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"JupyterLab did not answer on {url} within 120 s: see {log.name}") from None
                time.sleep(0.5)
        yield url, token, root
    finally:
        stop(server)
        log.close()


def server_log_tail(log: Path, lines: int = 40) -> str:
    """The end of JupyterLab's log (kernel starts, restarts, websocket errors), printed when the test fails."""
    try:
        tail = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"no JupyterLab log at {log}"
    return "\n".join([f"last {len(tail)} lines of {log}:", *tail])


def plot_images(page, explorer) -> list[str]:
    """The image sources (data URLs) of the first plotly figure in the explorer's output: the two renders."""
    images = explorer.locator(".widget-output .js-plotly-plot").first.locator("image")
    return [images.nth(i).get_attribute("href") or images.nth(i).get_attribute("xlink:href") or ""
            for i in range(images.count())]


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


@pytest.mark.slow
def test_channel_explorer_in_jupyterlab(jupyterlab, tmp_path):
    """Open notebook 04, run all cells, pick another channel: the renders shown change; a screenshot is kept."""
    sync_playwright = browser_or_skip()
    url, token, _root = jupyterlab
    screenshot = tmp_path / "jupyterlab-channel-explorer.png"
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        try:
            page.goto(f"{url}/lab/tree/{NOTEBOOK.name}?token={token}")
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
            run_all_cells(page)

            channel = page.locator(".widget-dropdown", has_text="channel").locator("select")
            channel.wait_for(timeout=RUN_ALL_TIMEOUT_S * 1000)
            explorer = page.locator(".widget-vbox", has=channel).last
            page.wait_for_function("el => el.querySelectorAll('.js-plotly-plot image').length >= 2",
                                   arg=explorer.element_handle(), timeout=120_000)
            before = plot_images(page, explorer)
            first_channel = channel.input_value()

            channel.select_option(index=1)
            assert channel.input_value() != first_channel
            page.wait_for_function(
                """([el, before]) => {
                       const images = [...el.querySelectorAll('.widget-output .js-plotly-plot')][0]
                           ?.querySelectorAll('image') ?? [];
                       const now = [...images].map(i => i.getAttribute('href') || i.getAttribute('xlink:href'));
                       return now.length >= 2 && JSON.stringify(now) !== JSON.stringify(before);
                   }""", arg=[explorer.element_handle(), before], timeout=300_000)
            after = plot_images(page, explorer)
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=300_000)
            channel.evaluate("el => el.scrollIntoView({block: 'start'})")  # the controls, renders and figures
            page.screenshot(path=str(screenshot))
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            print(f"screenshot of the failure: {tmp_path / 'failure.png'}")
            print(server_log_tail(tmp_path / "jupyterlab.log"))
            raise
        finally:
            context.close()
    print(f"screenshot: {screenshot}")
    assert len(before) >= 2 and len(after) == len(before)
    assert all(src.startswith("data:image/") for src in before + after)
    assert after != before  # each network's render of the new channel differs from the first channel's
    assert screenshot.stat().st_size > 10_000
