"""Explorers on a page without a kernel: their controls as plain HTML selects over states computed ahead.

`artlab notebooks run --interactive` sets ARTLAB_INTERACTIVE=1: each explorer then displays, instead of its
first view frozen, an `offline_block` of its `offline_parts()`. A part is a few controls (name -> options)
and a function drawing the view for one choice of each; every choice listed in `states` is drawn now (the
figures as plotly JSON, tables as HTML) and the page's script shows the one selected, drawing its figures
with the plotly.js the page carries. A choice drawn ahead only beside other choices of the other controls
moves them to the drawn state that keeps most of them, and says so; a choice not drawn ahead at all says
that. Nothing is fetched from the network.
"""

from __future__ import annotations

import html
import itertools
import json
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go

#: The output metadata that marks an offline explorer (the page builder puts plotly.js before the first one).
MARK = "artlab_offline_explorer"
#: Separates the values of a part's controls in a state's key.
SEPARATOR = "\u001f"
NOT_COMPUTED = "This choice was not computed ahead for this page: run the notebook in JupyterLab to see it."


def interactive_pages() -> bool:
    """Whether explorers should display their offline block (ARTLAB_INTERACTIVE=1, set by --interactive)."""
    return os.environ.get("ARTLAB_INTERACTIVE", "") not in ("", "0")


@dataclass
class Part:
    """Controls (label -> options as (text, value) or values) and the view of one choice of each; `states`:
    the choices drawn ahead (default: every combination)."""

    controls: dict[str, Sequence]
    draw: Callable[..., list[object]]
    states: list[tuple] | None = None

    def first(self) -> tuple:
        """The state the page opens on: the first drawn ahead."""
        if self.states:
            return tuple(self.states[0])
        return tuple(options[0][1] for options in self.options().values())

    def options(self) -> dict[str, list[tuple[str, object]]]:
        return {label: [o if isinstance(o, tuple) else (str(o), o) for o in options]
                for label, options in self.controls.items()}

    def drawn(self) -> dict[str, list[dict]]:
        """Every state's items as JSON-able dicts, keyed by the joined values of its controls."""
        values = [[value for _, value in options] for options in self.options().values()]
        states = self.states if self.states is not None else list(itertools.product(*values))
        return {SEPARATOR.join(map(str, state)): [_item(x) for x in self.draw(*state)] for state in states}


def pooled(states: dict[str, list[dict]], pool: list, index: dict[str, int], least: int = 1000) -> dict:
    """`states` with every large value (an image's pixels, a map, a data URI: at least `least` characters of JSON)
    replaced by {"$pool": i} into `pool`: the same artwork in many states is stored once."""
    def walk(value):
        if isinstance(value, dict) and "$pool" not in value:
            if "bdata" in value:
                text = json.dumps(value, sort_keys=True)
                return _interned(value, text) if len(text) >= least else value
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str) and len(value) >= least:
            return _interned(value, value)
        return value

    def _interned(value, text: str) -> dict:
        if text not in index:
            index[text] = len(pool)
            pool.append(value)
        return {"$pool": index[text]}

    return walk(states)


def _quantised(figure: go.Figure) -> go.Figure:
    """Heatmaps with a fixed colour range stored as bytes (0-254 over that range): a quarter of the size, the same
    colours (their hover values are left out). A copy when there are some (the figure shown is left as it was),
    the figure itself when there are none (copying a gallery of 10 images costs 12 ms, 4 times its JSON)."""
    heatmaps = [i for i, trace in enumerate(figure.data) if _fixed_range_heatmap(trace)]
    if not heatmaps:
        return figure
    figure = go.Figure(figure)
    for i in heatmaps:
        trace = figure.data[i]
        scaled = np.clip((np.asarray(trace.z, dtype=np.float64) - trace.zmin) / (trace.zmax - trace.zmin), 0, 1) * 254
        ticks = np.linspace(trace.zmin, trace.zmax, 5)  # the colour bar keeps the real range
        trace.update(z=np.rint(scaled).astype(np.uint8), zmin=0, zmax=254, zmid=None, hoverinfo="skip",
                     colorbar={"tickvals": np.linspace(0, 254, 5).tolist(), "ticktext": [f"{t:g}" for t in ticks]})
    return figure


def _fixed_range_heatmap(trace: object) -> bool:
    """A heatmap of finite 2-D values with a fixed colour range, which `_quantised` stores as bytes."""
    if not (isinstance(trace, go.Heatmap) and trace.zmin is not None and trace.zmax is not None and trace.z is not None
            and trace.zmax > trace.zmin):
        return False
    z = np.asarray(trace.z, dtype=np.float64)
    return z.ndim == 2 and bool(np.isfinite(z).all())


