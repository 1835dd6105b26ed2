"""The embedded default: a procedural, seed-deterministic "art" collection.

Eight styles (pointillism, cubism, colour field, drip, op art, Mondrian grid, ukiyo-e, impressionism),
three artists per style (a palette and a family of parameters, with overlap, so artists are
learnable but not trivially), and three media laid over the picture (oil impasto, watercolour
bleed, print halftone), drawn independently of style. Tasks: style, artist, medium.
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from artlab.cache import cache_dir

STYLES = ("pointillism", "cubism", "colour_field", "drip", "op_art", "mondrian", "ukiyo_e", "impressionism")
MEDIA = ("oil", "watercolour", "print")
ARTISTS_PER_STYLE = 3
Palette = list[tuple[int, int, int]]
GENERATOR_VERSION = 1


def _palette(rng: np.random.Generator, hue: float, spread: float, sat: float, n: int = 5) -> Palette:
    """`n` colours around a base hue; artists differ by `hue`, `spread` and `sat`, jittered per image."""
    hue = hue + rng.normal(0, 0.035)
    colours = []
    for _ in range(n):
        h = (hue + rng.uniform(-spread, spread)) % 1.0
        s = float(np.clip(sat + rng.normal(0, 0.12), 0.05, 1))
        v = float(rng.uniform(0.35, 0.98))
        colours.append(tuple(int(255 * c) for c in colorsys.hsv_to_rgb(h, s, v)))
    return colours


def _artist_params(style: int, artist: int) -> dict:
    """A family of parameters per artist: base hue, hue spread, saturation and a style knob in [0, 1]."""
    r = np.random.default_rng(1000 + 10 * style + artist)
    return {"hue": r.uniform(0, 1), "spread": r.uniform(0.04, 0.25), "sat": r.uniform(0.35, 0.9),
            "knob": (artist + 0.5) / ARTISTS_PER_STYLE}


def _jitter(rng: np.random.Generator, knob: float, width: float = 0.22) -> float:
    """The artist's knob, blurred so neighbouring artists overlap."""
    return float(np.clip(knob + rng.normal(0, width), 0, 1))


def _pointillism(img: Image.Image, rng: np.random.Generator, size: int, pal: Palette, k: float) -> Image.Image | None:
    draw = ImageDraw.Draw(img)
    bands = rng.uniform(0.2, 0.8, 2) * size
    radius = 1.5 + 3 * k
    for _ in range(int(size * size / (radius * radius * 2.2))):
        x, y = rng.uniform(0, size, 2)
        region = int(y > bands[0]) + int(y > bands[1])
        colour = pal[(region + int(rng.integers(0, 2))) % len(pal)]
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour)


def _cubism(img: Image.Image, rng: np.random.Generator, size: int, pal: Palette, k: float) -> Image.Image | None:
    draw = ImageDraw.Draw(img)
    points = rng.uniform(-0.1, 1.1, (int(12 + 30 * k), 2)) * size
    for _ in range(int(25 + 40 * k)):
        tri = points[rng.choice(len(points), 3, replace=False)]
        draw.polygon([tuple(p) for p in tri], fill=pal[int(rng.integers(len(pal)))], outline=(30, 25, 20),
                     width=max(1, int(1 + 2 * (1 - k))))


def _colour_field(img: Image.Image, rng: np.random.Generator, size: int, pal: Palette, k: float) -> Image.Image | None:
    draw = ImageDraw.Draw(img)
    n = 2 + int(round(2 * k))
    margin = size * rng.uniform(0.05, 0.12)
    heights = rng.uniform(0.6, 1.4, n)
    edges = margin + np.concatenate([[0], np.cumsum(heights) / heights.sum()]) * (size - 2 * margin)
    for i in range(n):
        draw.rectangle([margin, edges[i] + 2, size - margin, edges[i + 1] - 2], fill=pal[(i + 1) % len(pal)])


def _drip(img: Image.Image, rng: np.random.Generator, size: int, pal: Palette, k: float) -> Image.Image | None:
    draw = ImageDraw.Draw(img)
    for _ in range(int(15 + 40 * k)):
        x, y = rng.uniform(0, size, 2)
        points = [(x, y)]
        for _ in range(int(rng.integers(10, 40))):
            x, y = x + rng.normal(0, size * 0.06), y + rng.normal(0, size * 0.06)
            points.append((x, y))
        draw.line(points, fill=pal[int(rng.integers(len(pal)))], width=int(rng.integers(1, 2 + int(4 * (1 - k)))))


