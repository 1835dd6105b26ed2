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

__all__ = ["Cancelled", "progress", "progress_off", "tqdm"]


def progress_off() -> bool:
    """Whether progress bars are off: TQDM_DISABLE or ARTLAB_STATIC set to anything but "" or "0"."""
    return any(os.environ.get(name, "") not in ("", "0") for name in ("TQDM_DISABLE", "ARTLAB_STATIC"))


def progress(iterable: Iterable | None = None, **kwargs: Any) -> tqdm:
    """`tqdm(iterable, **kwargs)`, disabled when `progress_off()`, else as the caller asks (disable=None: on a
    terminal only, as tqdm does)."""
    if progress_off():
        kwargs["disable"] = True
    return tqdm(iterable, **kwargs)


class Cancelled(Exception):
    """Long work abandoned on request, between two of its steps (a render ahead of the user's next click)."""
