"""A map of the collection: pooled features in 2-D (PCA or t-SNE), nearest neighbours and class separation.

Features come from any analysed layer of the ImageNet network or of a fine-tuned run, through the
feature cache of `artlab.features`, so a second map of the same images never runs the network.
Comparing the two networks' maps (and their `separation` scores) shows whether the classes of a
task separate after fine-tuning. Every distance here is cosine: features are L2-normalised before
a projection, so the map's Euclidean distances agree with `neighbours` and `separation`.
"""

from __future__ import annotations

import hashlib
import html
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from PIL import Image
from plotly.colors import qualitative
from plotly.subplots import make_subplots

import artlab.features as store
from artlab import models
from artlab.cache import cache_dir, digest, load_checked, save_checked
from artlab.data.collection import ArtCollection
from artlab.data.images import ImageError, load_rgb
from artlab.io import load_tensors, save_tensors, usable_cores, write_text
from artlab.plots import data_url, gallery, write_plotlyjs
from artlab.runs import Network, Run

METHODS = ("pca", "tsne")
MAP_COLUMNS = ("path", "title", "x", "y", "split")  # every other column of a map table is a label
THUMBNAIL_COLUMN = "thumbnail"
NO_LABEL = "(none)"
PALETTE = qualitative.Dark24
#: t-SNE runs on the first principal components of longer vectors: its neighbour search is then cheaper, its map alike.
TSNE_DIMENSIONS = 50
#: Maps of more images carry their hover thumbnails as a few sprite sheets, not one data URL per point.
SPRITE_ABOVE = 200
#: Tile pixels of a whole sprite (about 8 MB of base64 JPEG): tiles shrink below `thumb` so a page stays bounded.
SPRITE_PIXELS = 25_000_000
SPRITE_COLUMNS = 64  # tiles per sheet side: a sheet holds 4,096 tiles (3,072 px square at 48 px)
MIN_TILE = 32
SPRITE_QUALITY = 75
#: Maps of more points are drawn with WebGL (Scattergl): SVG markers pan and zoom slowly by the thousand.
WEBGL_ABOVE = 2_000
SPRITE_META = "artlab_sprite"  # the key of a map figure's sprite in layout.meta

Source = str | Path | Run | Network


# ---- features ---------------------------------------------------------------------------------
def _settings(network: Network, layer: str | None, image_size: int | None) -> tuple[str, int]:
    """The layer (default: the architecture's feature layer) and image size, checked against the architecture."""
    spec = models.arch(network.arch)
    layer = layer or spec.feature_layer
    models.check_layers(spec, [layer])
    size = image_size or network.image_size
    if size < spec.min_size:
        raise ValueError(f"{spec.name} needs images of at least {spec.min_size} px, not {size}")
    return layer, size


def layer_features(source: Source, paths: list[str], layer: str | None = None, image_size: int | None = None,
                   arch: str | None = None, device: str | torch.device = "auto", batch_size: int = 64) -> np.ndarray:
    """Pooled features (n, channels) of one analysed layer for `paths`, from the disk cache when present.

    Rows of images that cannot be read are NaN (`artlab.features.unreadable_rows`).
    """
    network = Network.of(source, arch)
    layer, size = _settings(network, layer, image_size)
    return store.cached_features(network, layer, list(paths), size, models.resolve_device(device), batch_size)


def image_feature(path: str | Path, source: Source, layer: str | None = None, image_size: int | None = None,
                  arch: str | None = None, device: str | torch.device = "auto") -> np.ndarray:
    """The pooled feature vector of one new image file (same network, layer and size; not cached), for `neighbours`."""
    network = Network.of(source, arch)
    layer, size = _settings(network, layer, image_size)
    return store.extract(network.build(), [str(path)], [layer], size, models.resolve_device(device),
                         desc="image feature")[layer][0]


