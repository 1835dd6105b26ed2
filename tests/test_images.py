"""Images are read by content, upright, as RGB; broken files are skipped and reported, never crash."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from artlab.data import ImageError, from_folders, load_rgb, scan


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_bomb(path: Path, side: int = 100_000) -> None:
    """A valid PNG header declaring side x side pixels (10 gigapixels) with almost no data behind it."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) \
        + _png_chunk(b"IEND", b"")
    path.write_bytes(png)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_opens_by_content_whatever_the_extension(tmp_path, fmt):
    Image.new("RGB", (20, 10), (200, 30, 40)).save(tmp_path / "art.jpg", format=fmt)
    img = load_rgb(tmp_path / "art.jpg")
    assert img.mode == "RGB" and img.size == (20, 10)
    r, g, b = img.getpixel((5, 5))
    assert abs(r - 200) < 12 and abs(g - 30) < 12 and abs(b - 40) < 12


def test_exif_orientation_is_applied(tmp_path):
    # A 30x10 picture, left third red, stored with EXIF orientation 6 ("rotate 90 clockwise to view").
    arr = np.zeros((10, 30, 3), np.uint8)
    arr[:, :10] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    img = load_rgb(tmp_path / "rotated.jpg")
    assert img.size == (10, 30)  # upright: portrait
    top = np.asarray(img)[:8].mean(axis=(0, 1))  # the red third is now at the top
    assert top[0] > 200 and top[1] < 60


def test_palette_and_grey_with_alpha(tmp_path):
    Image.new("RGB", (8, 8), (10, 120, 250)).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")
    assert np.allclose(np.asarray(load_rgb(tmp_path / "p.png"))[0, 0], (10, 120, 250), atol=8)
    la = Image.new("LA", (4, 4), (0, 0))  # black, fully transparent -> white
    la.save(tmp_path / "la.png")
    assert tuple(np.asarray(load_rgb(tmp_path / "la.png"))[0, 0]) == (255, 255, 255)


def test_rgba_is_laid_on_white(tmp_path):
    arr = np.zeros((2, 3, 4), np.uint8)
    arr[0, 0] = (255, 0, 0, 255)  # opaque red
    arr[0, 1] = (0, 0, 0, 0)  # transparent
    arr[0, 2] = (0, 0, 0, 128)  # half-transparent black
    Image.fromarray(arr, "RGBA").save(tmp_path / "rgba.png")
    out = np.asarray(load_rgb(tmp_path / "rgba.png")).astype(int)
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[0, 1]) == (255, 255, 255)
    assert np.all(np.abs(out[0, 2] - 127) <= 1)


