"""Warm kernels: a notebook's Python kernel forked from a process that has already imported torch and the kernel's
own stack, ready in a fraction of a second where a fresh one spends 2-3 s of CPU importing them.

`WarmKernelProvisioner` is a jupyter_client kernel provisioner (registered as "artlab-warm-kernel"): JupyterLab
under `make lab`, the headless series and the tests' nbval use it. It keeps one `Zygote` per kernel environment
(`artlab/tools/kernel_zygote.py`), started with the first kernel of that environment, and forks later ones from it.
A kernel it cannot fork (another Python, not Linux, a zygote that failed) starts as jupyter_client starts any.
The kernel itself is the same: same environment, working folder, streams, own process group; modules that changed
on disk since the zygote imported them (a pip install) make a new zygote; artlab's own code is never imported ahead.
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
from pathlib import Path
from typing import Any

from jupyter_client.provisioning import LocalProvisioner

NAME = "artlab-warm-kernel"
ZYGOTE_FILE = Path(__file__).with_name("kernel_zygote.py")
#: Variables a kernel's environment holds for it alone (its notebook, its test), read as it runs, not as a module is
#: imported: they do not pick the zygote. (ipykernel reads JPY_PARENT_PID on import: it is the manager's, the same
#: for all its kernels.)
OWN_VARIABLES = frozenset({"JPY_SESSION_NAME", "PYTEST_CURRENT_TEST"})
#: Seconds a zygote may take to import what it imports ahead before its kernels start the usual way.
READY_TIMEOUT_S = 120
log = logging.getLogger(__name__)


class ZygoteGone(RuntimeError):
    """The zygote ended or could not start: the kernel starts the usual way."""


class Zygote:
    """A process with torch and ipykernel imported, forking kernels that share `env` (see kernel_zygote.py)."""

    def __init__(self, env: dict[str, str], ahead: tuple[str, ...] = ()):
        """`ahead`: the modules it imports ahead, where not its own list (kernel_zygote.AHEAD)."""
        ours, theirs = socket.socketpair()
        command = [sys.executable, str(ZYGOTE_FILE), str(theirs.fileno())] + ([",".join(ahead)] if ahead else [])
        self.process = subprocess.Popen(command, pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL,
                                        start_new_session=True)  # Ctrl-C at the terminal does not reach it
        theirs.close()
        self.socket, self.lock, self.exits, self.buffer = ours, threading.Lock(), {}, b""
        with self.lock:
            self._read_until(lambda message: message.get("ready"), READY_TIMEOUT_S)

    def fork(self, argv: list[str], env: dict[str, str], cwd: str, streams: list[int]) -> int | None:
        """A kernel running `argv` with `env` in `cwd`, `streams` as its stdin, stdout and stderr: its pid, or None
        when a module imported ahead changed on disk since (this zygote is stale)."""
        request = json.dumps({"argv": argv, "env": env, "cwd": cwd}).encode() + b"\n"
        with self.lock:
            try:
                socket.send_fds(self.socket, [request], streams)
            except OSError as error:
                raise ZygoteGone(str(error)) from None
            reply = self._read_until(lambda message: "pid" in message or "stale" in message, READY_TIMEOUT_S)
        return reply.get("pid")

    def exit_code(self, pid: int) -> int | None:
        """The exit status of kernel `pid` as subprocess gives it, None while it runs."""
        with self.lock:
            try:
                self._read_until(lambda message: False, timeout=0)
            except ZygoteGone:  # its kernels died with it (SIGKILL), unreported
                return self.exits.get(pid, -signal.SIGKILL)
        return self.exits.get(pid)

    def close(self) -> None:
        """Stop the zygote (its kernels stop with it)."""
        self.socket.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _read_until(self, wanted, timeout: float) -> dict:
        """Read messages, keeping the kernels' exits, until one is `wanted` (returned) or `timeout` s pass ({})."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.buffer:
                line, _, self.buffer = self.buffer.partition(b"\n")
                message = json.loads(line)
                if "exit" in message:
                    self.exits[message["exit"]] = message["code"]
                elif wanted(message):
                    return message
            left = deadline - time.monotonic()
            if left < 0 and timeout:
                self.close()
                raise ZygoteGone(f"no answer within {timeout:g} s")
            self.socket.settimeout(max(left, 0) if timeout else 0)
            try:
                data = self.socket.recv(1 << 16)
            except (BlockingIOError, TimeoutError):
                if not timeout:
                    return {}
                continue
            except OSError as error:
                raise ZygoteGone(str(error)) from None
            if not data:
                raise ZygoteGone(f"the zygote ended ({self.process.poll()})")
            self.buffer += data


