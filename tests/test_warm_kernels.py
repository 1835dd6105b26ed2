"""Warm kernels (artlab.tools.warm_kernels): forked from a zygote that imported torch ahead, and otherwise the kernel
jupyter_client would have started: its environment, folder, streams, process group, interrupts, exit status, and
an end with its manager."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="kernels are forked warm on Linux only")


def started(cwd: Path, warm: bool = True, **env: str):
    """A kernel manager and client for this interpreter's python3 kernel, started in `cwd`, warm or as jupyter_client
    starts it (its local provisioner); a kernel meant to be warm is checked to be forked."""
    from jupyter_client.manager import KernelManager

    from artlab.tools.warm_kernels import ForkedKernel, kernels_warm

    with kernels_warm(warm) as on:
        assert on == warm, "artlab's provisioner is not registered (make install)"
        manager = KernelManager(kernel_name="python3")
        manager.start_kernel(cwd=str(cwd), env={**os.environ, **env})
    forked = warm and os.environ.get("ARTLAB_WARM_KERNELS", "1") != "0"  # on Linux (the module's skip)
    assert isinstance(manager.provisioner.process, ForkedKernel) == forked
    client = manager.client()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    return manager, client


def run(client, code: str, interrupt=None) -> tuple[str, str | None]:
    """What `code` printed, and the name of the error it raised (None if none); `interrupt()` is called 1 s in."""
    msg_id, printed, error = client.execute(code), [], None
    if interrupt is not None:
        time.sleep(1.0)
        interrupt()
    while True:
        message = client.get_iopub_msg(timeout=60)
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        if message["msg_type"] == "stream":
            printed.append(message["content"]["text"])
        elif message["msg_type"] == "error":
            error = message["content"]["ename"]
        elif message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
            return "".join(printed), error


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The kernels' working folder (one zygote for the module's kernels of one environment, whatever the folder)."""
    return tmp_path_factory.mktemp("kernels")


@pytest.fixture
def cheap_zygotes(monkeypatch):
    """artlab.tools.warm_kernels with zygotes that import only json, in a registry of the test's own, closed after."""
    from functools import partial

    from artlab.tools import warm_kernels

    monkeypatch.setattr(warm_kernels, "Zygote", partial(warm_kernels.Zygote, ahead=("json",)))
    monkeypatch.setattr(warm_kernels, "_zygotes", warm_kernels.OrderedDict())
    monkeypatch.setattr(warm_kernels, "_retired", [])
    yield warm_kernels
    for zygote in [*warm_kernels._zygotes.values(), *warm_kernels._retired]:
        zygote.close()


def stop(manager, client) -> None:
    client.stop_channels()
    manager.shutdown_kernel(now=True)


#: What a kernel reports of itself as soon as it starts: among it what modules read as they are imported (pandas's
#: table width, which differs in a kernel and a terminal; ipykernel's parent, from the environment).
ITSELF = """import gc, json, os, select, sys
stdin = os.read(0, 10).decode() if select.select([0], [], [], 2.0)[0] else "no end of file"
print(json.dumps({"stdin": stdin, "max_columns": __import__("pandas").get_option("display.max_columns"),
                  "pid": os.getpid(), "parent": os.getppid(), "group": os.getpgid(0), "cwd": os.getcwd(),
                  "path": sys.path, "argv0": sys.argv[0], "main": __name__, "torch_loaded": "torch" in sys.modules,
                  "marker": os.environ.get("ARTLAB_TEST_MARKER"), "session": os.environ.get("JPY_SESSION_NAME"),
                  "own": [os.environ.get(name) for name in ("ARTLAB_RUNS", "ARTLAB_CACHE", "ARTLAB_INTERACTIVE")],
                  "seed": __import__("numpy").random.randint(1 << 30),
                  "torch_seed": sys.modules["torch"].initial_seed() if "torch" in sys.modules else None,
                  "parent_handle": sys.modules["ipykernel.kernelapp"].IPKernelApp.instance().parent_handle,
                  "frozen": gc.get_freeze_count(),
                  "jsonschema": "jsonschema" in sys.modules, "iri_grammars": "rfc3987_syntax" in sys.modules}))"""