def test_sixteen_bit_is_rescaled_not_clipped(tmp_path):
    arr = np.array([[0, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "deep.png")  # a 16-bit greyscale PNG
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    out = np.asarray(load_rgb(tmp_path / "deep.png"))[0, :, 0]
    assert out.tolist() == [0, 128, 255]


def test_cmyk(tmp_path):
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")  # pure red in CMYK
    r, g, b = np.asarray(load_rgb(tmp_path / "cmyk.jpg"))[1, 1].astype(int)
    assert r > 200 and g < 60 and b < 60


def _broken_files(folder: Path) -> dict[str, str]:
    """One file of each kind of breakage, in a class folder; returns name -> expected reason fragment."""
    good = folder / "ok"
    bad = folder / "bad"
    good.mkdir(parents=True)
    bad.mkdir()
    for i in range(3):
        Image.new("RGB", (16, 16), (i * 60, 0, 0)).save(good / f"fine_{i}.jpg")
    Image.new("RGB", (64, 64), (1, 2, 3)).save(folder / "full.jpg", quality=95)
    data = (folder / "full.jpg").read_bytes()
    (bad / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "full.jpg").unlink()
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "notes.jpg").write_text("this is a catalogue note, not an image")
    write_bomb(bad / "bomb.png")
    return {"truncated.jpg": "truncated", "empty.jpg": "empty", "notes.jpg": "not an image", "bomb.png": "bomb"}


@pytest.mark.parametrize("name", ["truncated.jpg", "empty.jpg", "notes.jpg", "bomb.png"])
def test_each_broken_file_raises_a_named_error(tmp_path, name):
    expected = _broken_files(tmp_path)
    with pytest.raises(ImageError) as info:
        load_rgb(tmp_path / "bad" / name)
    assert expected[name] in info.value.reason
    assert name in str(info.value)


def test_broken_files_are_skipped_listed_and_counted(tmp_path):
    expected = _broken_files(tmp_path)
    collection = from_folders(tmp_path).check_images()
    assert len(collection) == 3 and set(collection.table["label"]) == {"ok"}
    reasons = {Path(p).name: r for p, r in zip(collection.skipped["path"], collection.skipped["reason"])}
    assert set(reasons) == set(expected)
    for name, fragment in expected.items():
        assert fragment in reasons[name]
    assert collection.image_summary().set_index("statistic").loc["skipped files", "value"] == 4


def test_real_genres_collection_formats_by_content(genres_dir):
    paths = sorted(str(p) for p in genres_dir.rglob("*") if p.is_file())
    info = scan(paths)
    assert info["error"].isna().all(), info[info["error"].notna()]
    named_jpeg = info["path"].str.lower().str.endswith((".jpg", ".jpeg"))
    counts = info.loc[named_jpeg, "format"].value_counts().to_dict()
    # The collection's README: named .jpg/.jpeg/.JPG, but by content 71 are PNG, 43 WebP and 7 GIF.
    assert counts.get("PNG") == 71 and counts.get("WEBP") == 43 and counts.get("GIF") == 7
    for path in info.loc[info["format"] != "JPEG", "path"].head(20):
        assert load_rgb(path).mode == "RGB"


def test_scan_results_are_cached_and_invalidated_by_edits(tmp_path, monkeypatch):
    import artlab.data.images as images

    for i in range(3):
        Image.new("RGB", (10 + i, 8), (i, 0, 0)).save(tmp_path / f"{i}.png")
    (tmp_path / "3.png").write_text("not an image")
    paths = sorted(str(p) for p in tmp_path.glob("*.png"))
    first = scan(paths)
    assert first["path"].tolist() == paths  # checked on several threads, reported in the collection's order

    def must_not_decode(*args, **kwargs):
        raise AssertionError("decoded again although the scan was cached")

    with monkeypatch.context() as patch:
        patch.setattr(images, "inspect", must_not_decode)
        again = scan(paths)
    assert again["width"].tolist()[:3] == [10, 11, 12] and again["error"].notna().tolist() == [False] * 3 + [True]
    assert again["error"].iloc[3] == first["error"].iloc[3]
    Image.new("RGB", (30, 8)).save(tmp_path / "0.png")  # an edited file is decoded again
    assert scan(paths)["width"].iloc[0] == 30


def test_the_threaded_check_refuses_every_image_above_the_pixel_limit_whatever_the_warning_filters(tmp_path):
    import warnings

    import artlab.data.images as images

    for i in range(24):  # 100 megapixels: above PIL's warning (89 M), below its error (179 M)
        write_bomb(tmp_path / f"bomb{i:02}.png", side=10_000)
        Image.new("RGB", (12, 9), (i, 0, 0)).save(tmp_path / f"fine{i:02}.png")
    paths = sorted(str(p) for p in tmp_path.glob("*.png"))
    for action in ("default", "error"):  # PIL's warning printed, or raised (python -W error)
        with warnings.catch_warnings():
            warnings.simplefilter(action)
            info = images._scan(paths)
        bombs = info["path"].str.contains("bomb")
        assert info.loc[bombs, "error"].str.startswith("decompression bomb").all(), info.loc[bombs, "error"].tolist()
        assert info.loc[~bombs, "error"].isna().all() and info["path"].tolist() == paths


def test_a_file_gone_since_the_listing_is_reported_not_raised(tmp_path):
    Image.new("RGB", (12, 9)).save(tmp_path / "here.png")
    info = scan([str(tmp_path / "here.png"), str(tmp_path / "gone.png")])
    assert info["error"].isna().tolist() == [True, False] and info["error"].iloc[1] == "file not found"


def test_opening_an_image_never_swaps_the_warning_filters(tmp_path, monkeypatch):
    """The filters are the whole process's, and images are opened on threads while other code runs (the image check,
    batches read ahead): a `catch_warnings` there would leave another thread's filters in place, or drop them."""
    import warnings

    import artlab.data.images as images

    Image.new("RGB", (12, 9)).save(tmp_path / "a.png")
    seen, open_image = [], Image.open
    monkeypatch.setattr(images.Image, "open", lambda *a, **k: seen.append(warnings.filters) or open_image(*a, **k))
    before = warnings.filters
    load_rgb(tmp_path / "a.png")
    images.inspect(tmp_path / "a.png")
    assert len(seen) == 2 and all(filters is before for filters in seen)
