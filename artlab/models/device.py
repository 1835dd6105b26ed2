"""Where networks run: the best device here, or the one a user named (no torchvision: every command asks), and
how several networks share this process's torch threads."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import TypeVar

import torch

T = TypeVar("T")


def default_device() -> torch.device:
    """CUDA when present, else CPU (Apple's MPS when available)."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(name: str | torch.device) -> torch.device:
    """'auto' -> the best device here; anything else as torch reads it (a clear ValueError otherwise)."""
    if str(name) == "auto":
        return default_device()
    try:
        return torch.device(name)
    except RuntimeError:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:1', 'mps', ..., not {name!r}") from None


def side_by_side(calls: Sequence[Callable[[], T]], stop: threading.Event | None = None) -> list[T]:
    """The results of `calls`, run at once in threads that split this thread's torch threads between them.

    Rendering a channel or attributing one image keeps about one core busy: on two cores, two networks side by
    side (one torch thread each) take about two thirds of the time of one after the other (two threads each, the second
    mostly waiting; benchmarks/side_by_side.py). With one torch thread (a test worker, OMP_NUM_THREADS=1) or one
    call, the calls run here, in order. Each runs in a copy of this thread's context, as `asyncio.to_thread` does,
    so what it shows (a progress bar) goes where this thread's would. `stop` is the event the caller built its calls
    to watch (a render's): it is set when one call fails or the wait is interrupted (Ctrl-C), and the others are
    waited for; the first error in the order of `calls` is raised. While the calls run, threads started meanwhile
    get one torch thread (torch keeps one default for all threads); this thread's count is the default after.
    """
    budget = torch.get_num_threads()
    if len(calls) < 2 or budget < 2:
        return [call() for call in calls]
    workers = min(len(calls), budget)

    def share(call: Callable[[], T]) -> T:
        torch.set_num_threads(budget // workers)  # this thread's, and the default of threads started meanwhile
        return call()

    futures: list[Future[T]] = []
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="artlab-side-by-side") as pool:  # waits for every call
            try:
                futures = [pool.submit(contextvars.copy_context().run, share, call) for call in calls]
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                if stop is not None and any(future.exception() is not None for future in done):
                    stop.set()
            except BaseException:
                if stop is not None:
                    stop.set()
                raise
    finally:
        torch.set_num_threads(budget)  # the default of threads started later, as it was (and this thread's own)
    return [future.result() for future in futures]
