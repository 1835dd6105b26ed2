"""A process that imports what every artlab notebook kernel imports first (torch, numpy, the kernel's own stack)
once, then forks each kernel from itself, so that a kernel skips those imports: some 1.6 s of CPU each
(`artlab.tools.warm_kernels` starts it and speaks to it).

Run by path, not as part of the artlab package, so that it imports no artlab code (unless a sitecustomize on the
PYTHONPATH does, as the tests' workshop guard does): a kernel forked from it imports artlab afresh, the code as it
is on disk now. The one exception is `artlab/lazy.py` (standard library only), loaded by path under a private name to
import jsonschema ahead without compiling its IRI grammars (`import_jsonschema`): plotly's notebook renderer imports
jsonschema through nbformat, which costs a kernel 1.4 s where plotly comes before artlab (a notebook's own
`import plotly`). Modules that check whether they run in a kernel as they are imported are not imported ahead
(pandas sizes its tables for a kernel or a terminal; plotly picks its renderer).
The manager keeps one zygote per kernel environment, started with it: what a module reads from the environment on
import is what a kernel started afresh would read. Kernels of any working folder share it (where PYTHONPATH names
folders relative to the working folder, each folder gets its own); what a module records of the folder on import,
multiprocessing's ORIGINAL_DIR, each kernel records again in its own folder.

`argv`: the socket's file descriptor, then the modules to import ahead, comma-separated (default AHEAD).
Protocol, on that socket (one JSON object per line):
- out, once its imports are done: {"ready": true};
- in: {"argv": [...], "env": {...}, "cwd": "..."}, with the kernel's stdin, stdout and stderr as file descriptors
  (SCM_RIGHTS); out: {"pid": N}; {"stale": true} when a module imported ahead changed on disk since (a pip
  install) or the zygote is retired, or {"error": "..."} when the fork failed;
- in: {"retire": true}: fork no more (the manager keeps a few zygotes only);
- out, whenever a kernel ends: {"exit": N, "code": C}, C as subprocess gives it (-9 for SIGKILL).
A zygote that is stale or retired ends with its last kernel. When the socket closes (the manager exited, however),
the kernels are stopped (SIGTERM, then SIGKILL after 5 s), then the zygote.
The garbage collector leaves out what the imports ahead left alive (leave_out_of_collections), and the zygote and its
kernels exit without its last passes (exit_without_collecting).
"""

from __future__ import annotations

import atexit
import gc
import importlib
import importlib.util
import json
import os
import select
import signal
import socket
import sys

#: Imported ahead: the kernel's own stack and the heavy libraries every artlab notebook imports (jsonschema as
#: artlab imports it, see `import_ahead`).
AHEAD = ("ipykernel.kernelapp", "ipykernel.ipkernel", "numpy", "torch", "jsonschema")
#: artlab's lazy-import helpers (standard library only), loaded by path under a private name, never as `artlab.lazy`.
LAZY_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lazy.py")
PR_SET_PDEATHSIG = 1
#: The pipe that SIGCHLD wakes the loop through (closed in the kernels).
WAKE: list[int] = []


def signature() -> list[tuple[str, int]]:
    """Every module file this process has imported, with its modification time: a pip install changes it."""
    marks = []
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path:
            try:
                marks.append((path, os.stat(path).st_mtime_ns))
            except OSError:
                marks.append((path, -1))
    return sorted(marks)


def import_ahead(name: str) -> None:
    """Import module `name`; jsonschema as artlab imports it, its IRI grammars compiled on first use
    (`artlab.lazy.import_jsonschema`, from artlab/lazy.py loaded under a private name)."""
    if name != "jsonschema":
        importlib.import_module(name)
        return
    spec = importlib.util.spec_from_file_location("_artlab_lazy_in_zygote", LAZY_FILE)
    lazy = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = lazy  # its module's __file__ is then among what `signature` checks
    spec.loader.exec_module(lazy)
    lazy.import_jsonschema()