def _item(item: object) -> dict:
    if isinstance(item, go.Figure):
        return {"figure": json.loads(_quantised(item).to_json())}
    if isinstance(item, pd.DataFrame):
        with pd.option_context("display.max_colwidth", None):
            return {"html": item.to_html()}
    return {"html": f"<pre>{html.escape(str(item))}</pre>"}


SCRIPT = """
(function () {
  const root = document.getElementById("%(id)s");
  const pool = JSON.parse(document.getElementById("%(pool)s").textContent);
  const states = JSON.parse(root.querySelector("script[type='application/json']").textContent);
  const whole = v => Array.isArray(v) ? v.map(whole) : v && typeof v === "object" ?
    ("$pool" in v ? pool[v["$pool"]] : Object.fromEntries(Object.entries(v).map(([k, x]) => [k, whole(x)]))) : v;
  const view = root.querySelector(".artlab-view");
  const selects = Array.from(root.querySelectorAll("select"));
  const drawn = Object.keys(states).map(key => key.split("\\u001f"));
  const note = text => { const p = document.createElement("p"); p.className = "artlab-note"; p.textContent = text;
                         view.appendChild(p); };
  function chosen(event) {
    // a choice drawn ahead only beside other choices of the other controls: show the drawn state with it that
    // keeps most of the others, and say so
    const i = selects.indexOf(event.target);
    const kept = values => values.filter((value, j) => value === selects[j].value).length;
    const state = states[selects.map(s => s.value).join("\\u001f")] ? null :
      drawn.filter(values => values[i] === event.target.value).reduce((best, values) =>
        best === null || kept(values) > kept(best) ? values : best, null);
    const moved = state ? selects.filter((s, j) => s.value !== state[j]) : [];
    if (state) selects.forEach((s, j) => { s.value = state[j]; });
    show(moved.map(s => s.parentElement.firstChild.textContent.trim() + " " + s.options[s.selectedIndex].text));
  }
  function show(moved) {
    const items = states[selects.map(s => s.value).join("\\u001f")];
    view.replaceChildren();
    if (!items) { note(%(missing)s); return; }
    if (moved && moved.length) note("Shown with " + moved.join(", ") + ": your choice was computed ahead with " +
                                    (moved.length > 1 ? "them." : "it."));
    for (const item of items) {
      const div = document.createElement("div"); view.appendChild(div);
      if (item.figure) { const f = whole(item.figure); Plotly.newPlot(div, f.data, f.layout, {responsive: true}); }
      else { div.innerHTML = whole(item.html); }
    }
  }
  selects.forEach(s => s.addEventListener("change", chosen));
  show([]);
})();
"""


def offline_block(title: str, parts: list[Part]) -> str:
    """The HTML of an explorer whose controls work without a kernel: a select per control, the views of the
    states drawn ahead, and a script that shows the chosen one (plotly.js must be on the page)."""
    blocks, pool, index = [], [], {}
    pool_id = f"artlab-pool-{uuid.uuid4().hex[:12]}"
    for part in parts:
        block_id = f"artlab-{uuid.uuid4().hex[:12]}"
        opening = part.first()
        selects = "".join(
            f"<label style='margin-right:1em'>{html.escape(label)} <select>"
            + "".join(f"<option value='{html.escape(str(value), quote=True)}'"
                      f"{' selected' if str(value) == str(opening[c]) else ''}>{html.escape(text)}</option>"
                      for text, value in options) + "</select></label>"
            for c, (label, options) in enumerate(part.options().items()))
        states = _script_json(pooled(part.drawn(), pool, index))
        script = {"id": block_id, "pool": pool_id, "missing": json.dumps(NOT_COMPUTED)}
        blocks.append(f"<div id='{block_id}' class='artlab-offline'><div>{selects}</div>"
                      f"<script type='application/json'>{states}</script><div class='artlab-view'></div>"
                      f"<script>{SCRIPT % script}</script></div>")
    return f"<div><h4>{html.escape(title)} (works offline: the choices below were computed ahead)</h4>" \
           f"<script type='application/json' id='{pool_id}'>{_script_json(pool)}</script>{''.join(blocks)}</div>"


def _script_json(value: object) -> str:
    """JSON to sit inside a <script> element (a table's </td> must not end it)."""
    return json.dumps(value).replace("<", "\\u003c")


def display_offline(title: str, parts: list[Part]) -> None:
    """Display the offline block as HTML output marked for the page builder (see `MARK`)."""
    from IPython.display import display

    display({"text/html": offline_block(title, parts), "text/plain": f"{title} (offline page)"}, raw=True,
            metadata={MARK: True})