# ---- projection -------------------------------------------------------------------------------
def _checked(features: np.ndarray, minimum: int) -> np.ndarray:
    """A finite float64 matrix with at least `minimum` rows, or a clear error."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < minimum:
        raise ValueError(f"need a matrix of at least {minimum} feature vectors, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features hold NaN rows (unreadable images): drop them first "
                         "(artlab.features.unreadable_rows)")
    return x


def project(features: np.ndarray, method: str = "pca", seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """(n, 2) map coordinates of feature vectors by PCA or t-SNE, deterministic for a seed.

    Rows are L2-normalised first, not standardised: pooled post-ReLU channels differ in scale
    for a reason (a rarely active channel should stay quiet, not be blown up to unit variance),
    and on unit vectors Euclidean distance is a function of cosine similarity, the measure that
    `neighbours` and `separation` use. t-SNE's perplexity is clipped to n - 1 (small collections);
    it runs on the first TSNE_DIMENSIONS principal components, its neighbour search on every core.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import normalize

    if method not in METHODS:
        raise ValueError(f"unknown projection {method!r}; choose from {list(METHODS)}")
    x = normalize(_checked(features, 3))
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(x)
    key = digest({"features": hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest(), "shape": x.shape,
                  "seed": seed, "perplexity": perplexity, "pcs": TSNE_DIMENSIONS, "version": 1})
    entry = cache_dir() / "maps" / f"tsne-{key}.safetensors"  # t-SNE takes a minute at 10,000 images: kept
    stored = load_checked(entry, "map coordinates", load_tensors)
    if stored is not None:
        return stored["xy"].numpy().astype(np.float64)
    if x.shape[1] > TSNE_DIMENSIONS and len(x) > TSNE_DIMENSIONS:
        x = PCA(n_components=TSNE_DIMENSIONS, random_state=seed).fit_transform(x)
    xy = TSNE(n_components=2, perplexity=min(perplexity, len(x) - 1), init="pca", random_state=seed,
              n_jobs=-1).fit_transform(x)
    save_checked(entry, {"xy": torch.from_numpy(np.ascontiguousarray(xy))}, {}, "map coordinates", save_tensors)
    return xy


# ---- map tables -------------------------------------------------------------------------------
def _display(value: object) -> object:
    """A label cell for display: multi-label tuples joined by ', '."""
    return ", ".join(map(str, value)) if isinstance(value, tuple | list) else value