def _op_art(img: Image.Image, rng: np.random.Generator, size: int, pal: Palette, k: float) -> Image.Image | None:
    yy, xx = np.mgrid[0:size, 0:size] / size
    freq = 8 + 22 * k
    warp = rng.uniform(0.02, 0.12) * np.sin(2 * np.pi * (yy * rng.uniform(1, 3) + rng.uniform()))
    angle = rng.uniform(0, np.pi)
    phase = (np.cos(angle) * xx + np.sin(angle) * yy + warp) * freq
    stripes = (np.sin(2 * np.pi * phase) > 0)[..., None]
    a, b = np.array(pal[0]), np.array(pal[-1]) // 4
    return Image.fromarray(np.where(stripes, a, b).astype(np.uint8))


def _mondrian(img: Image.Image, rng: np.random.Generator, size: int, pal: Palette, k: float) -> Image.Image | None:
    draw = ImageDraw.Draw(img)
    primaries = [(220, 30, 30), (30, 60, 180), (240, 210, 40)]
    colours = [primaries[i % 3] if rng.uniform() < 0.7 else pal[i % len(pal)] for i in range(3)]
    cells = [(0.0, 0.0, float(size), float(size))]
    for _ in range(int(3 + 6 * k)):
        x0, y0, x1, y1 = cells.pop(int(rng.integers(len(cells))))
        if (x1 - x0) > (y1 - y0):
            cut = rng.uniform(x0 + (x1 - x0) * 0.25, x1 - (x1 - x0) * 0.25)
            cells += [(x0, y0, cut, y1), (cut, y0, x1, y1)]
        else:
            cut = rng.uniform(y0 + (y1 - y0) * 0.25, y1 - (y1 - y0) * 0.25)
            cells += [(x0, y0, x1, cut), (x0, cut, x1, y1)]
    line = int(2 + 3 * (1 - k))
    for x0, y0, x1, y1 in cells:
        fill = colours[int(rng.integers(3))] if rng.uniform() < 0.35 else (245, 242, 230)
        draw.rectangle([x0, y0, x1, y1], fill=fill, outline=(15, 15, 15), width=line)


def _ukiyo_e(img: Image.Image, rng: np.random.Generator, size: int, pal: Palette, k: float) -> Image.Image | None:
    draw = ImageDraw.Draw(img)
    sky = pal[0]
    draw.rectangle([0, 0, size, size], fill=tuple(min(255, c + 60) for c in sky))
    xs = np.linspace(0, size, 64)
    for layer in range(int(2 + 3 * k)):
        base = size * (0.35 + 0.15 * layer)
        amp, freq, phase = size * rng.uniform(0.04, 0.12), rng.uniform(1, 4), rng.uniform(0, 6.3)
        ys = base + amp * np.sin(freq * 2 * np.pi * xs / size + phase)
        poly = [(0, size)] + list(zip(xs, ys)) + [(size, size)]
        draw.polygon(poly, fill=pal[(layer + 1) % len(pal)], outline=(20, 20, 40), width=2)
    cx, cy, r = rng.uniform(0.2, 0.8) * size, rng.uniform(0.1, 0.3) * size, size * 0.08
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(200, 40, 30), outline=(20, 20, 40), width=2)


def _impressionism(img: Image.Image, rng: np.random.Generator, size: int, pal: Palette, k: float) -> Image.Image | None:
    draw = ImageDraw.Draw(img)
    length = 3 + 8 * k
    angle0 = rng.uniform(0, np.pi)
    for _ in range(int(size * size / (length * 3))):
        x, y = rng.uniform(0, size, 2)
        angle = angle0 + rng.normal(0, 0.5) + np.pi * y / size
        dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
        colour = pal[int((y / size) * (len(pal) - 1) + rng.normal(0, 0.8)) % len(pal)]
        draw.line([(x - dx, y - dy), (x + dx, y + dy)], fill=colour, width=2)


PAINTERS = {"pointillism": _pointillism, "cubism": _cubism, "colour_field": _colour_field, "drip": _drip,
            "op_art": _op_art, "mondrian": _mondrian, "ukiyo_e": _ukiyo_e, "impressionism": _impressionism}


