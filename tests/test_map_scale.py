"""The collection map at 10,000 images: hover thumbnails from one sprite, bounded pages, WebGL, a cheaper t-SNE.

A page embeds a few sprite sheets of small tiles, not a data URL per point; each point's customdata ends with
its tile index, and the page's script shows that tile (CSS background-position). These tests check the
arithmetic on real artworks' pixels, and one runs the page's script in chromium when it is installed.
"""

from __future__ import annotations

import base64
import io
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from artlab.interpret import projection as pj

#: An embedded JPEG in a written page, where plotly's JSON may escape "/" as "\u002f" or "\/".
DATA_URL = re.compile(r"data:image(?:/|\\u002f|\\/)jpeg;base64,(?:[A-Za-z0-9+=]|/|\\u002f|\\/)+")
PAGE_BUDGET = 15_000_000 / 10_500  # bytes per image: a 10,500-image page within 15 MB
CHROMIUM = Path("/usr/bin/chromium")
#: The page's script has put the preview beside the chart and plotly has redrawn the chart at its narrower width.
SETTLED = """() => { var gd = document.querySelector('.js-plotly-plot');
    return document.querySelector('figure') !== null && gd._fullLayout
        && Math.abs(gd._fullLayout.width - gd.getBoundingClientRect().width) < 1; }"""


@pytest.fixture(scope="module")
def artworks(peopleart_dir) -> pd.DataFrame:
    """40 real People-Art images of many sizes and shapes (every k-th, sorted), one style label each."""
    paths = sorted(str(p) for p in (peopleart_dir / "images").rglob("*.jpg"))[::97][:40]
    return pd.DataFrame({"path": paths, "style": [Path(p).parent.name for p in paths], "split": "train"})


def a_map(table: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """A map table of `table` from random features (the layout does not matter here, the hover images do)."""
    return pj.collection_map(table, np.random.default_rng(seed).random((len(table), 16)), "pca", "style")


def decode(url: str) -> Image.Image:
    """A JPEG data URL (as a figure holds it or as a written page escapes it) as an RGB image."""
    data = url.split(",", 1)[1].replace("\\u002f", "/").replace("\\/", "/")
    return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


def js_tile(sheets: list[Image.Image], columns: int, tile: int, index: int) -> np.ndarray:
    """The pixels the page's script shows for tile `index`: the script's arithmetic, written out again."""
    sheet, at = divmod(index, columns * columns)
    left, top = at % columns * tile, at // columns * tile
    return np.asarray(sheets[sheet].crop((left, top, left + tile, top + tile)), dtype=float)


def points(traces) -> list[tuple[str, int]]:
    """(title, tile index) of every point of a map figure's traces."""
    return [(str(row[0]), int(row[-1])) for trace in traces for row in trace.customdata]


def assert_tiles_show_their_images(fig, table: pd.DataFrame, sheets: list[Image.Image]) -> None:
    """Every point's tile is closest, of all the map's thumbnails, to its own image's (and close in absolute terms)."""
    meta = fig.layout.meta[pj.SPRITE_META]
    tile, columns = meta["tile"], meta["columns"]
    path_of = dict(zip(table["title"], table["path"]))
    thumbs = {p: np.asarray(pj.thumbnail_tile(p, tile), dtype=float) for p in table["path"]}
    for title, index in points(fig.data):
        shown = js_tile(sheets, columns, tile, index)
        errors = {p: np.abs(shown - t).mean() for p, t in thumbs.items()}
        assert min(errors, key=errors.get) == path_of[title], f"point {title} shows another image's tile"
        assert errors[path_of[title]] < 20, f"point {title}'s tile is far from its thumbnail (beyond JPEG's loss)"


# ---- one sprite, a bounded page ---------------------------------------------------------------
def test_a_sprite_page_embeds_one_image_not_one_per_point_within_the_10k_budget(artworks, tmp_path):
    table = a_map(artworks)
    fig = pj.map_figure(table, thumb=48, sprite=True)
    assert all(isinstance(row[-1], int | np.integer) for t in fig.data for row in t.customdata)
    page = pj.write_map_html(fig, tmp_path / "map.html")
    text = page.read_text()
    urls = DATA_URL.findall(text)
    assert len(urls) == 1, f"{len(urls)} images embedded for {len(table)} points"
    assert len(fig.layout.meta[pj.SPRITE_META]["sheets"]) == 1
    size = page.stat().st_size
    assert size <= 10_000 + PAGE_BUDGET * len(table), f"{size} bytes for {len(table)} images"
    sheet = decode(urls[0])
    assert sheet.size == (7 * 48, 6 * 48), "40 tiles of 48 px on one sheet 7 tiles wide"
    assert_tiles_show_their_images(fig, table, [sheet])


def test_tiles_shrink_with_the_collection_so_a_page_stays_bounded():
    assert pj.tile_size(40, 64) == 64 and pj.tile_size(5_000, 64) == 64
    assert pj.tile_size(10_500, 64) == 48 and pj.tile_size(10_500, 50) == 48
    assert pj.tile_size(1_000_000, 64) == pj.MIN_TILE
    for n in (100, 1_000, 10_500, 20_000):
        assert n * pj.tile_size(n, 64) ** 2 <= pj.SPRITE_PIXELS
    assert all(pj.tile_size(n, 64) % 16 == 0 for n in (10, 3_000, 7_777, 10_500)), "JPEG blocks never straddle tiles"


def test_a_large_sprite_is_several_sheets_and_each_index_finds_its_tile(artworks, monkeypatch):
    monkeypatch.setattr(pj, "SPRITE_COLUMNS", 4)  # 16 tiles a sheet: 40 images need 3 sheets
    table = a_map(artworks)
    fig = pj.map_figure(table, thumb=32, sprite=True)
    meta = fig.layout.meta[pj.SPRITE_META]
    assert (meta["columns"], meta["tile"], len(meta["sheets"])) == (4, 32, 3)
    sheets = [decode(url) for url in meta["sheets"]]
    assert [s.size for s in sheets] == [(128, 128), (128, 128), (128, 64)]
    assert_tiles_show_their_images(fig, table, sheets)
    sprite = pj.build_sprite(table["path"].tolist(), 32)
    assert sprite.locate(17) == (1, 32, 0) and sprite.locate(39) == (2, 96, 32)


def test_an_unreadable_image_gets_a_white_tile(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    assert np.asarray(pj.thumbnail_tile(broken, 32)).min() == 255


# ---- when a sprite is used, and by whom -------------------------------------------------------
def test_maps_above_the_threshold_switch_to_a_sprite_small_ones_keep_data_urls(artworks, monkeypatch):
    monkeypatch.setattr(pj, "SPRITE_ABOVE", 30)
    large = pj.map_figure(a_map(artworks))
    assert pj.SPRITE_META in large.layout.meta and isinstance(large.data[0].customdata[0][-1], int | np.integer)
    small = pj.map_figure(a_map(artworks.head(20)))
    assert small.layout.meta is None
    assert all(str(row[-1]).startswith("data:image/jpeg;base64,") for t in small.data for row in t.customdata)


def test_compared_maps_share_one_sprite(artworks, tmp_path):
    first, second = a_map(artworks, 0), a_map(artworks.iloc[::-1].reset_index(drop=True), 1)
    fig = pj.compare_maps({"a": first, "b": second}, "style", thumbnails=True, thumb=48, sprite=True)
    text = pj.write_map_html(fig, tmp_path / "compare.html").read_text()
    assert len(DATA_URL.findall(text)) == 1
    halves = [dict(points(t for t in fig.data if t.xaxis == axis)) for axis in ("x", "x2")]
    assert halves[0] == halves[1] and sorted(halves[0].values()) == list(range(len(artworks)))
    assert_tiles_show_their_images(fig, first, [decode(fig.layout.meta[pj.SPRITE_META]["sheets"][0])])


def test_a_10k_point_map_draws_with_webgl_and_a_small_figure():
    n = 10_500
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"path": [f"/art/work_{i}.jpg" for i in range(n)], "title": [f"work_{i}" for i in range(n)],
                          "style": rng.choice(list("ABCDEFG"), n), "x": rng.random(n), "y": rng.random(n),
                          "split": "train"})
    fig = pj.map_figure(table, "style", thumbnails=False)
    assert {t.type for t in fig.data} == {"scattergl"} and sum(len(t.x) for t in fig.data) == n
    assert len(fig.to_json()) < 2_000_000


