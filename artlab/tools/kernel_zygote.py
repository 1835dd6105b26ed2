"""A process that imports what every notebook kernel imports (torch, pandas, the kernel's own stack) once, then
forks each kernel from itself: a kernel is ready in a fraction of a second instead of the 2-3 s of CPU those
imports cost each one (`artlab.tools.warm_kernels` starts it and speaks to it).

Run by path, not as part of the artlab package, so that it imports no artlab code: a kernel forked from it imports
artlab afresh, the code as it is on disk now. Only third-party modules are imported ahead; a kernel asks for its
fork with its whole environment, and the manager keeps one such process per environment (what a module reads from
the environment as it is imported is the same as in a kernel started afresh).

`argv`: the socket's file descriptor, then the modules to import ahead, comma-separated (default AHEAD).
Protocol, on that socket (one JSON object per line):
- in: {"argv": [...], "env": {...}, "cwd": "..."}, with the kernel's stdin, stdout and stderr as file descriptors
  (SCM_RIGHTS); out: {"pid": N}, or {"stale": true} when a module imported ahead changed on disk since;
- out, whenever a kernel ends: {"exit": N, "code": C}, C as subprocess gives it (-9 for SIGKILL).
When the socket closes (the manager exited, however), the kernels are stopped, then this process. A stale zygote
forks no more and ends with its last kernel.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import select
import signal
import socket
import sys

#: Imported ahead: the kernel's stack and the heavy libraries every artlab notebook imports.
AHEAD = ("ipykernel.kernelapp", "ipykernel.ipkernel", "numpy", "pandas", "torch", "plotly.graph_objects")
PR_SET_PDEATHSIG = 1
#: The pipe that SIGCHLD wakes the loop through (closed in the kernels).
WAKE: list[int] = []


def signature(ahead: tuple[str, ...]) -> list:
    """The modification times of the modules imported ahead (their files and folders): a pip install changes it."""
    marks = []
    for name in sorted({name.split(".")[0] for name in ahead}):
        path = getattr(sys.modules.get(name), "__file__", None) or ""
        for item in (path, os.path.dirname(path)):
            try:
                marks.append(os.stat(item).st_mtime_ns)
            except OSError:
                marks.append(None)
    return marks


def die_with_parent(signum: int) -> None:
    """Linux sends `signum` to this process when its parent ends (prctl); elsewhere nothing."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum)


def become_kernel(control: socket.socket, request: dict, fds: list[int]) -> None:
    """In the forked child: take the kernel's streams, environment, folder and arguments, run ipykernel as
    `python -m ipykernel_launcher` would, and exit with its status. Never returns."""
    code = 1
    try:
        os.setsid()  # its own process group, as jupyter_client starts kernels: an interrupt reaches its workers too
        die_with_parent(signal.SIGKILL)
        control.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        for fd in WAKE:
            os.close(fd)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        sys.path.insert(0, os.getcwd())  # where `python -m` puts the working folder
        sys.argv = [request["argv"][0], *request["argv"][3:]]  # python -m ipykernel_launcher ARGS
        if "numpy" in sys.modules:  # a fresh process draws numpy's global seed anew (Python's random does at fork)
            sys.modules["numpy"].random.seed()
        import runpy

        try:
            runpy.run_module("ipykernel_launcher", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        except BaseException:
            import traceback

            traceback.print_exc()
        import atexit
        import threading

        threading._shutdown()  # as the interpreter ends: wait for the kernel's other threads, then its atexit work
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def serve(control: socket.socket, ahead: tuple[str, ...] = AHEAD) -> None:
    """Import `ahead`, then fork a kernel for each request until the socket closes; report each kernel's end."""
    for name in ahead:
        importlib.import_module(name)
    marks = signature(ahead)
    gc.collect()
    gc.freeze()  # the objects imported ahead stay out of the children's collections: fewer pages copied
    wake_read, wake_write = WAKE[:] = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: set[int] = set()
    buffer, stale = b"", False

    def send(message: dict) -> None:
        control.sendall(json.dumps(message).encode() + b"\n")

    control.sendall(b'{"ready": true}\n')
    while True:
        readable, _, _ = select.select([control, wake_read], [], [], 5.0)
        if wake_read in readable:
            os.read(wake_read, 512)
        for pid in list(children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                children.discard(pid)
                send({"exit": pid, "code": os.waitstatus_to_exitcode(status)})
        if stale and not children:  # replaced by a new zygote, and its last kernel has ended
            break
        if control not in readable:
            continue
        data, fds, _, _ = socket.recv_fds(control, 1 << 16, 3)
        buffer += data
        while data and b"\n" not in buffer:  # the rest of a long request (its descriptors came with the start)
            buffer += (data := control.recv(1 << 16))
        if not data:
            break
        line, _, buffer = buffer.partition(b"\n")
        request = json.loads(line)
        if stale or signature(ahead) != marks:
            for fd in fds:
                os.close(fd)
            send({"stale": True})
            stale = True
            continue
        pid = os.fork()
        if pid == 0:
            become_kernel(control, request, fds)
        for fd in fds:
            os.close(fd)
        children.add(pid)
        send({"pid": pid})
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
    del sys.path[0]  # this file's folder (artlab/tools): nothing is imported from it
    serve(socket.socket(fileno=int(sys.argv[1])), tuple(sys.argv[2].split(",")) if len(sys.argv) > 2 else AHEAD)
