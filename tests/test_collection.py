"""ArtCollection builders, filtering, splitting and summaries, checked against counts made by hand."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from artlab.data import from_folders, from_manifest, from_peopleart, from_wikiart, load


def _image(path: Path, colour=(90, 60, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 9), colour).save(path)


def test_folder_per_class_with_split_folders(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for label in ("portrait", "landscape"):
            for i in range(n):
                _image(tmp_path / split / label / f"{label}_{i}.jpg")
    collection = from_folders(tmp_path, task="genre")
    assert len(collection) == 10 and collection.classes("genre") == ["landscape", "portrait"]
    assert Counter(collection.table["split"]) == {"train": 6, "test": 4}


def test_wikiart_layout_gives_style_artist_and_split(tmp_path):
    _image(tmp_path / "train" / "Cubism" / "pablo-picasso_guitar-1913.jpg")
    _image(tmp_path / "train" / "Cubism" / "georges-braque_violin_and_jug.jpg")
    _image(tmp_path / "val" / "Impressionism" / "claude-monet_water-lilies.jpg")
    table = from_wikiart(tmp_path).table.sort_values("path")
    assert table["style"].tolist() == ["Cubism", "Cubism", "Impressionism"]
    assert table["artist"].tolist() == ["georges-braque", "pablo-picasso", "claude-monet"]
    assert table["split"].tolist() == ["train", "train", "val"]


def test_manifest_multi_label_with_separator_and_missing_file(tmp_path):
    for name in ("a.jpg", "b.jpg"):
        _image(tmp_path / "img" / name)
    (tmp_path / "rijks.tsv").write_text("image\tartist\tmaterial\n"
                                        "img/a.jpg\tRembrandt\tpaper;ink\n"
                                        "img/missing.jpg\tBol\tcanvas\n"
                                        "img/b.jpg\tBol\tcanvas\n")
    collection = from_manifest(tmp_path / "rijks.tsv", ["artist", "material"], separator=";")
    assert len(collection) == 2 and collection.multi_label == {"artist": True, "material": True}
    assert collection.table["material"].tolist() == [("paper", "ink"), ("canvas",)]
    assert collection.targets("material").tolist() == [[0, 1, 1], [1, 0, 0]]  # classes: canvas, ink, paper
    assert len(collection.skipped) == 1
    assert "rijks.tsv row 3" in collection.skipped["reason"][0]


def test_manifest_one_hot_columns(tmp_path):
    for name in ("x.png", "y.png"):
        _image(tmp_path / name)
    (tmp_path / "iconart.csv").write_text("item,angel,Mary,set\nx.png,1,0,train\ny.png,1,1,test\n")
    collection = from_manifest(tmp_path / "iconart.csv", one_hot={"iconography": ["angel", "Mary"]},
                               split_column="set")
    assert collection.table["iconography"].tolist() == [("angel",), ("angel", "Mary")]
    assert collection.table["split"].tolist() == ["train", "test"]
    assert collection.counts("iconography").to_dict() == {"angel": 2, "Mary": 1}


def test_manifest_errors_name_the_problem(tmp_path):
    _image(tmp_path / "x.png")
    (tmp_path / "m.csv").write_text("path,style\nx.png,Baroque\n")
    with pytest.raises(KeyError, match="no column.*'genre'.*path.*style"):
        from_manifest(tmp_path / "m.csv", ["genre"])
    (tmp_path / "bad.csv").write_text("path,angel\nx.png,maybe\n")
    with pytest.raises(ValueError, match="bad.csv row 2, column 'angel'"):
        from_manifest(tmp_path / "bad.csv", one_hot={"icons": ["angel"]})


def test_filter_against_hand_counts(small_synthetic):
    by_artist = Counter(small_synthetic.table["artist"])
    # drop a few images of one artist so that class sizes differ
    victim = sorted(by_artist)[0]
    drop = small_synthetic.table.index[small_synthetic.table["artist"] == victim][:4]
    collection = small_synthetic.subset(~small_synthetic.table.index.isin(drop))
    kept = collection.filter("artist", min_images=6)
    assert victim not in kept.classes("artist") and len(kept) == len(collection) - 2
    top = collection.filter("style", top_n=3)
    expected = [c for c, _ in sorted(Counter(collection.table["style"]).items(), key=lambda kv: -kv[1])[:3]]
    assert set(top.classes("style")) == set(expected)


def test_split_is_deterministic_stratified_and_complete(small_synthetic):
    a = small_synthetic.split(val=0.2, test=0.2, task="style", seed=3)
    b = small_synthetic.split(val=0.2, test=0.2, task="style", seed=3)
    c = small_synthetic.split(val=0.2, test=0.2, task="style", seed=4)
    assert a.table["split"].tolist() == b.table["split"].tolist()
    assert a.table["split"].tolist() != c.table["split"].tolist()
    assert set(a.table["split"]) == {"train", "val", "test"}
    per_class = a.table.groupby("style")["split"].value_counts().unstack()
    n = len(small_synthetic) / 8  # 18 images per style
    assert (abs(per_class["test"] - 0.2 * n) <= 1).all() and (abs(per_class["val"] - 0.2 * n) <= 1).all()


def test_a_split_drawn_before_comes_from_the_cache_without_scikit_learn(small_synthetic, tmp_path, monkeypatch):
    """A drawn split is kept in the cache under everything it depends on: in a fresh process it comes back the
    same without importing scikit-learn (a notebook reusing a finished run); another seed or fraction is drawn
    anew, and a damaged entry is drawn again, the same."""
    import subprocess
    import sys
    import warnings

    monkeypatch.setenv("ARTLAB_CACHE", str(tmp_path / "cache"))
    manifest = small_synthetic.root / "manifest.csv"
    drawn = load(str(manifest)).split(0.2, 0.2, "style", seed=3).table["split"].tolist()
    entries = sorted((tmp_path / "cache" / "splits").iterdir())
    assert len(entries) == 2  # test from the whole, then val from the rest
    code = ("import sys\nfrom artlab.data import load\n"
            f"split = load({str(manifest)!r}).split(0.2, 0.2, 'style', seed=3).table['split'].tolist()\n"
            "print(split)\nprint('sklearn' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "ARTLAB_CACHE": str(tmp_path / "cache")})
    assert done.stdout.splitlines()[-2:] == [str(drawn), "False"], done.stdout[-500:] + done.stderr[-500:]
    assert load(str(manifest)).split(0.2, 0.2, "style", seed=4).table["split"].tolist() != drawn
    assert load(str(manifest)).split(0.3, 0.2, "style", seed=3).table["split"].tolist() != drawn
    assert len(list((tmp_path / "cache" / "splits").iterdir())) == 5  # the other fraction shares the test split
    entries[0].write_bytes(b"not a split")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        again = load(str(manifest)).split(0.2, 0.2, "style", seed=3).table["split"].tolist()
    assert again == drawn and any("damaged" in str(w.message) for w in said)
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("ARTLAB_CACHE", str(tmp_path / "not-a-folder"))  # nowhere to write: drawn all the same
    assert load(str(manifest)).split(0.2, 0.2, "style", seed=3).table["split"].tolist() == drawn


def test_existing_split_is_kept_and_val_carved_from_train(tmp_path):
    for i in range(20):
        _image(tmp_path / ("train" if i < 15 else "test") / ("a" if i % 2 else "b") / f"{i}.jpg")
    collection = from_folders(tmp_path).split(val=0.2, task="label")
    counts = Counter(collection.table["split"])
    assert counts == {"train": 12, "val": 3, "test": 5}


def test_summary_and_chart_match_counts(small_synthetic):
    collection = small_synthetic.split(task="medium", seed=0)
    summary = collection.summary("medium")
    hand = Counter(zip(collection.table["medium"], collection.table["split"]))
    for (medium, split), n in hand.items():
        assert summary.loc[medium, split] == n
    assert summary["total"].sum() == len(collection)
    fig = collection.class_chart("medium")
    assert sum(sum(trace.y) for trace in fig.data) == len(collection)


def test_synthetic_is_seed_deterministic(tmp_path):
    from artlab.data.synthetic import generate

    first = generate(tmp_path / "one", per_artist=1, size=64, seed=7)
    second = generate(tmp_path / "two", per_artist=1, size=64, seed=7)
    other = generate(tmp_path / "three", per_artist=1, size=64, seed=8)
    names = sorted(p.relative_to(first.parent) for p in first.parent.rglob("*.png"))
    assert len(names) == 24
    same = [np.array_equal(np.asarray(Image.open(first.parent / n)), np.asarray(Image.open(second.parent / n)))
            for n in names]
    differ = [not np.array_equal(np.asarray(Image.open(first.parent / n)), np.asarray(Image.open(other.parent / n)))
              for n in names]
    assert all(same) and all(differ)
    assert first.read_text() == second.read_text()


def test_a_collection_finished_meanwhile_is_kept_and_another_one_replaced(tmp_path):
    """Two processes generating the same collection: the second keeps the files of the first, which may be read; a
    collection with other parameters asked at the same place replaces it."""
    from artlab.data.synthetic import generate, synthetic_manifest

    first = generate(tmp_path / "one", per_artist=1, size=32)
    files = {path: path.stat().st_ino for path in first.parent.rglob("*.png")}
    assert generate(tmp_path / "one", per_artist=1, size=32) == first
    assert {path: path.stat().st_ino for path in first.parent.rglob("*.png")} == files
    assert [path.name for path in tmp_path.iterdir()] == ["one"]  # its own copy dropped
    other = generate(tmp_path / "one", per_artist=1, size=48)  # another collection asked there: it replaces the first
    assert {Image.open(path).size for path in other.parent.rglob("*.png")} == {(48, 48)}
    assert [path.name for path in tmp_path.iterdir()] == ["one"]
    assert synthetic_manifest(per_artist=1, size=32, root=tmp_path / "one") == first  # asked again: made again
    assert {Image.open(path).size for path in first.parent.rglob("*.png")} == {(32, 32)}


def test_a_place_that_cannot_take_the_collection_raises_and_leaves_no_half_copy(tmp_path):
    """A file where the collection's folder should go is neither a collection nor a folder to replace: generating
    there fails with the system's error, and the copy made beside it is removed."""
    from artlab.data.synthetic import generate

    (tmp_path / "one").write_text("not a folder")
    with pytest.raises(OSError):
        generate(tmp_path / "one", per_artist=1, size=32)
    assert [path.name for path in tmp_path.iterdir()] == ["one"] and (tmp_path / "one").read_text() == "not a folder"