#: A reference cycle made in the kernel, dropped, then collected: what the collector still does in a warm kernel.
COLLECTED = """import gc, weakref
class Node:
    pass
a, b = Node(), Node()
a.b, b.a = b, a
alive = weakref.ref(a)
del a, b
gc.collect()
print(alive() is None)"""

#: jsonschema's IRI checks, as a kernel sees them: a valid IRI, one with a space; then whether its grammars are loaded.
IRI_CHECKS = """import sys, jsonschema
check = jsonschema.FormatChecker()
print(check.conforms("https://example.org/caf\u00e9", "iri"), check.conforms("https://exa mple.org", "iri"),
      "rfc3987_syntax" in sys.modules)"""


#: A reference cycle alive until the kernel exits, whose finaliser leaves a file named `path` (os functions kept as
#: defaults: at exit the module's globals may be gone), and an exit handler that leaves `path`.ended: the kernel
#: ended by itself, not killed.
CYCLE_AT_EXIT = """import atexit, os
class Finalised:
    def __del__(self, path={path!r}, close=os.close, open_=os.open, flags=os.O_CREAT | os.O_WRONLY):
        close(open_(path, flags))
kept = Finalised()
kept.me = kept
atexit.register(lambda: open({path!r} + ".ended", "w").close())"""


def own_variables(folder: Path, session: str) -> dict[str, str]:
    """What a series sets for each of its kernels (its runs folder, cache, pages ahead): they pick no zygote."""
    return {"ARTLAB_RUNS": str(folder / f"runs-{session}"), "ARTLAB_CACHE": str(folder / f"cache-{session}"),
            "ARTLAB_INTERACTIVE": "1" if session == "second.ipynb" else "0"}


def test_warm_kernels_are_forked_and_see_what_a_fresh_kernel_sees(folder):
    (folder / "here.txt").write_text("x")
    seen, sessions = [], ("fresh.ipynb", "first.ipynb", "second.ipynb")
    for warm, session in zip((False, True, True), sessions):
        manager, client = started(folder, warm, ARTLAB_TEST_MARKER="warm", JPY_SESSION_NAME=session,
                                  **own_variables(folder, session))
        try:
            printed, error = run(client, ITSELF)
            assert error is None, printed
            seen.append({**json.loads(printed), "provisioner_pid": manager.provisioner.pid})
            assert run(client, "print(open('here.txt').read())") == ("x\n", None)  # the folder given
            assert run(client, IRI_CHECKS) == ("True False True\n", None)  # checked as in a fresh kernel
            assert run(client, COLLECTED) == ("True\n", None)
            assert run(client, CYCLE_AT_EXIT.format(path=str(folder / f"finalised-{session}"))) == ("", None)
        finally:
            client.stop_channels()
            manager.shutdown_wait_time = 60  # not terminated after 2.5 s on a busy machine: its own end is checked
            manager.shutdown_kernel()  # asked to end: its exit handlers run
    # each ended by itself; at exit a fresh kernel's garbage collector walks what is alive and finalises the cycle, a
    # warm one's leaves it
    assert all((folder / f"finalised-{session}.ended").exists() for session in sessions)
    assert [(folder / f"finalised-{session}").exists() for session in sessions] == [True, False, False]
    fresh, first, second = seen
    for kernel in seen:
        assert kernel["pid"] == kernel["provisioner_pid"] == kernel["group"]  # its own process group, as jupyter's
        for key in ("cwd", "path", "argv0", "main", "marker", "stdin", "max_columns", "parent_handle"):
            assert kernel[key] == fresh[key], key
    assert fresh["cwd"] == str(folder) and fresh["marker"] == "warm" and fresh["stdin"] == ""
    assert not fresh["torch_loaded"] and first["torch_loaded"] and second["torch_loaded"]  # imported ahead
    # jsonschema too (plotly's renderer imports it), its IRI grammars compiled only when an IRI is checked
    assert not fresh["jsonschema"] and first["jsonschema"] and second["jsonschema"]
    assert not any(kernel["iri_grammars"] for kernel in seen)
    # what the zygote's imports left alive is left out of the collector's passes (gc.freeze); a fresh kernel's is not
    assert fresh["frozen"] == 0 < first["frozen"] == second["frozen"]
    assert fresh["parent"] == os.getpid() != first["parent"] == second["parent"]  # one zygote for one environment
    assert [kernel["session"] for kernel in seen] == ["fresh.ipynb", "first.ipynb", "second.ipynb"]
    assert [kernel["own"] for kernel in seen] == [list(own_variables(folder, session).values()) for session in sessions]
    assert first["seed"] != second["seed"] and first["torch_seed"] != second["torch_seed"]  # drawn anew, as fresh