class ForkedKernel:
    """What jupyter_client asks of a kernel's Popen, for a kernel forked by a zygote (not this process's child)."""

    def __init__(self, zygote: Zygote, pid: int, stdin: Any):
        self.zygote, self.pid, self.stdin, self.stdout, self.stderr = zygote, pid, stdin, None, None
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
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


_zygotes: dict[tuple, Zygote] = {}
_failed: set[tuple] = set()  # environments whose zygote could not start: their kernels start the usual way
_zygotes_lock = threading.Lock()


def zygote_pids() -> set[int]:
    """This process's zygotes (a notebook's peak memory counts its kernel, not the zygote it was forked from)."""
    return {zygote.process.pid for zygote in list(_zygotes.values())}


def forkable(cmd: list[str]) -> bool:
    """Whether `cmd` is this interpreter's ipykernel, on Linux (fork after torch's import is safe there)."""
    return sys.platform == "linux" and cmd[:3] == [sys.executable, "-m", "ipykernel_launcher"]


def stream_fds(stdin: Any, stdout: Any, stderr: Any) -> tuple[list[int], Any, list[int]] | None:
    """The kernel's stdin, stdout and stderr descriptors for Popen-style arguments (stdin a pipe by default, as
    jupyter_client asks), the manager's end of that pipe, and the descriptors to close once sent; None for a kind
    not handled here (a pipe to read the kernel's output from: the kernel then starts the usual way)."""
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

    keep = None
    try:
        if stdin is None or stdin == subprocess.PIPE:
            read_end, write_end = os.pipe()
            opened.append(read_end)
            keep, fds = os.fdopen(write_end, "wb"), [read_end]
        else:
            fds = [descriptor(stdin, 0)]
        fds.append(descriptor(stdout, 1))
        fds.append(fds[1] if stderr == subprocess.STDOUT else descriptor(stderr, 2))
    except ValueError:
        for fd in opened:
            os.close(fd)
        if keep is not None:
            keep.close()
        return None
    return fds, keep, opened


def fork_kernel(cmd: list[str], env: dict[str, str], cwd: str, stdin: Any = None, stdout: Any = None,
                stderr: Any = None) -> ForkedKernel | None:
    """Kernel `cmd` forked from the zygote of `env` (started if there is none, made again if stale); None when it
    cannot be (the caller starts it the usual way)."""
    streams = stream_fds(stdin, stdout, stderr)
    if streams is None:
        return None
    fds, keep, opened = streams
    key = tuple(sorted((name, value) for name, value in env.items() if name not in OWN_VARIABLES))
    try:
        for _ in range(2):  # a stale or ended zygote is replaced once
            with _zygotes_lock:
                if key in _failed:
                    break
                zygote = _zygotes.get(key)
                if zygote is None or zygote.process.poll() is not None:
                    try:
                        zygote = _zygotes[key] = Zygote(dict(key))
                    except (OSError, ZygoteGone):
                        _failed.add(key)
                        raise
            try:
                pid = zygote.fork(cmd, env, cwd, fds)
            except ZygoteGone:
                pid = None
            if pid is not None:
                return ForkedKernel(zygote, pid, keep)
            with _zygotes_lock:  # a stale one ends by itself with its last kernel
                if _zygotes.get(key) is zygote:
                    del _zygotes[key]
    except (OSError, ZygoteGone) as error:
        log.debug("no warm kernel (%s): starting one the usual way", error)
    finally:
        for fd in opened:
            os.close(fd)
    if keep is not None:
        keep.close()
    return None


def use_warm_kernels() -> bool:
    """Have this process's kernel managers start kernels warm (those whose kernelspec names no provisioner);
    whether they do (not when artlab is installed without its provisioner's entry point: `make install`)."""
    from jupyter_client.provisioning import KernelProvisionerFactory

    factory = KernelProvisionerFactory.instance()
    if NAME not in factory.provisioners:
        return False
    factory.default_provisioner_name = NAME
    return True


class WarmKernelProvisioner(LocalProvisioner):
    """jupyter_client's local provisioner, its kernels forked from a zygote where they can be (see the module)."""

    async def launch_kernel(self, cmd: list[str], **kwargs: Any):
        if not forkable(cmd):
            return await super().launch_kernel(cmd, **kwargs)
        env = dict(kwargs.get("env") or os.environ)
        if not kwargs.get("independent"):
            env["JPY_PARENT_PID"] = str(os.getpid())  # as jupyter_client's launcher sets it
        cwd = str(kwargs.get("cwd") or os.getcwd())
        kernel = await asyncio.to_thread(fork_kernel, cmd, env, cwd, kwargs.get("stdin"), kwargs.get("stdout"),
                                         kwargs.get("stderr"))
        if kernel is None:
            return await super().launch_kernel(cmd, **kwargs)
        self.process, self.pid, self.pgid, self.cwd = kernel, kernel.pid, kernel.pid, cwd  # its own process group
        return self.connection_info