def test_synthetic_tasks(small_synthetic):
    assert small_synthetic.tasks == ["style", "artist", "medium"]
    assert len(small_synthetic.classes("style")) == 8 and len(small_synthetic.classes("artist")) == 24
    assert small_synthetic.classes("medium") == ["oil", "print", "watercolour"]
    assert load("synthetic", per_artist=6, size=96).table.equals(small_synthetic.table)


def test_peopleart(peopleart_dir):
    collection = from_peopleart(peopleart_dir)
    table = collection.table
    assert len(collection) == 4778 and len(collection.classes("style")) == 43
    assert collection.counts("style")["Impressionism"] == 240
    assert table["artist"].nunique() == 748
    assert (collection.counts("artist") >= 30).sum() == 29
    listed = table["split"].notna()
    assert listed.sum() == 4623 and (table["person"].notna() == listed).all()
    # cross-check with the annotation file itself
    test_lines = (peopleart_dir / "annotations" / "person_test.txt").read_text().split()
    assert (table["split"] == "test").sum() == len(test_lines) // 2
    assert set(table.loc[listed, "split"]) == {"train", "val", "test"}


def test_genres_folder_collection(genres_dir):
    collection = load(genres_dir).check_images()
    assert collection.counts("label").to_dict() == {"portrait": 235, "stillife": 228, "genre": 220, "history": 209,
                                                     "landscape": 196}
    assert len(collection.skipped) == 0
    files = collection.image_summary().set_index("statistic")["value"]
    assert files["extension differs from content"] == 71 + 43 + 7  # the README's PNG, WebP and GIF named .jpg