def test_kernels_in_another_folder_share_the_zygote_and_their_spawned_workers_import_from_it(folder, tmp_path):
    """A kernel in another folder, with the same environment, is forked by the same zygote; multiprocessing's record
    of the working folder, made as it is imported and where its "spawn" workers import from, is the kernel's own."""
    from artlab.tools.warm_kernels import ZYGOTE_FOLDER

    (tmp_path / "artlab_square.py").write_text("def square(x):\n    return x * x\n")
    same = {"PYTHONPATH": absolute(os.environ["PYTHONPATH"])} if os.environ.get("PYTHONPATH") else {}
    parents = []
    for cwd in (folder, tmp_path):
        manager, client = started(cwd, ARTLAB_TEST_MARKER="warm", **same)
        try:
            parents.append(run(client, "import os; print(os.getppid())")[0])
            if cwd == tmp_path:
                assert run(client, "import multiprocessing, artlab_square\n"
                                   "with multiprocessing.get_context('spawn').Pool(1) as pool:\n"
                                   "    print(pool.map(artlab_square.square, [3]))") == ("[9]\n", None)
        finally:
            stop(manager, client)
    assert parents[0] == parents[1]
    assert Path(f"/proc/{parents[0].strip()}/cwd").resolve() == Path(ZYGOTE_FOLDER)  # not a notebook's folder


def absolute(path: str) -> str:
    """PYTHONPATH `path` with each folder named absolutely, as this process resolved it."""
    return os.pathsep.join(os.path.abspath(entry) for entry in path.split(os.pathsep))


def test_a_pythonpath_relative_to_the_folder_gets_a_zygote_per_folder(tmp_path, cheap_zygotes):
    """PYTHONPATH's relative folders are resolved as the interpreter starts, in its working folder: kernels in two
    folders get a zygote each, and import from their own folder's `lib`, as fresh kernels do."""
    for name in ("a", "b"):
        (tmp_path / name / "lib").mkdir(parents=True)
        (tmp_path / name / "lib" / "artlab_where.py").write_text(f"WHERE = {name!r}\n")
    relative = os.pathsep.join(["lib", *filter(None, [os.environ.get("PYTHONPATH")])])
    seen = []
    for name in ("a", "b"):
        manager, client = started(tmp_path / name, ARTLAB_TEST_MARKER="warm", PYTHONPATH=relative)
        try:
            seen.append(run(client, "import os, artlab_where\nprint(artlab_where.WHERE, os.getppid())")[0].split())
        finally:
            stop(manager, client)
    assert [where for where, _ in seen] == ["a", "b"] and seen[0][1] != seen[1][1]


