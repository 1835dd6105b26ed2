"""Drawing kit: plotly charts of tidy tables and image galleries, and offline HTML pages.

These functions know tables, paths and captions, never artlab's result types, so every layer
above data can draw with them (analyses build their figures here; widgets show them).
"""

from __future__ import annotations

import base64
import html
import io
import re
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from PIL import Image
from plotly.subplots import make_subplots

from artlab.data.images import ImageError, load_rgb
from artlab.io import write_text
from artlab.lazy import import_jsonschema

import_jsonschema()  # before plotly's notebook renderer imports it (through nbformat) as a figure is first shown

#: About how many characters of a chart title fit on one line of a notebook's output on a laptop (some 750 px of
#: plotly's 17 px title font): plotly draws a title on one line and cuts it at the figure's edge, often within a
#: run name; longer titles wrap.
TITLE_CHARS = 80
#: A character's average width, as a fraction of the font's size (to fit a title to a figure of a given width).
CHAR_WIDTH = 0.55


def readable_title(fig: go.Figure, chars: int | None = None) -> go.Figure:
    """The figure, changed in place, with its title wrapped at spaces onto lines that fit, and room above the plot.

    A line holds at most `chars` characters (default: what the figure's own width holds, else TITLE_CHARS);
    a word longer than that (a run name) keeps a line of its own. Wrapping an already wrapped title keeps it.
    """
    title = fig.layout.title.text
    if not title:
        return fig
    size = fig.layout.title.font.size or 17
    if chars is None:
        width = fig.layout.width
        chars = max(20, int((width - 40) / (CHAR_WIDTH * size))) if width else TITLE_CHARS
    lines = []
    for line in re.split(r"<br\s*/?>", title):
        # "run-name: what is shown" too long for a line breaks after the name first
        parts = line.split(": ", 1) if len(line) > chars and ": " in line else [line]
        parts = [part + ":" for part in parts[:-1]] + parts[-1:]
        lines += [wrapped for part in parts
                  for wrapped in textwrap.wrap(part, chars, break_long_words=False, break_on_hyphens=False) or [""]]
    if len(lines) > 1:
        top = fig.layout.margin.t
        needed = 40 + round(1.3 * size * len(lines))  # the lines, and a gap above and below them
        fig.update_layout(title_text="<br>".join(lines), margin_t=max(top if top is not None else 100, needed))
    return fig


def layer_curves(table: pd.DataFrame, y: str, title: str, color: str = "model", x: str = "layer",
                 reference: float | None = None, reference_label: str = "", y_label: str | None = None) -> go.Figure:
    """One line per model (or any `color` column) across layers, shallow to deep."""
    fig = px.line(table, x=x, y=y, color=color if color in table else None, markers=True, title=title,
                  labels={y: y_label or y})
    fig.update_xaxes(type="category", tickangle=-45)
    if reference is not None:
        fig.add_hline(y=reference, line_dash="dash", annotation_text=reference_label)
    return readable_title(fig)


def cka_heatmap(table: pd.DataFrame, value: str = "cka", title: str = "linear CKA, layer x layer") -> go.Figure:
    """The layer x layer CKA matrix of two models (rows: model A's layers, columns: model B's)."""
    order_a = table.sort_values("depth_a")["layer_a"].unique()
    order_b = table.sort_values("depth_b")["layer_b"].unique()
    matrix = table.pivot(index="layer_a", columns="layer_b", values=value).loc[order_a, order_b]
    fig = px.imshow(matrix, zmin=0, zmax=1, color_continuous_scale="Viridis", origin="lower", title=title,
                    labels={"x": "fine-tuned layer", "y": "pretrained layer", "color": value})
    fig.update_layout(height=650, width=750)
    return readable_title(fig)


#: Pixels between two rows of a grid of images: room for the lower row's captions.
ROW_GAP = 28
#: The gap between two columns of a grid of images, as a fraction of the figure's width.
GRID_SPACING = 0.01


def gallery(paths: list[str | None], captions: list[str], title: str, columns: int = 5, thumb: int = 96) -> go.Figure:
    """Thumbnails of image files in a grid with a caption each (unreadable files show as grey, None as nothing)."""
    pictures: list[np.ndarray | None] = []
    for path in paths:
        if path is None:  # an empty cell, e.g. to start the next class on a new row
            pictures.append(None)
            continue
        try:
            img = load_rgb(path, max_side=thumb * 2)
            img.thumbnail((thumb, thumb))
            pictures.append(np.asarray(img))
        except ImageError:
            pictures.append(np.full((thumb, thumb, 3), 128, np.uint8))
    return image_grid(pictures, captions, title, columns)


