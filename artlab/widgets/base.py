"""What every explorer shares: state you can drive from code, a view of figures, and a headless fallback.

An explorer keeps its state in plain attributes and shows `view()` (a list of plotly figures and
tables). In JupyterLab it displays ipywidgets controls above that view; outside a Jupyter kernel,
or with ARTLAB_STATIC=1 (a kernel cannot tell whether a browser is attached, so headless runs with
papermill or nbconvert set it), it displays the current view as static output, so a headless run
never waits on widget messages.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable, Hashable
from typing import TypeVar

import pandas as pd
import plotly.graph_objects as go

from artlab.plots import readable_title
from artlab.widgets.offline import Part, display_offline, interactive_pages
from artlab.widgets.prefetch import Guess, Prefetcher

T = TypeVar("T")

#: A view not drawn within this many seconds says that it is computing (its progress bars follow).
NOTICE_AFTER_S = 0.15


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
        self._notice = None
        self.prefetcher = Prefetcher()

    def cached(self, kind: str, key: Hashable, compute: Callable[[], T]) -> T:
        """What `compute()` gives, computed once per (`kind`, `key`) and counted in `computed[kind]`; later
        calls return the kept value (a figure, a table, a render: whatever the state shows). Work computing ahead
        in the background finishes if it is this value, else stops, before `compute` runs."""
        kept = self._cache.setdefault(kind, {})
        if key not in kept:
            self.prefetcher.settle({(kind, key)})
            self.computed[kind] += 1
            kept[key] = compute()
        return kept[key]  # type: ignore[return-value]

    def cached_each(self, kind: str, computes: dict[Hashable, Callable[[], T]],
                    stop: threading.Event | None = None) -> dict[Hashable, T]:
        """`cached(kind, key, compute)` for each key of `computes` (a view's part by each network), the ones not kept
        yet computed side by side (`artlab.models.side_by_side`: on two cores, two networks in about two thirds of
        the time of one after the other; `stop`, which the computes watch, is set if the user interrupts)."""
        missing = [key for key in computes if not self.is_cached(kind, key)]
        done: dict[Hashable, T] = {}
        if len(missing) > 1:
            from artlab.models import side_by_side  # torch: only explorers of networks get here

            self.prefetcher.settle({(kind, key) for key in missing})
            done = dict(zip(missing, side_by_side([computes[key] for key in missing], stop)))
        return {key: self.cached(kind, key, (lambda key=key: done[key]) if key in done else compute)
                for key, compute in computes.items()}

    def is_cached(self, kind: str, key: Hashable) -> bool:
        """Whether (`kind`, `key`) is already kept in memory."""
        return key in self._cache.get(kind, {})

    def guesses(self) -> list[Guess]:
        """The views the user will likely ask for next, most likely first, keyed as `cached` keys them (none by
        default); `prefetch` computes them into the disk cache while the user looks at the current view."""
        return []

    def prefetch(self) -> None:
        """Start computing `guesses()` in the background (the live widget does so after each view)."""
        self.prefetcher.start(self.guesses())

    def view(self) -> list[object]:
        """The figures and tables for the current state."""
        raise NotImplementedError

    def controls(self) -> list[object]:
        """The ipywidgets controls, wired to update the state and call `refresh`."""
        raise NotImplementedError

    def offline_parts(self) -> list[Part]:
        """The controls and states a page without a kernel offers (`artlab.widgets.offline`); none by default:
        such a page shows the current view."""
        return []

    def at(self, draw: Callable[[], list[object]], **state: object) -> list[object]:
        """What `draw()` shows with the state attributes set to `state` (restored after): an offline state."""
        kept = {name: getattr(self, name) for name in state}
        try:
            for name, value in state.items():
                setattr(self, name, value)
            return draw()
        finally:
            for name, value in kept.items():
                setattr(self, name, value)

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
        """Redraw the view in the widget's output area (a no-op before the widget exists).

        The view is computed inside the output, so its progress bars show under the controls while it
        computes, after a line beside the controls saying it computes when it takes longer than NOTICE_AFTER_S
        (`Notice`); once done it
        replaces everything there. Then the likely next views are computed ahead (`prefetch`). A finished bar
        that tqdm closes (leave=False) is gone from the front end, but an output keeps what was displayed in
        it: left there, its entry finds no widget ("Loading widget...", then "Error displaying widget: model
        not found").
        """
        if self._output is None:
            return
        with self._output:
            self._output.clear_output(wait=True)  # the old view stays until the next output: a bar or the new view
            notice = Notice(self._notice, f"Computing the {self.title}'s new view...")
            try:
                items = self.view()
            finally:
                notice.cancel()
                self._output.clear_output(wait=True)  # the bars (and their closed widgets) go with the next output
            display_all(items)
        self.prefetch()

    def widget(self):
        """The controls above the view, as one ipywidgets box (built once)."""
        if self._widget is None:
            import ipywidgets as widgets

            controls = self.controls()
            for control in controls:
                read_in_full(control)
            self._output = widgets.Output()
            self._notice = widgets.Label("")  # "Computing..." after the controls while a slow view computes
            row = widgets.HBox([*controls, self._notice], layout=widgets.Layout(flex_flow="row wrap"))  # a narrow
            # page wraps the row
            self._widget = widgets.VBox([row, self._output])
            self.refresh()
        return self._widget

    def show(self) -> None:
        """Display the live widget; with no front end attached, the static view, or on a page made with
        --interactive (ARTLAB_INTERACTIVE=1) the offline block of `offline_parts()`."""
        from IPython.display import display

        if live_front_end():
            display(self.widget())
        elif interactive_pages() and (parts := self.offline_parts()):
            display_offline(self.title, parts)
        else:
            display_all(self.view())

    def _ipython_display_(self) -> None:
        self.show()


class Notice:
    """A line beside the controls saying that work goes on, shown only if not cancelled within `after` seconds: a
    view drawn at once does not flicker, a slow one answers the click at once; the view and its progress bars
    below are left as they are."""

    def __init__(self, line, text: str, after: float = NOTICE_AFTER_S):
        self._line, self._text, self._lock, self._cancelled = line, text, threading.Lock(), False
        self._timer = threading.Timer(after, self._show)
        self._timer.daemon = True
        self._timer.start()

    def _show(self) -> None:
        with self._lock:
            if not self._cancelled:  # a widget's value may be set from another thread (ipywidgets' advice)
                self._line.value = self._text

    def cancel(self) -> None:
        """Never show the line, or remove it."""
        with self._lock:
            self._cancelled = True
            self._line.value = ""
        self._timer.cancel()


def display_all(items: list[object]) -> None:
    """Display figures and tables, table cells whole (a file or run folder is no use cut to 50 characters)."""
    from IPython.display import display

    with pd.option_context("display.max_colwidth", None):
        for item in items:
            display(readable_title(item) if isinstance(item, go.Figure) else item)


def read_in_full(control) -> None:
    """Lay a control out so that its text reads in full: its description, which ipywidgets cuts at about 80 px
    ("min. imag..."); a dropdown's choice and a button's text, cut at the box's fixed width ("pointillism_a_004 -
    pointillism; pointill", "train and comp..."); and toggle buttons beside their description, not under it."""
    import ipywidgets as widgets

    style = getattr(control, "style", None)
    if getattr(control, "description", "") and style is not None and hasattr(style, "description_width"):
        style.description_width = "initial"
    if isinstance(control, (widgets.Dropdown, widgets.Button)):
        control.layout.width = "max-content"
    if isinstance(control, widgets.ToggleButtons):
        control.layout.display, control.layout.align_items = "flex", "center"


def one_of(value: T, choices: list[T], what: str) -> T:
    """`value` when it is one of `choices`, else a KeyError naming them: "no layer 'x'; choose from [...]"."""
    if value not in choices:
        raise KeyError(f"no {what} {value!r}; choose from {list(choices)}")
    return value


def expect(value: object, kinds: type | tuple[type, ...], explorer: str, wanted: str) -> None:
    """A TypeError in one line when an explorer is given the wrong kind of thing, saying what it takes
    (`ChannelExplorer("runs/x")`: it takes an Analysis, which `analyze` returns, not a run folder)."""
    if not isinstance(value, kinds):
        raise TypeError(f"{explorer} takes {wanted}, not a {type(value).__name__} ({value!r:.80})")


def small_table(rows: dict[str, object]) -> pd.DataFrame:
    """A one-column table of named values, for an explorer's side facts."""
    return pd.DataFrame({"value": list(rows.values())}, index=list(rows))
