"""What every explorer shares: state you can drive from code, a view of figures, and a headless fallback.

An explorer keeps its state in plain attributes and shows `view()` (a list of plotly figures and
tables). In JupyterLab it displays ipywidgets controls above that view; outside a Jupyter kernel,
or with ARTLAB_STATIC=1 (a kernel cannot tell whether a browser is attached, so headless runs with
papermill or nbconvert set it), it displays the current view as static output, so a headless run
never waits on widget messages.
"""

from __future__ import annotations

import os
from collections import Counter

import pandas as pd


def live_front_end() -> bool:
    """Whether widgets can be shown: inside a Jupyter kernel, and not asked to be static (ARTLAB_STATIC=1)."""
    if os.environ.get("ARTLAB_STATIC", "") not in ("", "0"):
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class Explorer:
    """Base of the explorers: `computed` counts the expensive computations each one did (tests read it)."""

    title = "explorer"

    def __init__(self) -> None:
        self.computed: Counter[str] = Counter()
        self._widget = None
        self._output = None

    def view(self) -> list[object]:
        """The figures and tables for the current state."""
        raise NotImplementedError

    def controls(self) -> list[object]:
        """The ipywidgets controls, wired to update the state and call `refresh`."""
        raise NotImplementedError

    def refresh(self) -> None:
        """Redraw the view in the widget's output area (a no-op before the widget exists)."""
        if self._output is None:
            return
        with self._output:
            self._output.clear_output(wait=True)
            display_all(self.view())

    def widget(self):
        """The controls above the view, as one ipywidgets box (built once)."""
        if self._widget is None:
            import ipywidgets as widgets

            self._output = widgets.Output()
            self._widget = widgets.VBox([widgets.HBox(self.controls()), self._output])
            self.refresh()
        return self._widget

    def show(self) -> None:
        """Display the live widget, or the static view when no front end is attached."""
        from IPython.display import display

        if live_front_end():
            display(self.widget())
        else:
            display_all(self.view())

    def _ipython_display_(self) -> None:
        self.show()


def display_all(items: list[object]) -> None:
    """Display figures and tables, table cells whole (a file or run folder is no use cut to 50 characters)."""
    from IPython.display import display

    with pd.option_context("display.max_colwidth", None):
        for item in items:
            display(item)


def small_table(rows: dict[str, object]) -> pd.DataFrame:
    """A one-column table of named values, for an explorer's side facts."""
    return pd.DataFrame({"value": list(rows.values())}, index=list(rows))
