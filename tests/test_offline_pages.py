"""Pages whose explorers work without a kernel (`artlab notebooks run --interactive`): the offline block's
states, and the real pages of notebooks 03, 04 and 06 in chromium with every network request blocked (the pages of the
`teacher` fixture, which the workshop pack's round trip shares)."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from artlab.widgets.offline import NOT_COMPUTED, Part, _item, offline_block
from tests.test_browser import CHROMIUM, CHROMIUM_FLAGS, browser_or_skip

#: The goal for a page of the quick series (issue: under 25 MB for the quick series on genres).
MAX_PAGE_MIB = 25


def test_a_part_draws_each_state_ahead_and_keys_it_by_its_choices():
    drawn = []

    def draw(layer, channel):
        drawn.append((layer, channel))
        return [go.Figure(go.Bar(y=[channel]), layout={"title": f"{layer} {channel}"}),
                pd.DataFrame({"layer": [layer], "note": ["</td> inside a cell"]})]

    part = Part({"layer": ["a", "b"], "channel": [1, 2]}, draw, states=[("a", 1), ("b", 2)])
    states = part.drawn()
    assert drawn == [("a", 1), ("b", 2)] and sorted(states) == ["a\x1f1", "b\x1f2"]
    assert states["b\x1f2"][0]["figure"]["layout"]["title"]["text"] == "b 2" and "<table" in states["b\x1f2"][1]["html"]
    block = offline_block("channels", [part])
    assert block.count("<select>") == 2 and json.dumps(NOT_COMPUTED) in block
    pool, payload = (json.loads(text.replace("<\\/", "</")) for text in
                     re.findall(r"<script type='application/json'[^>]*>(.*?)</script>", block, re.S))
    assert "</td>" not in block.split("<script>")[0]

    def whole(value):  # as the page's script puts the pooled values back
        if isinstance(value, dict):
            return pool[value["$pool"]] if "$pool" in value else {k: whole(v) for k, v in value.items()}
        return [whole(v) for v in value] if isinstance(value, list) else value
    assert whole(payload) == states


def test_large_values_are_stored_once_and_heatmaps_as_bytes():
    from artlab.widgets.offline import pooled

    picture = {"dtype": "u1", "bdata": "A" * 4000, "shape": "40, 30, 3"}
    pool, index = [], {}
    states = pooled({"a": [{"figure": {"data": [{"z": picture}]}}], "b": [{"figure": {"data": [{"z": picture}]}}]},
                    pool, index)
    assert pool == [picture] and states["a"] == states["b"] == [{"figure": {"data": [{"z": {"$pool": 0}}]}}]
    heat = np.linspace(-1, 1, 12).reshape(3, 4)
    figure = go.Figure(go.Heatmap(z=heat, zmin=-1, zmax=1, colorscale="RdBu_r"))
    stored = _item(figure)["figure"]["data"][0]
    assert stored["zmin"] == 0 and stored["zmax"] == 254 and stored["z"]["dtype"] == "u1"
    assert figure.data[0].zmin == -1  # the figure shown in the notebook is left as it was
    free = go.Figure([go.Heatmap(z=heat), go.Image(z=np.zeros((2, 2, 3), dtype=np.uint8))])  # no fixed range
    assert _item(free)["figure"] == json.loads(free.to_json())


@pytest.fixture(scope="module")
def chromium():
    """One headless chromium for the module's pages (each test opens its own page in a fresh context)."""
    sync_playwright = browser_or_skip()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def test_a_choice_drawn_ahead_elsewhere_moves_the_other_controls_and_says_so(tmp_path, chromium):
    part = Part({"layer": ["a", "b", "c"], "channel": [1, 2]},
                lambda layer, channel: [pd.DataFrame({"shown": [f"{layer}-{channel}"]})],
                states=[("a", 1), ("b", 2)])  # like the channel explorer: each layer's own channels
    page = tmp_path / "page.html"
    page.write_text(f"<html><body>{offline_block('channels', [part])}</body></html>")
    context = chromium.new_context()
    try:
        tab = context.new_page()
        errors = []
        tab.on("pageerror", lambda error: errors.append(str(error)))
        tab.goto(page.as_uri())
        layer, channel = tab.locator("select").nth(0), tab.locator("select").nth(1)
        view = tab.locator(".artlab-view")
        assert "a-1" in view.inner_text() and "Shown with" not in view.inner_text()
        layer.select_option("b")  # (b, 1) was not drawn; (b, 2) was
        assert channel.input_value() == "2" and "b-2" in view.inner_text()
        assert "Shown with channel 2: your choice was computed ahead with it." in view.inner_text()
        channel.select_option("1")  # (b, 1) again: channel 1 was drawn with layer a only
        assert layer.input_value() == "a" and "a-1" in view.inner_text() and "Shown with layer a" in view.inner_text()
        layer.select_option("c")  # nothing drawn with c: said so
        assert view.inner_text().strip() == NOT_COMPUTED and not errors
    finally:
        context.close()


def test_interactive_pages_state_their_size_and_stay_small(teacher):
    out, series = teacher.pages, teacher.interactive
    index = (out / "index.html").read_text()
    for record in series.records.values():
        if record.get("status") == "succeeded":
            size = (out / record["html"]).stat().st_size / 2**20
            assert record["page_mib"] == pytest.approx(size, abs=0.01) and size < MAX_PAGE_MIB
            assert f"{record['page_mib']:.1f} MiB" in index


@pytest.mark.parametrize("notebook", ["03_what_finetuning_changed", "04_filter_visualisation",
                                      "06_why_did_it_say_that"])
def test_every_offline_control_changes_its_view_with_the_network_blocked(teacher, chromium, notebook):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    out = teacher.pages
    errors, requests = [], []
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))

        def only_local(route):
            if route.request.url.startswith(("file:", "data:")):
                return route.continue_()
            requests.append(route.request.url)
            return route.abort()

        page.route("**/*", only_local)
        page.goto((out / f"{notebook}.html").as_uri())
        blocks = page.locator(".artlab-offline")
        assert blocks.count() >= 1, "no offline explorer on the page"
        changed = 0
        for b in range(blocks.count()):
            block = blocks.nth(b)
            view = block.locator(".artlab-view")
            page.wait_for_function("v => v.children.length > 0", arg=view.element_handle())
            for s in range(block.locator("select").count()):
                select = block.locator("select").nth(s)
                values = select.locator("option").evaluate_all("options => options.map(o => o.value)")
                if len(values) < 2:
                    continue
                before = view.inner_html()
                select.select_option(values[1])  # the second choice: drawn ahead in every part
                try:  # the page redraws the view on the change event: within 2 s, or it did not change
                    page.wait_for_function("([v, before]) => v.innerHTML !== before",
                                           arg=[view.element_handle(), before], timeout=2000)
                except PlaywrightTimeout:
                    pass
                assert view.inner_html() != before, f"block {b}, select {s}: the view did not change"
                assert "[object Object]" not in view.inner_text() and "not computed ahead" not in view.inner_text()
                changed += 1
        page.wait_for_timeout(200)  # what the last change draws may still log an error
        assert changed >= 2 and not errors and not requests, (changed, errors, requests)
    finally:
        context.close()