def picture(pixels: np.ndarray, **trace: object) -> go.Image:
    """An image trace that shows H x W x 3 (or x 4) uint8 pixels as a PNG, losslessly: plotly.js draws a PNG as one
    picture, where pixels given as `z` are painted one by one (a gallery of 20 to 40 thumbnails draws 7 to 8 times
    faster in chromium, and a figure of paintings is a quarter to a third smaller; benchmarks/gallery_render.py).
    Hovering still shows a pixel's colour, read from the drawn picture."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise ValueError(f"an image to draw must be H x W x 3 or 4 uint8 pixels, not {pixels.dtype} {pixels.shape}")
    return go.Image(source=data_url(Image.fromarray(pixels), compress_level=1), **trace)


def data_url(image: Image.Image, format: str = "PNG", **options: object) -> str:
    """An image as a base64 data URL, to embed in a figure or a page: PNG is lossless, JPEG smaller (`quality=`);
    `options` go to PIL's `save`."""
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return f"data:image/{format.lower()};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_grid(images: list[np.ndarray | None], captions: list[str], title: str, columns: int = 5) -> go.Figure:
    """H x W x 3 uint8 images in a grid, a caption above each (None leaves its cell empty).

    The figure is make_subplots' grid (the same axes, domains and caption annotations), written out as one layout:
    building it through make_subplots and one update per image took 7 times as long, and explorers redraw galleries
    on every click. It is a plain Figure: make_subplots' row= and col= helpers do not apply to it."""
    rows = max(1, -(-len(images) // columns))
    height = 170 * rows + 80
    across, down = GRID_SPACING, ROW_GAP / height  # the same gap in pixels for 2 or 43 rows
    width, tall = (1 - across * (columns - 1)) / columns, (1 - down * (rows - 1)) / rows
    layout: dict = {"title": {"text": title}, "height": height, "margin": {"l": 10, "r": 10}, "annotations": []}
    for cell in range(rows * columns):
        row, column = divmod(cell, columns)
        left, bottom = column * (width + across), (rows - 1 - row) * (tall + down)  # as plotly: from the bottom
        n = "" if cell == 0 else str(cell + 1)  # plotly's axis names: x, x2, x3...
        layout[f"xaxis{n}"] = {"anchor": f"y{n}", "domain": [left, left + width], "visible": False}
        layout[f"yaxis{n}"] = {"anchor": f"x{n}", "domain": [bottom, bottom + tall], "visible": False}
        if cell < len(captions) and captions[cell]:  # make_subplots draws no empty title
            layout["annotations"].append({"text": html.escape(captions[cell]), "font": {"size": 10}, "showarrow": False,
                                          "x": left + width / 2, "xanchor": "center", "xref": "paper",
                                          "y": bottom + tall, "yanchor": "bottom", "yref": "paper"})
    data = [picture(pixels, xaxis=f"x{i + 1 if i else ''}", yaxis=f"y{i + 1 if i else ''}")
            for i, pixels in enumerate(images) if pixels is not None]
    return readable_title(go.Figure(data=data, layout=layout))


def write_plotlyjs(folder: str | Path) -> Path:
    """plotly.min.js beside the HTML pages, so they open offline (written once per folder, atomically)."""
    from plotly.offline import get_plotlyjs

    target = Path(folder) / "plotly.min.js"
    if not target.is_file():
        write_text(target, get_plotlyjs())
    return target


def write_figure(fig: go.Figure, path: str | Path) -> Path:
    """A plotly figure as an HTML page that works offline (plotly.min.js beside it), written atomically."""
    path = Path(path)
    write_plotlyjs(path.parent)
    write_text(path, fig.to_html(include_plotlyjs="plotly.min.js"))
    return path


def write_html_report(path: str | Path, title: str, sections: list[tuple[str, object]]) -> Path:
    """One HTML page of (heading, plotly figure | DataFrame | text) sections, written atomically.

    The page loads plotly.min.js from its own folder, so it opens without a network.
    """
    write_plotlyjs(Path(path).parent)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<script src='plotly.min.js'></script>",
             "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse;"
             "font-size:12px}td,th{padding:2px 6px;border-bottom:1px solid #ddd}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    for heading, content in sections:
        if heading:  # figures carry their own title
            parts.append(f"<h2>{html.escape(heading)}</h2>")
        if isinstance(content, go.Figure):
            parts.append(content.to_html(full_html=False, include_plotlyjs=False))
        elif isinstance(content, pd.DataFrame):
            parts.append(content.to_html(index=False, float_format=lambda v: f"{v:.4g}"))
        else:
            parts.append(f"<p>{html.escape(str(content))}</p>")
    parts.append("</body></html>")
    write_text(path, "\n".join(parts))
    return Path(path)


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (pandas' own needs the optional tabulate package)."""
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def image_overlays(panels: list[tuple[np.ndarray, np.ndarray, str]], title: str = "", opacity: float = 0.5,
                   colorscale: str = "Inferno", zmid: float | None = None, zmin: float | None = None,
                   zmax: float | None = None, columns: int | None = None) -> go.Figure:
    """Images (H x W x 3 uint8) side by side, each with a same-sized heatmap on top at `opacity`, and a caption.

    The heatmaps share one colour scale and colour bar; pass `zmin`/`zmax` (or `zmid` for signed maps)
    to fix its range.
    """
    columns = columns or len(panels)
    rows = max(1, -(-len(panels) // columns))
    height = 320 * rows + 80
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=[html.escape(caption) for _, _, caption in panels],
                        horizontal_spacing=0.02, vertical_spacing=2 * ROW_GAP / height)
    for i, (pixels, heat, _) in enumerate(panels):
        if heat.shape != pixels.shape[:2]:
            raise ValueError(f"heatmap {heat.shape} and image {pixels.shape[:2]} differ in size")
        row, col = i // columns + 1, i % columns + 1
        fig.add_trace(picture(pixels, hoverinfo="skip"), row=row, col=col)
        fig.add_trace(go.Heatmap(z=heat, colorscale=colorscale, zmid=zmid, zmin=zmin, zmax=zmax, opacity=opacity,
                                 showscale=i == 0, hovertemplate="x %{x}, y %{y}: %{z:.3g}<extra></extra>"),
                      row=row, col=col)
        x_axis = fig.get_subplot(row, col).xaxis.plotly_name.replace("axis", "")
        fig.update_yaxes(scaleanchor=x_axis, row=row, col=col)  # square pixels in every panel
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, autorange="reversed", constrain="domain")
    fig.update_layout(title=title, height=height, width=max(420, 320 * columns + 100),
                      margin={"l": 10, "r": 10})
    fig.update_annotations(font_size=11)
    return readable_title(fig)