def die_with_parent(signum: int) -> None:
    """Linux sends `signum` to this process when its parent ends (prctl); elsewhere nothing."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum)


def draw_anew() -> None:
    """What a fresh process draws at random as a module is imported, drawn again in a forked kernel: numpy's and
    torch's global seeds, multiprocessing's key (Python's random draws its own at fork)."""
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    if "torch" in sys.modules:
        sys.modules["torch"].seed()
    if "multiprocessing" in sys.modules:
        sys.modules["multiprocessing"].current_process().authkey = os.urandom(32)


def exit_without_collecting() -> None:
    """At exit, after every other exit handler, the garbage collector leaves out what is alive (`gc.freeze`), as
    artlab's commands do (artlab.lazy.collect_nothing_at_exit): registered in the zygote, kept by each kernel it forks
    (a kernel that uses artlab registers it again: harmless), which then ends 0.1 s sooner."""
    atexit.register(gc.freeze)


def leave_out_of_collections() -> None:
    """Collect the garbage the imports left, then leave every object still alive (the modules' own, alive as long as
    the process) out of the collector's later passes (`gc.freeze`), in the zygote and so in each kernel it forks. A
    kernel's full collection would otherwise walk them all, writing to each, and so copy the pages the zygote shares
    with it: a warm kernel's import cell costs 0.45 s of CPU instead of 0.75 s (benchmarks/kernel_start.py). What it
    costs is what artlab's first API call costs any process (`artlab.lazy.settle_imports`, which freezes what is
    alive then): an object of the zygote's later dropped in a reference cycle is never collected."""
    gc.collect()
    gc.freeze()


def become_kernel(control: socket.socket, zygote: int, request: dict, fds: list[int]) -> None:
    """In the forked child: take the kernel's streams, environment, folder and arguments and run ipykernel as
    `python -m ipykernel_launcher` would. Raises SystemExit at the end (or what the kernel raised): it leaves the
    zygote's loop and ends as an interpreter ends (atexit work, open files flushed; the collector's last passes left
    out, see exit_without_collecting), with the kernel's status."""
    os.setsid()  # its own process group, as jupyter_client starts kernels: an interrupt reaches its workers too
    die_with_parent(signal.SIGKILL)
    if os.getppid() != zygote:  # the zygote died before the line above
        os._exit(1)
    control.close()
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for fd in WAKE:
        os.close(fd)
    for target, fd in enumerate(fds):
        if fd != target:
            os.dup2(fd, target)
    for fd in set(fds) - {0, 1, 2}:
        os.close(fd)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    if not getattr(sys.flags, "safe_path", False):  # PYTHONSAFEPATH (3.11) aside, where `python -m` puts the
        sys.path.insert(0, os.getcwd())  # working folder (ipykernel_launcher takes it out)
    if "multiprocessing.process" in sys.modules:  # the folder it recorded on import, where "spawn" workers import
        sys.modules["multiprocessing.process"].ORIGINAL_DIR = os.getcwd()
    sys.argv = [request["argv"][0], *request["argv"][3:]]  # python -m ipykernel_launcher ARGS
    draw_anew()
    import runpy

    runpy.run_module("ipykernel_launcher", run_name="__main__", alter_sys=True)
    raise SystemExit(0)


def serve(control: socket.socket, ahead: tuple[str, ...] = AHEAD) -> None:
    """Import `ahead`, then fork a kernel for each request until the socket closes; report each kernel's end."""
    exit_without_collecting()
    gc.disable()  # no passes over what the imports make (0.2 s of torch's alone): collected once after them
    for name in ahead:
        import_ahead(name)
    leave_out_of_collections()
    gc.enable()
    marks, zygote = signature(), os.getpid()
    wake_read, wake_write = WAKE[:] = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: set[int] = set()
    buffer, retired = b"", False

    def send(message: dict) -> None:
        control.sendall(json.dumps(message).encode() + b"\n")

    try:
        send({"ready": True})
        while not (retired and not children):
            readable, _, _ = select.select([control, wake_read], [], [], 5.0)
            if wake_read in readable:
                os.read(wake_read, 512)
            for pid in list(children):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    children.discard(pid)
                    send({"exit": pid, "code": os.waitstatus_to_exitcode(status)})
            if control not in readable:
                continue
            data, fds, _, _ = socket.recv_fds(control, 1 << 16, 3)
            buffer += data
            while data and b"\n" not in buffer:  # the rest of a long request (its descriptors came with the start)
                buffer += (data := control.recv(1 << 16))
            if not data:
                return
            line, _, buffer = buffer.partition(b"\n")
            request = json.loads(line)
            if request.get("retire") or retired or signature() != marks:
                retired = True
                if "argv" in request:
                    send({"stale": True})
            else:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    pid = os.fork()
                except OSError as error:  # no process left to fork (limits, memory): this kernel starts the usual way
                    send({"error": str(error)})
                else:
                    if pid == 0:
                        become_kernel(control, zygote, request, fds)
                    children.add(pid)
                    send({"pid": pid})
            for fd in fds:
                os.close(fd)
    except OSError:  # the manager is gone mid-message
        if os.getpid() != zygote:  # a kernel's own error: it ends with it
            raise
    finally:
        if os.getpid() == zygote:
            stop_kernels(children)


def stop_kernels(children: set[int], grace_s: float = 5.0) -> None:
    """The manager is gone: end the kernels as they end when their parent does (SIGTERM), SIGKILL what is left."""
    import time

    for pid in children:
        try:
            os.killpg(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + grace_s
    while children and time.monotonic() < deadline:
        for pid in list(children):
            if os.waitpid(pid, os.WNOHANG)[0]:
                children.discard(pid)
        time.sleep(0.05)
    for pid in children:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass


if __name__ == "__main__":
    if not getattr(sys.flags, "safe_path", False):  # under PYTHONSAFEPATH (3.11) Python does not put it there
        del sys.path[0]  # this file's folder (artlab/tools): nothing is imported from it
    serve(socket.socket(fileno=int(sys.argv[1])), tuple(sys.argv[2].split(",")) if len(sys.argv) > 2 else AHEAD)