def test_a_missing_folder_fails_the_start_as_for_a_fresh_kernel(tmp_path):
    """The start fails, and the folder made afterwards gets a warm kernel (nothing about it was marked failed)."""
    with pytest.raises(FileNotFoundError):
        started(tmp_path / "missing", ARTLAB_TEST_MARKER="warm")
    (tmp_path / "missing").mkdir()
    stop(*started(tmp_path / "missing", ARTLAB_TEST_MARKER="warm"))  # checked to be forked (by the module's zygote)


def test_another_environment_gets_its_own_zygote_started_with_it(folder):
    """What a module reads from the environment as it is imported is the kernel's own: its zygote started with it."""
    parents = []
    for marker in ("warm", "other"):
        manager, client = started(folder, ARTLAB_TEST_MARKER=marker)
        try:
            printed, error = run(client, ITSELF)
            assert error is None, printed
            kernel = json.loads(printed)
            assert kernel["marker"] == marker
            zygote_environment = Path(f"/proc/{kernel['parent']}/environ").read_bytes().split(b"\0")
            assert f"ARTLAB_TEST_MARKER={marker}".encode() in zygote_environment
            parents.append(kernel["parent"])
        finally:
            stop(manager, client)
    assert parents[0] != parents[1]


def test_an_interrupt_stops_the_cell_and_the_kernel_goes_on(folder):
    manager, client = started(folder, ARTLAB_TEST_MARKER="warm")
    try:
        printed, error = run(client, "import time\ntime.sleep(30)", interrupt=manager.interrupt_kernel)
        assert error == "KeyboardInterrupt"
        assert run(client, "print(6 * 7)") == ("42\n", None)
    finally:
        stop(manager, client)


def test_a_kernel_that_dies_reports_its_status_and_a_restart_gives_a_working_one(folder):
    manager, client = started(folder, ARTLAB_TEST_MARKER="warm")
    try:
        client.execute("import os; os._exit(3)")
        deadline = time.monotonic() + 20
        while manager.is_alive():
            assert time.monotonic() < deadline, "the dead kernel still counts as alive"
            time.sleep(0.05)
        assert manager.provisioner.process.poll() == 3
        manager.restart_kernel(now=True)
        client.wait_for_ready(timeout=60)
        assert run(client, "print('back')") == ("back\n", None)
    finally:
        stop(manager, client)