def _source_table(collection_or_table: ArtCollection | pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The table and its label columns (a collection's tasks; a table's columns other than MAP_COLUMNS)."""
    if isinstance(collection_or_table, ArtCollection):
        return collection_or_table.table, collection_or_table.tasks
    if "path" not in collection_or_table:
        raise KeyError("a map needs a table with a 'path' column")
    return collection_or_table, label_columns(collection_or_table)


def collection_map(collection_or_table: ArtCollection | pd.DataFrame, features: np.ndarray, method: str = "pca",
                   color: str | None = None, seed: int = 0) -> pd.DataFrame:
    """A tidy map table: path, title (file stem), every label column (display strings), x, y, split.

    Images whose features are NaN (unreadable) are left out with a warning; their paths are kept
    in `attrs["unreadable"]`. `color`, when given, must be a label column (checked here, before
    the projection runs) and is remembered in `attrs["color"]` as `map_figure`'s default.
    """
    table, labels = _source_table(collection_or_table)
    if len(table) != len(features):
        raise ValueError(f"{len(table)} images but {len(features)} feature vectors")
    if color is not None and color not in labels:
        raise KeyError(f"cannot colour by {color!r}; label columns are {labels}")
    bad = store.unreadable_rows(np.asarray(features))
    if bad.any():
        warnings.warn(f"{int(bad.sum())} unreadable image(s) left out of the map", stacklevel=2)
    kept = table[~bad].reset_index(drop=True)
    xy = project(np.asarray(features)[~bad], method, seed)
    out = pd.DataFrame({"path": kept["path"].astype(str), "title": [Path(p).stem for p in kept["path"]]})
    for label in labels:
        out[label] = kept[label].map(_display)
    out["x"], out["y"] = xy[:, 0], xy[:, 1]
    out["split"] = kept["split"] if "split" in kept else None
    out.attrs.update({"method": method, "color": color, "unreadable": table["path"][bad].tolist()})
    return out


def label_columns(table: pd.DataFrame) -> list[str]:
    """The label columns of a map table (everything but path, title, x, y, split and thumbnails)."""
    return [c for c in table.columns if c not in MAP_COLUMNS and c != THUMBNAIL_COLUMN]


# ---- thumbnails and sprites -------------------------------------------------------------------
def _thumbnail(path: str | Path, size: int) -> Image.Image | None:
    """An image shrunk to fit a size x size square (JPEGs decoded at a reduced scale), or None if unreadable."""
    try:
        img = load_rgb(path, max_side=size * 2)
    except ImageError:
        return None
    img.thumbnail((size, size))
    return img


def thumbnail_url(path: str | Path, size: int = 64, quality: int = 80) -> str:
    """A small JPEG of an image as a base64 data URL (hover previews); "" for an unreadable file."""
    img = _thumbnail(path, size)
    return "" if img is None else data_url(img, "JPEG", quality=quality)


def thumbnail_tile(path: str | Path, tile: int) -> Image.Image:
    """An image's square sprite tile: its thumbnail centred on white (all white for an unreadable file)."""
    square = Image.new("RGB", (tile, tile), "white")
    img = _thumbnail(path, tile)
    if img is not None:
        square.paste(img, ((tile - img.width) // 2, (tile - img.height) // 2))
    return square


def tile_size(n: int, thumb: int) -> int:
    """The tile side for a sprite of n images: `thumb`, shrunk so n tiles stay within SPRITE_PIXELS.

    A multiple of 16 (JPEG's colour blocks), so no tile bleeds into its neighbours; at least MIN_TILE
    unless `thumb` is smaller.
    """
    side = min(thumb, max(MIN_TILE, (SPRITE_PIXELS / max(n, 1)) ** 0.5))
    return max(16, int(side) // 16 * 16)


@dataclass(frozen=True)
class Sprite:
    """Thumbnails of many images as a few JPEG sheets of square tiles: image i is tile i, row by row, sheet by sheet."""

    paths: tuple[str, ...]
    sheets: tuple[str, ...]  # JPEG data URLs
    tile: int
    columns: int  # tiles per sheet side: a sheet holds columns ** 2 tiles

    def locate(self, index: int) -> tuple[int, int, int]:
        """(sheet, left, top), in pixels, of tile `index`: the arithmetic of the page's hover script."""
        at = index % (self.columns * self.columns)
        return index // (self.columns * self.columns), at % self.columns * self.tile, at // self.columns * self.tile

    def meta(self) -> dict[str, object]:
        """What the page's hover script reads from the figure's layout.meta."""
        return {"sheets": list(self.sheets), "tile": self.tile, "columns": self.columns}


def _sheet(tiles: list[Image.Image], tile: int, columns: int) -> Image.Image:
    """Tiles laid out row by row on one sheet `columns` tiles wide."""
    sheet = Image.new("RGB", (columns * tile, -(-len(tiles) // columns) * tile), "white")
    for i, img in enumerate(tiles):
        sheet.paste(img, (i % columns * tile, i // columns * tile))
    return sheet


def build_sprite(paths: list[str], thumb: int = 64, quality: int = SPRITE_QUALITY) -> Sprite:
    """The sprite of `paths` (tiles decoded on every core): one embedded image serves thousands of hover previews."""
    tile = tile_size(len(paths), thumb)
    columns = max(1, min(SPRITE_COLUMNS, int(np.ceil(np.sqrt(len(paths))))))  # a small sprite is one square sheet
    with ThreadPoolExecutor(max_workers=usable_cores()) as pool:
        tiles = list(pool.map(lambda p: thumbnail_tile(p, tile), paths))
    per_sheet = columns * columns
    sheets = tuple(data_url(_sheet(tiles[start:start + per_sheet], tile, columns), "JPEG", quality=quality)
                   for start in range(0, len(tiles), per_sheet))
    return Sprite(tuple(map(str, paths)), sheets, tile, columns)


def _hover_images(tables: list[pd.DataFrame], thumb: int,
                  sprite: bool | None) -> tuple[list[np.ndarray], Sprite | None]:
    """Each table's per-row hover image: a tile index into one sprite shared by all tables, or a data URL.

    `sprite` None chooses a sprite above SPRITE_ABOVE distinct images. Without a sprite, a table's own
    thumbnail column is used where it has one, and each other image is encoded once however many maps show it.
    """
    paths = list(dict.fromkeys(p for table in tables for p in table["path"].astype(str)))
    use_sprite = len(paths) > SPRITE_ABOVE if sprite is None else sprite
    if use_sprite:
        shared = build_sprite(paths, thumb)
        index = {p: i for i, p in enumerate(paths)}
        return [table["path"].astype(str).map(index).to_numpy(dtype=object) for table in tables], shared
    urls: dict[str, str] = {}
    for table in tables:
        if THUMBNAIL_COLUMN not in table:
            urls.update({p: thumbnail_url(p, thumb) for p in table["path"].astype(str) if p not in urls})
    return [table[THUMBNAIL_COLUMN].to_numpy(dtype=object) if THUMBNAIL_COLUMN in table
            else table["path"].astype(str).map(urls).to_numpy(dtype=object) for table in tables], None


# ---- figures ----------------------------------------------------------------------------------
def _classes(table: pd.DataFrame, color: str) -> pd.Series:
    """The colour column as display strings, missing labels shown as NO_LABEL."""
    if color not in table:
        raise KeyError(f"cannot colour by {color!r}; label columns are {label_columns(table)}")
    return table[color].map(lambda v: NO_LABEL if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))


def _hover(table: pd.DataFrame, images: np.ndarray | None) -> tuple[np.ndarray, str]:
    """customdata (title, labels..., split[, hover image: data URL or sprite tile index]) and its hover template."""
    shown = ["title", *label_columns(table), "split"]
    cells = table[shown].astype(object).where(table[shown].notna(), "").map(lambda v: html.escape(str(v)))
    if images is not None:
        cells[THUMBNAIL_COLUMN] = images
    lines = [f"{html.escape(name)}: %{{customdata[{i}]}}" for i, name in enumerate(shown) if i > 0]
    return cells.to_numpy(dtype=object), "<b>%{customdata[0]}</b><br>" + "<br>".join(lines) + "<extra></extra>"


def _palette(classes: list[str]) -> dict[str, str]:
    """One colour per class, stable across figures that share the class list."""
    return {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(classes)}


def _traces(table: pd.DataFrame, color: str, colours: dict[str, str],
            images: np.ndarray | None) -> list[go.Scatter | go.Scattergl]:
    """One scatter trace per class of `color`, with the hover customdata (WebGL and smaller markers for large maps)."""
    classes = _classes(table, color)
    customdata, template = _hover(table, images)
    large = len(table) > WEBGL_ABOVE
    scatter = go.Scattergl if large else go.Scatter
    traces = []
    for name in sorted(classes.unique()):
        rows = (classes == name).to_numpy()
        traces.append(scatter(x=table["x"][rows], y=table["y"][rows], mode="markers", name=name, legendgroup=name,
                              marker={"color": colours[name], "size": 4 if large else 7, "opacity": 0.8},
                              customdata=customdata[rows], hovertemplate=template))
    return traces


def map_figure(table: pd.DataFrame, color: str | None = None, title: str = "map of the collection",
               thumbnails: bool = True, thumb: int = 64, sprite: bool | None = None) -> go.Figure:
    """A scatter of a map table, one trace per class of `color`; hover shows title and labels.

    With `thumbnails`, each point's customdata ends with its hover image, which the page written by
    `write_map_html` shows beside the chart: for a small map a JPEG data URL, for one of more than
    SPRITE_ABOVE images (or `sprite=True`) the index of its tile in a sprite kept once in
    `layout.meta["artlab_sprite"]`, so a page of 10,000 images embeds a few images, not 10,000.
    A widget leaves thumbnails out and shows images itself.
    """
    color = color or table.attrs.get("color") or next(iter(label_columns(table)), None)
    if color is None:
        raise KeyError("this map table has no label column to colour by")
    colours = _palette(sorted(_classes(table, color).unique()))
    (images,), shared = _hover_images([table], thumb, sprite) if thumbnails else ([None], None)
    fig = go.Figure(_traces(table, color, colours, images))
    fig.update_layout(title=title, legend_title_text=color, xaxis_title="", yaxis_title="", height=650)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False, scaleanchor="x")
    return _with_sprite(fig, shared)


def _with_sprite(fig: go.Figure, shared: Sprite | None) -> go.Figure:
    """The figure carrying its sprite in layout.meta (where the page's hover script finds it), if it has one."""
    if shared is not None:
        fig.update_layout(meta={SPRITE_META: shared.meta()})
    return fig


#: Shows the hovered point's thumbnail beside the chart: a sprite tile (CSS background-position; the point's last
#: customdata entry is its tile index) or the customdata entry that is an image data URL.
HOVER_SCRIPT = """
var plot = document.getElementById('{plot_id}');
var sprite = (plot.layout.meta || {}).artlab_sprite;
var zoom = 2;
var box = document.createElement('figure');
box.style.cssText = 'margin:0 0 0 12px;min-width:140px;font:12px sans-serif;visibility:hidden';
var preview = document.createElement('img');
preview.className = 'artlab-thumbnail';
var tile = document.createElement('div');
tile.className = 'artlab-tile';
var caption = document.createElement('figcaption');
box.appendChild(sprite ? tile : preview); box.appendChild(caption);
if (sprite) {
    var size = sprite.tile * zoom;
    var rules = sprite.sheets.map(function (url, i) {  // one rule per sheet: each sheet is decoded once
        return '.artlab-sheet-' + i + '{background-image:url(' + url + ')}';
    });
    rules.push('.artlab-tile{width:' + size + 'px;height:' + size + 'px;background-repeat:no-repeat;' +
               'background-size:' + sprite.columns * size + 'px auto}');
    var style = document.createElement('style');
    style.textContent = rules.join('\\n');
    document.head.appendChild(style);
}
plot.parentNode.style.display = 'flex';
plot.parentNode.style.alignItems = 'flex-start';
plot.parentNode.appendChild(box);
Plotly.Plots.resize(plot);
plot.on('plotly_hover', function (event) {
    var data = event.points[0].customdata || [];
    var last = data[data.length - 1];
    if (sprite && typeof last === 'number') {
        var perSheet = sprite.columns * sprite.columns, at = last % perSheet;
        tile.className = 'artlab-tile artlab-sheet-' + Math.floor(last / perSheet);
        tile.style.backgroundPosition = (-(at % sprite.columns) * size) + 'px ' +
                                        (-Math.floor(at / sprite.columns) * size) + 'px';
    } else {
        var url = data.find(function (v) { return typeof v === 'string' && v.indexOf('data:image/') === 0; });
        if (!url) { return; }
        preview.src = url;
    }
    caption.innerHTML = data[0];
    box.style.visibility = 'visible';
});
plot.on('plotly_unhover', function () { box.style.visibility = 'hidden'; });
"""


def write_map_html(fig: go.Figure, path: str | Path) -> Path:
    """An offline HTML page of a map whose hovered artwork's thumbnail appears beside the chart (written atomically)."""
    path = Path(path)
    write_plotlyjs(path.parent)
    write_text(path, fig.to_html(include_plotlyjs="plotly.min.js", post_script=HOVER_SCRIPT))
    return path


def compare_maps(maps: dict[str, pd.DataFrame], color: str, title: str = "maps of the collection",
                 thumbnails: bool = False, thumb: int = 64, sprite: bool | None = None) -> go.Figure:
    """Maps of one collection by several networks side by side, each class in the same colour everywhere.

    With `thumbnails`, hover images as in `map_figure`; the maps share one sprite (each image tiled once).
    """
    if not maps:
        raise ValueError("no maps to compare")
    classes = sorted(set().union(*(_classes(t, color).unique() for t in maps.values())))
    colours = _palette(classes)
    tables = list(maps.values())
    images, shared = _hover_images(tables, thumb, sprite) if thumbnails else ([None] * len(tables), None)
    fig = make_subplots(rows=1, cols=len(maps), subplot_titles=[html.escape(n) for n in maps],
                        horizontal_spacing=0.03)
    shown: set[str] = set()
    for column, (table, hover) in enumerate(zip(tables, images), start=1):
        for trace in _traces(table, color, colours, hover):
            trace.showlegend = trace.name not in shown
            shown.add(trace.name)
            fig.add_trace(trace, row=1, col=column)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    fig.update_layout(title=title, legend_title_text=color, height=550, width=max(700, 520 * len(maps)))
    return _with_sprite(fig, shared)


# ---- neighbours -------------------------------------------------------------------------------
def neighbours(features: np.ndarray, paths: list[str], query: int | np.ndarray, k: int = 8,
               labels: pd.DataFrame | None = None) -> pd.DataFrame:
    """The k images most cosine-similar to a query: an image of the collection (index, itself excluded) or a vector.

    Images with unreadable (NaN) features are never neighbours. `labels`, a table aligned with
    `paths` (e.g. the collection's or a map's), adds its columns to each neighbour's row.
    """
    from sklearn.metrics.pairwise import cosine_similarity

    x = np.asarray(features, dtype=np.float64)
    if len(x) != len(paths):
        raise ValueError(f"{len(paths)} paths but {len(x)} feature vectors")
    usable = ~store.unreadable_rows(x)
    if isinstance(query, int | np.integer):
        if not -len(x) <= query < len(x):
            raise IndexError(f"query index {query} is outside the collection of {len(x)} images")
        query = int(query) % len(x)
        vector = x[query]
        usable[query] = False
    else:
        vector = np.asarray(query, dtype=np.float64).ravel()
    if not np.isfinite(vector).all() or vector.shape[0] != x.shape[1]:
        raise ValueError(f"the query needs a finite feature vector of length {x.shape[1]}")
    candidates = np.flatnonzero(usable)
    scores = cosine_similarity(vector[None], x[candidates])[0]
    order = np.argsort(-scores, kind="stable")[:k]  # equal scores: the lower index first
    chosen = candidates[order]
    out = pd.DataFrame({"path": [str(paths[i]) for i in chosen], "score": scores[order],
                        "rank": np.arange(1, len(order) + 1)})
    if labels is not None:
        extra = labels.reset_index(drop=True).iloc[chosen].reset_index(drop=True)
        for column in [c for c in extra.columns if c not in out]:
            out[column] = extra[column].to_numpy()
    return out


def neighbours_figure(table: pd.DataFrame, query_path: str | Path, label: str | None = None,
                      title: str | None = None, columns: int = 5) -> go.Figure:
    """A gallery of the query image and its neighbours (a `neighbours` table), scores (and `label`) in captions."""
    def caption(row: pd.Series) -> str:
        extra = f" {_display(row[label])}" if label else ""
        return f"{int(row['rank'])}. {row['score']:.3f}{extra}"

    captions = ["query: " + Path(query_path).stem, *(caption(row) for _, row in table.iterrows())]
    return gallery([str(query_path), *table["path"]], captions,
                   title or f"nearest neighbours of {Path(query_path).name}", columns=columns)


# ---- separation -------------------------------------------------------------------------------
def separation(features: np.ndarray, labels: np.ndarray | pd.Series | list, k: int = 5,
               seed: int = 0) -> dict[str, float | int]:
    """How well classes separate in feature space: cosine silhouette and k-NN accuracy (stratified CV).

    k-NN accuracy is cross-validated in min(5, smallest class) stratified folds (leave-one-out is
    far slower and no more telling); `chance` is the largest class's share. Images without a label
    or with unreadable features, and classes with a single image, are left out and counted.
    """
    from sklearn.metrics import silhouette_score

    x = np.asarray(features, dtype=np.float64)
    y = pd.Series(list(labels), dtype=object)
    if len(x) != len(y):
        raise ValueError(f"{len(y)} labels but {len(x)} feature vectors")
    if y.map(lambda v: isinstance(v, tuple | list)).any():
        raise ValueError("separation needs one class per image; a multi-label task has several")
    keep = (y.notna() & ~store.unreadable_rows(x)).to_numpy()
    counts = y[keep].value_counts()
    keep = keep & y.isin(counts.index[counts >= 2]).to_numpy()
    x, y = x[keep], y[keep].astype(str).to_numpy()
    classes, sizes = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"separation needs two classes of at least two images each; found {len(classes)}")
    folds = int(min(5, sizes.min()))
    return {"silhouette": float(silhouette_score(x, y, metric="cosine")),
            "knn_accuracy": _knn_accuracy(x, y, k, folds, seed), "chance": float(sizes.max() / len(y)),
            "images": int(len(y)), "classes": int(len(classes)), "left_out": int((~keep).sum()), "k": k,
            "folds": folds}


def _knn_accuracy(x: np.ndarray, y: np.ndarray, k: int, folds: int, seed: int) -> float:
    """Accuracy of a cosine k-NN classifier, each image predicted by a model that never saw it."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier

    smallest_train = len(y) - -(-len(y) // folds)  # images left to train on when the largest fold is held out
    knn = KNeighborsClassifier(n_neighbors=min(k, smallest_train), metric="cosine")
    predicted = cross_val_predict(knn, x, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    return float((predicted == y).mean())


def separation_table(features: dict[str, np.ndarray], labels: np.ndarray | pd.Series | list, k: int = 5,
                     seed: int = 0) -> pd.DataFrame:
    """`separation` of one set of labels under several networks' features: one row per network."""
    return pd.DataFrame([{"network": name, **separation(x, labels, k, seed)} for name, x in features.items()])
