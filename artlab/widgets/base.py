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
from collections.abc import Callable, Hashable
from typing import TypeVar

import pandas as pd

T = TypeVar("T")


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
    """Base of the explorers: what they compute is kept by `cached`, and `computed` counts each kind of
    computation done (tests read it)."""

    title = "explorer"

    def __init__(self) -> None:
        self.computed: Counter[str] = Counter()
        self._cache: dict[str, dict[Hashable, object]] = {}
        self._widget = None
        self._output = None

    def cached(self, kind: str, key: Hashable, compute: Callable[[], T]) -> T:
        """What `compute()` gives, computed once per (`kind`, `key`) and counted in `computed[kind]`; later
        calls return the kept value (a figure, a table, a render: whatever the state shows)."""
        kept = self._cache.setdefault(kind, {})
        if key not in kept:
            self.computed[kind] += 1
            kept[key] = compute()
        return kept[key]  # type: ignore[return-value]

    def view(self) -> list[object]:
        """The figures and tables for the current state."""
        raise NotImplementedError

    def controls(self) -> list[object]:
        """The ipywidgets controls, wired to update the state and call `refresh`."""
        raise NotImplementedError

    def linked_dropdowns(self, outer: tuple[str, str, list], inner: tuple[str, str, Callable[[], list]]) -> list:
        """Two dropdowns over state attributes, the inner one's options following the outer one's value.

        Each is (attribute, description, options; the inner's a function of the state). Choosing an outer
        value selects it (`select(attribute=value)`, which may move the inner attribute too) and offers the
        inner options for it; choosing an inner value selects that.
        """
        import ipywidgets as widgets

        (first, first_label, first_options), (second, second_label, second_options) = outer, inner
        upper = widgets.Dropdown(options=first_options, value=getattr(self, first), description=first_label)
        lower = widgets.Dropdown(options=second_options(), value=getattr(self, second), description=second_label)

        def on_outer(change) -> None:
            self.select(**{first: change["new"]})
            lower.options = second_options()
            lower.value = getattr(self, second)

        def on_inner(change) -> None:
            if change["new"] is not None and change["new"] != getattr(self, second):
                self.select(**{second: change["new"]})

        upper.observe(on_outer, names="value")
        lower.observe(on_inner, names="value")
        return [upper, lower]

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


def one_of(value: T, choices: list[T], what: str) -> T:
    """`value` when it is one of `choices`, else a KeyError naming them: "no layer 'x'; choose from [...]"."""
    if value not in choices:
        raise KeyError(f"no {what} {value!r}; choose from {list(choices)}")
    return value


def small_table(rows: dict[str, object]) -> pd.DataFrame:
    """A one-column table of named values, for an explorer's side facts."""
    return pd.DataFrame({"value": list(rows.values())}, index=list(rows))
