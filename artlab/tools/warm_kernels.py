"""Warm kernels: a notebook's Python kernel forked from a process that has already imported torch and the kernel's
own stack: a notebook's import cell is done in about 0.8 s instead of 2.5 s, the kernel's CPU 0.5 s instead of 2.2 s
(benchmarks/kernel_start.py).

`WarmKernelProvisioner` is a jupyter_client kernel provisioner (registered as "artlab-warm-kernel"), used by
JupyterLab under `make lab`, the headless series for notebooks that use artlab, and the tests' nbval. It keeps a
`Zygote` (`artlab/tools/kernel_zygote.py`) per kernel environment (`zygote_key`), started with its first kernel,
and forks every kernel from it, whatever its notebook's folder; the two used last are kept (each holds some 200 MB
of its own). A kernel it cannot fork (another Python, not Linux, other launch options, a zygote that failed) starts
as jupyter_client starts any.
A warm kernel has the environment, working folder, streams (stdin at its end, as jupyter_client leaves it), own process
group, exit and random seeds of a fresh one; modules changed on disk since the zygote imported them (a pip install) make
a new zygote; the zygote imports no artlab module (artlab/lazy.py aside, loaded under a private name). What differs:
`ps` shows it as kernel_zygote.py, the kernels of one zygote share its string hash seed and what a module read of
the zygote's folder (ZYGOTE_FOLDER) as it was imported, multiprocessing's record aside (each kernel sets its own), the
garbage collector leaves out what the zygote's imports left alive (`gc.freeze`), and at exit what is still alive, as
a fresh kernel does once it uses artlab's API (`artlab.lazy.settle_imports`, `collect_nothing_at_exit`).
ARTLAB_WARM_KERNELS=0 in the manager's environment (JupyterLab's, the series') starts every kernel the usual way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jupyter_client.provisioning import LocalProvisioner

NAME = "artlab-warm-kernel"
ZYGOTE_FILE = Path(__file__).with_name("kernel_zygote.py")
#: Variables a kernel's environment holds for it alone (its notebook, its test, its series' runs folder, cache and
#: pages), read as it runs, never as a module is imported (no artlab module reads them on import): they do not pick
#: the zygote. (ipykernel reads JPY_PARENT_PID on import: it is the manager's, the same for all its kernels.)
OWN_VARIABLES = frozenset({"JPY_SESSION_NAME", "PYTEST_CURRENT_TEST", "ARTLAB_RUNS", "ARTLAB_CACHE",
                           "ARTLAB_INTERACTIVE"})
#: jupyter_client's launch options a fork honours; any other makes the kernel start the usual way.
LAUNCH_OPTIONS = frozenset({"stdin", "stdout", "stderr", "env", "cwd", "independent", "extra_arguments", "kernel_id"})
#: Zygotes kept at once (some 200 MB of its own each): the ones used last; an older one ends with its last kernel.
KEEP_ZYGOTES = 2
#: Where a zygote works when no folder picks it: a folder always there (a notebook's may be moved or deleted).
ZYGOTE_FOLDER = os.path.abspath(os.sep)
#: Seconds a zygote may take to answer (its imports ahead, a fork) before its kernels start the usual way.
ANSWER_TIMEOUT_S = 120
log = logging.getLogger(__name__)


class ZygoteGone(RuntimeError):
    """The zygote ended or could not start: the kernel starts the usual way."""


class Zygote:
    """A process with torch and ipykernel imported, forking kernels that share its environment (see
    kernel_zygote.py)."""

    def __init__(self, env: dict[str, str], cwd: str | None = None, ahead: tuple[str, ...] = ()):
        """A zygote started with `env` in `cwd` (ZYGOTE_FOLDER, or the folder that picks it: `zygote_key`); `ahead`:
        the modules it imports ahead, where not its own list (kernel_zygote.AHEAD)."""
        ours, theirs = socket.socketpair()
        command = [sys.executable, str(ZYGOTE_FILE), str(theirs.fileno())] + ([",".join(ahead)] if ahead else [])
        try:
            self.process = subprocess.Popen(command, pass_fds=(theirs.fileno(),), env=env, cwd=cwd,
                                            stdin=subprocess.DEVNULL,
                                            start_new_session=True)  # Ctrl-C at the terminal does not reach it
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.socket, self.lock, self.exits, self.buffer, self.closed = ours, threading.Lock(), {}, b"", False
        with self.lock:
            try:
                self._read_until(lambda message: message.get("ready"), ANSWER_TIMEOUT_S)
            except ZygoteGone:
                self.close()
                raise

    def fork(self, argv: list[str], env: dict[str, str], cwd: str, streams: list[int]) -> int | None:
        """A kernel running `argv` with `env` in `cwd`, `streams` as its stdin, stdout and stderr: its pid, or None
        when this zygote forks no more (stale, retired) or could not fork."""
        request = json.dumps({"argv": argv, "env": env, "cwd": cwd}).encode() + b"\n"
        with self.lock:
            self._send(request, streams)
            reply = self._read_until(lambda message: message.keys() & {"pid", "stale", "error"}, ANSWER_TIMEOUT_S)
            if "pid" in reply:
                self.exits.pop(reply["pid"], None)  # an earlier kernel's, whose pid this one reuses
        return reply.get("pid")

    def retire(self) -> None:
        """Fork no more; the zygote ends with its last kernel."""
        with self.lock:
            try:
                self._send(b'{"retire": true}\n', [])
            except ZygoteGone:
                pass

    def exit_code(self, pid: int) -> int | None:
        """The exit status of kernel `pid` as subprocess gives it (reported once), None while it runs or while
        another thread is busy with the zygote (asked again soon: never waits)."""
        if not self.lock.acquire(blocking=False):
            return self.exits.pop(pid, None)
        try:
            self._read_until(lambda message: False, timeout=0)
        except ZygoteGone:  # its kernels died with it (SIGKILL), unreported
            return self.exits.pop(pid, -signal.SIGKILL)
        finally:
            self.lock.release()
        return self.exits.pop(pid, None)

    def close(self) -> None:
        """Stop the zygote (its kernels stop with it)."""
        self.closed = True
        self.socket.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _send(self, data: bytes, streams: list[int]) -> None:
        try:
            self.socket.settimeout(ANSWER_TIMEOUT_S)  # blocking again after the reads that wait for nothing
            sent = socket.send_fds(self.socket, [data], streams)
            if sent < len(data):
                self.socket.sendall(data[sent:])
        except OSError as error:
            raise ZygoteGone(str(error)) from None

    def _read_until(self, wanted, timeout: float) -> dict:
        """Read messages, keeping the kernels' exits, until one is `wanted` (returned) or, with `timeout` 0, none is
        waiting ({}); a zygote that has not sent the wanted message within `timeout` s is closed."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.buffer:
                line, _, self.buffer = self.buffer.partition(b"\n")
                message = json.loads(line)
                if "exit" in message:
                    self.exits[message["exit"]] = message["code"]
                elif wanted(message):
                    return message
            if self.closed:
                raise ZygoteGone("closed")
            left = deadline - time.monotonic()
            if timeout and left < 0:
                self.close()
                raise ZygoteGone(f"no answer within {timeout:g} s")
            try:
                self.socket.settimeout(left if timeout else 0)
                data = self.socket.recv(1 << 16)
            except (BlockingIOError, TimeoutError):
                if not timeout:
                    return {}
                continue
            except OSError as error:
                raise ZygoteGone(str(error)) from None
            if not data:
                self.closed = True
                raise ZygoteGone(f"the zygote ended ({self.process.poll()})")
            self.buffer += data


