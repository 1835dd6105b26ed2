"""Views computed ahead: while the user looks at one view, a background thread computes the likely next ones.

An explorer offers `Guess`es (the cache keys of the views it computes, and a function that computes them into the
disk cache); the `Prefetcher` works through them one at a time in a daemon thread. The user always comes first:
before the explorer computes anything itself, it `settle`s the prefetcher, which waits for a guess the user now asks
for, and otherwise stops the guess in progress between two of its steps. So the background never computes at the
same time as the foreground, and a network is never used by two threads at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Hashable
from dataclasses import dataclass

from artlab.progress import Cancelled


@dataclass(frozen=True)
class Guess:
    """Views the user may ask for next: their `keys` as the explorer caches them (a channel's render by each
    network), `compute(stop)` fills the disk cache and returns early (raising `Cancelled`) once `stop` is set."""

    keys: tuple[Hashable, ...]
    compute: Callable[[threading.Event], object]


class Prefetcher:
    """One background thread computing guesses in order; `settle` gives the CPU back to the user."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()  # start no further guess
        self._stop = threading.Event()  # abandon the guess in progress
        self._current: tuple[Hashable, ...] = ()  # the keys of the guess in progress
        self.done: list[Hashable] = []  # keys computed ahead, in order (benchmarks and tests read it)

    def start(self, guesses: list[Guess]) -> None:
        """Compute `guesses` in the background, after stopping what was computing before."""
        self.settle()
        if not guesses:
            return
        self._halt, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._work, args=(guesses, self._halt, self._stop), daemon=True,
                                        name="artlab-prefetch")
        self._thread.start()

    def settle(self, wanted: Collection[Hashable] = ()) -> None:
        """Return once the background is idle: the guess in progress finishes if one of its keys is among `wanted`
        (what the user's view needs), else stops."""
        thread = self._thread
        if thread is None:
            return
        self._halt.set()
        if not set(self._current) & set(wanted):
            self._stop.set()
        thread.join()
        self._thread = None

    @property
    def busy(self) -> bool:
        """Whether a guess is being computed."""
        return self._thread is not None and self._thread.is_alive()

    def wait(self) -> None:
        """Return once every guess is computed (or abandoned after an error): for tests and benchmarks."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _work(self, guesses: list[Guess], halt: threading.Event, stop: threading.Event) -> None:
        for guess in guesses:
            if halt.is_set():
                return
            self._current = guess.keys
            try:
                guess.compute(stop)
            except Cancelled:
                return
            except Exception:  # noqa: BLE001 - a failed guess is not the user's concern: the view computes it again
                return          # in the foreground and reports its error there
            finally:
                self._current = ()
            self.done.extend(guess.keys)