def _medium(img: Image.Image, medium: str, rng: np.random.Generator) -> Image.Image:
    """Lay a material over the picture: impasto relief, watercolour bleed or a halftone print screen."""
    arr = np.asarray(img, dtype=np.float32)
    size = arr.shape[0]
    if medium == "oil":
        noise = np.asarray(Image.fromarray((rng.uniform(0, 255, (size, size))).astype(np.uint8))
                           .filter(ImageFilter.GaussianBlur(1.2)), dtype=np.float32)
        relief = np.gradient(noise, axis=1) + np.gradient(noise, axis=0)
        arr = arr * 1.05 + relief[..., None] * 6
    elif medium == "watercolour":
        blurred = np.asarray(img.filter(ImageFilter.GaussianBlur(2.0)), dtype=np.float32)
        edges = np.abs(arr - blurred).sum(axis=2, keepdims=True)
        paper = rng.normal(0, 6, (size, size, 1))
        arr = 0.55 * blurred + 0.45 * 255 - 0.25 * edges + paper
    else:  # print: a halftone screen and a posterised palette
        yy, xx = np.mgrid[0:size, 0:size]
        screen = (np.cos(2 * np.pi * xx / 4) * np.cos(2 * np.pi * yy / 4) + 1) * 0.5
        levels = np.round(arr / 85) * 85
        arr = levels * (0.75 + 0.25 * screen[..., None])
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def render(style: str, artist: int, medium: str, seed: int, size: int = 160) -> Image.Image:
    """One artwork, fully determined by its arguments."""
    s = STYLES.index(style)
    params = _artist_params(s, artist)
    rng = np.random.default_rng([seed, s, artist, MEDIA.index(medium)])
    pal = _palette(rng, params["hue"], params["spread"], params["sat"])
    knob = _jitter(rng, params["knob"])
    img = Image.new("RGB", (size, size), tuple(min(255, c + 40) for c in pal[-1]))
    painted = PAINTERS[style](img, rng, size, pal, knob)  # draws on img, or returns a new picture
    return _medium(painted or img, medium, rng)


def artist_name(style: str, artist: int) -> str:
    """The artist label, e.g. "cubism_b"."""
    return f"{style}_{'abc'[artist]}"


def generate(root: str | Path, per_artist: int = 20, size: int = 160, seed: int = 0) -> Path:
    """Write the collection (PNG files + manifest.csv) to `root` atomically; returns the manifest path. The same
    collection finished there meanwhile by another process is kept (its files may be being read), this copy dropped;
    anything else at `root` is replaced, under any reader (the cache's folders are named by their parameters)."""
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=root.parent))
    rows = ["path,style,artist,medium"]
    medium_rng = np.random.default_rng(seed)
    for style in STYLES:
        (tmp / style).mkdir()
        for artist in range(ARTISTS_PER_STYLE):
            for i in range(per_artist):
                medium = MEDIA[int(medium_rng.integers(len(MEDIA)))]
                name = f"{style}/{artist_name(style, artist)}_{i:03d}.png"
                # PNG's fastest compression: the same pixels, written faster (new bytes: caches miss once)
                render(style, artist, medium, seed * 100_003 + i, size).save(tmp / name, compress_level=1)
                rows.append(f"{name},{style},{artist_name(style, artist)},{medium}")
    (tmp / "manifest.csv").write_text("\n".join(rows) + "\n")
    params = _params(per_artist, size, seed)
    (tmp / "params.json").write_text(json.dumps(params))
    if root.exists() and not _holds(root, params):  # another collection, or a folder not made here
        shutil.rmtree(root, ignore_errors=True)
    try:
        os.replace(tmp, root)
    except OSError:  # a non-empty folder is there: the same collection, finished meanwhile by another process
        shutil.rmtree(tmp, ignore_errors=True)
        if not _holds(root, params):
            raise
    return root / "manifest.csv"


def _params(per_artist: int, size: int, seed: int) -> dict:
    """What a collection is generated with, as its params.json records it."""
    return {"per_artist": per_artist, "size": size, "seed": seed, "version": GENERATOR_VERSION}


def _holds(root: Path, params: dict) -> bool:
    """Whether `root` holds the whole collection generated with `params` (its folder appears in one rename)."""
    try:
        return (root / "manifest.csv").is_file() and json.loads((root / "params.json").read_text()) == params
    except (OSError, ValueError):
        return False


def synthetic_manifest(per_artist: int = 20, size: int = 160, seed: int = 0, root: str | Path | None = None) -> Path:
    """The manifest of the generated collection (cached under artlab's cache), generated when the folder does not
    hold it: on first use, or where another collection or a damaged one is."""
    key = hashlib.sha1(f"{per_artist}-{size}-{seed}-{GENERATOR_VERSION}".encode()).hexdigest()[:10]
    root = Path(root) if root is not None else cache_dir() / "synthetic" / key
    if not _holds(root, _params(per_artist, size, seed)):
        generate(root, per_artist, size, seed)
    return root / "manifest.csv"