MANAGER = """
import json, os, sys, time
from artlab.tools.warm_kernels import Zygote
zygote = Zygote(dict(os.environ), ahead=("json",))
kernel = zygote.fork([sys.executable, "-m", "ipykernel_launcher", "-f", sys.argv[1]], dict(os.environ), os.getcwd(),
                     [0, 2, 2])
print(json.dumps({"kernel": kernel, "zygote": zygote.process.pid}), flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, ended and waiting to be reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_the_zygote_and_its_kernels_end_when_the_manager_is_killed(tmp_path):
    manager = subprocess.Popen([sys.executable, "-c", MANAGER, str(tmp_path / "kernel.json")],
                               stdout=subprocess.PIPE, text=True)
    try:
        pids = json.loads(manager.stdout.readline())
        assert alive(pids["kernel"]) and alive(pids["zygote"])
    finally:
        manager.send_signal(signal.SIGKILL)
        manager.wait()
    deadline = time.monotonic() + 20
    while alive(pids["kernel"]) or alive(pids["zygote"]):
        assert time.monotonic() < deadline, f"left behind: {pids}"
        time.sleep(0.1)


def test_a_module_changed_on_disk_retires_its_zygote_after_its_last_kernel(tmp_path):
    """A pip install between two kernels: the next kernel needs a new zygote; the kernel already running keeps
    working, and the old zygote ends with it."""
    from artlab.tools.warm_kernels import ForkedKernel, Zygote

    package = tmp_path / "site" / "artlab_probe"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("VERSION = 1\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")])}
    zygote = Zygote(env, ahead=("artlab_probe",))
    command = [sys.executable, "-m", "ipykernel_launcher", "-f", str(tmp_path / "kernel.json")]
    log = (tmp_path / "kernel.log").open("w")
    streams = [0, log.fileno(), log.fileno()]
    try:
        first = zygote.fork(command, env, str(tmp_path), streams)
        assert first is not None
        os.utime(package / "__init__.py", ns=(0, 0))  # as a reinstall changes the files' times
        assert zygote.fork(command, env, str(tmp_path), streams) is None  # stale
        kernel = ForkedKernel(zygote, first)
        assert kernel.poll() is None  # still running
        kernel.kill()
        assert kernel.wait(timeout=20) == -signal.SIGKILL
        assert zygote.process.wait(timeout=20) == 0  # it ended with its last kernel
    finally:
        zygote.close()
        log.close()


def test_a_killed_zygote_reports_its_kernels_killed_and_they_die_with_it(tmp_path):
    from artlab.tools.warm_kernels import ForkedKernel, Zygote

    zygote = Zygote(dict(os.environ), ahead=("json",))
    command = [sys.executable, "-m", "ipykernel_launcher", "-f", str(tmp_path / "kernel.json")]
    try:
        kernel = ForkedKernel(zygote, zygote.fork(command, dict(os.environ), str(tmp_path), [0, 2, 2]))
        assert kernel.poll() is None
        zygote.process.kill()
        assert kernel.wait(timeout=20) == -signal.SIGKILL
        deadline = time.monotonic() + 20
        while alive(kernel.pid):
            assert time.monotonic() < deadline, "the kernel outlived its zygote"
            time.sleep(0.05)
    finally:
        zygote.close()


def test_a_retired_zygote_forks_no_more_and_ends_and_one_that_cannot_start_says_so(tmp_path):
    from artlab.tools.warm_kernels import Zygote, ZygoteGone

    zygote = Zygote(dict(os.environ), ahead=("json",))
    try:
        zygote.retire()
        assert zygote.process.wait(timeout=20) == 0  # no kernel left: it ends at once
        with pytest.raises(ZygoteGone):
            zygote.fork([sys.executable, "-m", "ipykernel_launcher"], dict(os.environ), str(tmp_path), [0, 2, 2])
    finally:
        zygote.close()
    with pytest.raises(ZygoteGone):
        Zygote(dict(os.environ), ahead=("artlab_no_such_module",))


def test_artlab_warm_kernels_0_starts_kernels_the_usual_way(tmp_path, monkeypatch):
    monkeypatch.setenv("ARTLAB_WARM_KERNELS", "0")
    manager, client = started(tmp_path)
    try:
        printed, error = run(client, "import os; print(os.getppid())")
        assert error is None and int(printed) == os.getpid()  # started by this process, not forked by a zygote
    finally:
        stop(manager, client)


def test_two_zygotes_are_kept_and_an_older_one_ends_with_its_last_kernel(tmp_path, cheap_zygotes):
    warm_kernels = cheap_zygotes
    kernels = [warm_kernels.fork_kernel([sys.executable, "-m", "ipykernel_launcher", "-f",
                                         str(tmp_path / f"kernel-{marker}.json")],  # ports of its own
                                        {**os.environ, "ARTLAB_TEST_MARKER": marker}, str(tmp_path),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for marker in ("one", "two", "three")]
    try:
        assert all(isinstance(kernel, warm_kernels.ForkedKernel) for kernel in kernels)
        first = kernels[0].zygote
        assert len(warm_kernels._zygotes) == 2 and first not in warm_kernels._zygotes.values()
        assert first.process.pid in warm_kernels.zygote_pids()  # retired, still serving its kernel
        kernels[0].kill()
        assert kernels[0].wait(timeout=20) == -signal.SIGKILL
        assert first.process.wait(timeout=20) == 0
        assert first.process.pid not in warm_kernels.zygote_pids()
    finally:
        for kernel in filter(None, kernels):
            kernel.kill()