# ---- t-SNE ------------------------------------------------------------------------------------
def test_tsne_of_long_vectors_runs_on_principal_components_and_keeps_clusters(monkeypatch):
    rng = np.random.default_rng(0)
    centres = rng.random((3, 300)) + 0.1
    labels = np.repeat(np.arange(3), 30)
    x = centres[labels] + 0.05 * rng.standard_normal((90, 300))
    fitted = []
    from sklearn.manifold import TSNE

    real_fit = TSNE.fit_transform

    def recording(self, data, *args, **kwargs):
        fitted.append(data.shape)
        return real_fit(self, data, *args, **kwargs)

    monkeypatch.setattr(TSNE, "fit_transform", recording)
    xy = pj.project(x, "tsne", seed=1)
    assert fitted == [(90, pj.TSNE_DIMENSIONS)]
    np.testing.assert_array_equal(xy, pj.project(x, "tsne", seed=1))
    from sklearn.neighbors import KNeighborsClassifier

    assert KNeighborsClassifier(3).fit(xy, labels).score(xy, labels) == 1.0


# ---- the page's own script, in a browser ------------------------------------------------------
def test_hovering_a_point_in_chromium_shows_its_tile(artworks, tmp_path):
    if not CHROMIUM.is_file() or not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"chromium is not installed at {CHROMIUM}")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    table = a_map(artworks)
    page_path = pj.write_map_html(pj.map_figure(table, thumb=48, sprite=True), tmp_path / "map.html")
    path_of = dict(zip(table["title"], table["path"]))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(page_path.as_uri())
            page.wait_for_function(SETTLED, timeout=30_000)  # a resize after the hover would end it
            where = page.evaluate("""() => {
                var gd = document.querySelector('.js-plotly-plot'), box = gd.getBoundingClientRect();
                var trace = gd._fullData[0], xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
                return [box.left + xa._offset + xa.l2p(trace.x[0]), box.top + ya._offset + ya.l2p(trace.y[0])]; }""")
            page.mouse.move(where[0] + 3, where[1] + 3)
            page.mouse.move(*where)
            page.wait_for_function("document.querySelector('figure').style.visibility === 'visible'", timeout=10_000)
            title = page.inner_text("figcaption")
            width = page.evaluate("document.querySelector('.artlab-tile').getBoundingClientRect().width")
            shot = Image.open(io.BytesIO(page.locator(".artlab-tile").screenshot())).convert("RGB")
        finally:
            browser.close()
    assert not errors, errors
    assert width == 96, "48 px tiles shown at twice their size"
    shown = np.asarray(shot.resize((48, 48), Image.Resampling.BOX), dtype=float)
    errors_by_path = {p: np.abs(shown - np.asarray(pj.thumbnail_tile(p, 48), dtype=float)).mean()
                      for p in table["path"]}
    assert min(errors_by_path, key=errors_by_path.get) == path_of[title]
    assert errors_by_path[path_of[title]] < 20, "beyond JPEG's loss and the screen's resampling"