class ForkedKernel:
    """What jupyter_client asks of a kernel's Popen, for a kernel forked by a zygote (not this process's child)."""

    def __init__(self, zygote: Zygote, pid: int):
        self.zygote, self.pid, self.stdin, self.stdout, self.stderr = zygote, pid, None, None, None
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.zygote.exit_code(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(0.02)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:  # it ended and its end is not reported yet, as Popen tolerates
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


_zygotes: OrderedDict[tuple, Zygote] = OrderedDict()  # by `zygote_key`, the one used last at the end
_retired: list[Zygote] = []  # ending with their last kernels
_failed: set[tuple] = set()  # environments whose zygote could not start: their kernels start the usual way
_zygotes_lock = threading.Lock()  # held while a zygote starts: kernels of other environments wait for it


def zygote_pids() -> set[int]:
    """This process's zygotes still running (a notebook's peak memory counts their files' pages once, in
    artlab.tools.notebooks.PeakMemory)."""
    with _zygotes_lock:
        zygotes = [*_zygotes.values(), *_retired]
    return {zygote.process.pid for zygote in zygotes if zygote.process.poll() is None}


def forkable(cmd: list[str], options: dict) -> bool:
    """Whether `cmd` is this interpreter's ipykernel, on Linux (fork after torch's import is safe there), launched
    with options a fork honours, and ARTLAB_WARM_KERNELS is not 0 (the way out, should a warm kernel misbehave)."""
    return (sys.platform == "linux" and os.environ.get("ARTLAB_WARM_KERNELS", "1") != "0"
            and cmd[:3] == [sys.executable, "-m", "ipykernel_launcher"]
            and set(options) <= LAUNCH_OPTIONS and not options.get("independent"))


def stream_fds(stdin: Any, stdout: Any, stderr: Any) -> tuple[list[int], list[int]] | None:
    """The kernel's stdin, stdout and stderr descriptors for Popen-style arguments, and those to close once sent;
    None for a kind not handled here (a pipe to read the kernel's output from: it then starts the usual way).
    stdin is by default a pipe already closed at this end (its reads end at once), as jupyter_client leaves it."""
    opened: list[int] = []

    def descriptor(stream: Any, inherited: int) -> int:
        if stream is None:
            return inherited
        if stream == subprocess.DEVNULL:
            opened.append(os.open(os.devnull, os.O_RDWR))
            return opened[-1]
        if isinstance(stream, int) and stream >= 0:
            return stream
        if hasattr(stream, "fileno"):
            return stream.fileno()
        raise ValueError(stream)

    try:
        if stdin is None or stdin == subprocess.PIPE:
            read_end, write_end = os.pipe()
            os.close(write_end)
            opened.append(read_end)
            fds = [read_end]
        else:
            fds = [descriptor(stdin, 0)]
        fds.append(descriptor(stdout, 1))
        fds.append(fds[1] if stderr == subprocess.STDOUT else descriptor(stderr, 2))
    except ValueError:
        for fd in opened:
            os.close(fd)
        return None
    return fds, opened


def zygote_key(env: dict[str, str], cwd: str) -> tuple:
    """What picks a kernel's zygote: its environment but the variables it holds for itself (OWN_VARIABLES), and its
    working folder only where PYTHONPATH names folders relative to it (the interpreter resolves them as it starts),
    else None. What else of the folder a module records as it is imported (multiprocessing's) each kernel sets for
    its own."""
    relative = env.get("PYTHONPATH") and not all(map(os.path.isabs, env["PYTHONPATH"].split(os.pathsep)))
    return (os.path.realpath(cwd) if relative else None,
            tuple(sorted((name, value) for name, value in env.items() if name not in OWN_VARIABLES)))


def zygote_for(key: tuple) -> Zygote | None:
    """The running zygote of `key` (`zygote_key`), started in its folder (ZYGOTE_FOLDER where none picks it) if
    there is none (the oldest beyond KEEP_ZYGOTES retired); None where one could not start before."""
    with _zygotes_lock:
        _retired[:] = [zygote for zygote in _retired if zygote.process.poll() is None]
        zygote = _zygotes.get(key)
        if zygote is not None and zygote.process.poll() is None and not zygote.closed:
            _zygotes.move_to_end(key)
            return zygote
        _zygotes.pop(key, None)
        if key in _failed:
            return None
        try:
            zygote = _zygotes[key] = Zygote(dict(key[1]), key[0] or ZYGOTE_FOLDER)
        except (OSError, ZygoteGone) as error:
            _failed.add(key)
            log.debug("no warm kernels for this environment: %s", error)
            return None
        while len(_zygotes) > KEEP_ZYGOTES:
            _, oldest = _zygotes.popitem(last=False)
            oldest.retire()
            _retired.append(oldest)
        return zygote


def fork_kernel(cmd: list[str], env: dict[str, str], cwd: str, stdin: Any = None, stdout: Any = None,
                stderr: Any = None) -> ForkedKernel | None:
    """Kernel `cmd` forked from the zygote of `env` (started if there is none, made again if stale); None when it
    cannot be (the caller starts it the usual way)."""
    streams = stream_fds(stdin, stdout, stderr)
    if streams is None:
        return None
    fds, opened = streams
    key = zygote_key(env, cwd)
    try:
        for _ in range(2):  # a stale or ended zygote is replaced once
            zygote = zygote_for(key)
            if zygote is None:
                return None
            try:
                pid = zygote.fork(cmd, env, cwd, fds)
            except ZygoteGone:
                pid = None
            if pid is not None:
                return ForkedKernel(zygote, pid)
            with _zygotes_lock:  # stale, retired, or failed to fork: it ends with its last kernel
                if _zygotes.get(key) is zygote:
                    del _zygotes[key]
                    _retired.append(zygote)
        return None
    finally:
        for fd in opened:
            os.close(fd)


def use_warm_kernels(warm: bool = True) -> bool:
    """Have this process's kernel managers start kernels warm, or as jupyter_client does (`warm` False), where a
    kernelspec names no provisioner of its own; whether they now start warm (not when artlab is installed without
    its provisioner's entry point, which `make install` registers)."""
    from jupyter_client.provisioning import KernelProvisionerFactory

    factory = KernelProvisionerFactory.instance()
    warm = warm and NAME in factory.provisioners
    factory.default_provisioner_name = NAME if warm else "local-provisioner"
    return warm


@contextmanager
def kernels_warm(warm: bool) -> Iterator[bool]:
    """`use_warm_kernels(warm)` inside the block, the choice made before after it."""
    from jupyter_client.provisioning import KernelProvisionerFactory

    factory = KernelProvisionerFactory.instance()
    before = factory.default_provisioner_name
    try:
        yield use_warm_kernels(warm)
    finally:
        factory.default_provisioner_name = before


class WarmKernelProvisioner(LocalProvisioner):
    """jupyter_client's local provisioner, its kernels forked from a zygote where they can be (see the module)."""

    async def launch_kernel(self, cmd: list[str], **kwargs: Any):
        if not forkable(cmd, kwargs):
            return await super().launch_kernel(cmd, **kwargs)
        env = dict(kwargs.get("env") or os.environ)
        env["JPY_PARENT_PID"] = str(os.getpid())  # as jupyter_client's launcher sets it
        cwd = str(kwargs.get("cwd") or os.getcwd())
        if not os.path.isdir(cwd):  # the usual start says so (FileNotFoundError)
            return await super().launch_kernel(cmd, **kwargs)
        kernel = await asyncio.to_thread(fork_kernel, cmd, env, cwd, kwargs.get("stdin"), kwargs.get("stdout"),
                                         kwargs.get("stderr"))
        if kernel is None:
            return await super().launch_kernel(cmd, **kwargs)
        self.process, self.pid, self.pgid, self.cwd = kernel, kernel.pid, kernel.pid, cwd  # its own process group
        return self.connection_info
