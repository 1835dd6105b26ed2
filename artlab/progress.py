"""Progress bars: tqdm's (a widget in Jupyter, text in a terminal), off where nobody can watch them.

TQDM_DISABLE=1 turns them off everywhere (tqdm's notebook bars do not read it themselves), and so does
ARTLAB_STATIC=1: a headless notebook run (papermill, nbval) would store one widget per bar, which no
exported page can show and whose number depends on which runs were already cached.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

__all__ = ["Cancelled", "REFRESH_S", "progress", "progress_off", "tqdm"]

#: Seconds between two redraws of a bar (tqdm's default is 0.1). In JupyterLab each redraw is a widget message that
#: the kernel sends, the server relays and the browser lays out: at 10 a second, the nine quick notebooks' bars
#: cost about 11 s of CPU in the browser test (of 190 s). Two a second still reads as moving.
REFRESH_S = 0.5


def progress_off() -> bool:
    """Whether progress bars are off: TQDM_DISABLE or ARTLAB_STATIC set to anything but "" or "0"."""
    return any(os.environ.get(name, "") not in ("", "0") for name in ("TQDM_DISABLE", "ARTLAB_STATIC"))


def progress(iterable: Iterable | None = None, **kwargs: Any) -> tqdm:
    """`tqdm(iterable, **kwargs)`, redrawn every REFRESH_S at most, disabled when `progress_off()`, else as the
    caller asks (disable=None: on a terminal only, as tqdm does)."""
    if progress_off():
        kwargs["disable"] = True
    kwargs.setdefault("mininterval", REFRESH_S)
    return tqdm(iterable, **kwargs)


class Cancelled(Exception):
    """Long work abandoned on request, between two of its steps (a render ahead of the user's next click)."""
