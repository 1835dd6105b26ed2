"""Collections as their publishers ship them: class folders, WikiArt/RASTA, CSV manifests, People-Art.

`load(source)` recognises the layout; each `from_*` builder reads one layout into an ArtCollection.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import replace
from pathlib import Path

import pandas as pd

from artlab.data.collection import SPLITS, ArtCollection
from artlab.data.synthetic import synthetic_manifest

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
MANIFEST_SUFFIXES = {".csv", ".tsv", ".txt"}
LAYOUTS = ("auto", "folders", "wikiart", "manifest", "peopleart", "synthetic")


def _image_files(folder: Path) -> tuple[list[Path], pd.DataFrame]:
    """The image files under `folder`, and the image-named links to nothing there (as skipped rows)."""
    files, broken = [], []
    for path in folder.rglob("*"):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.is_file():
            files.append(path)
        elif path.is_symlink() and not path.exists():  # its target is gone (or it points at itself)
            broken.append({"path": str(path), "reason": _broken_link(path)})
    return sorted(files), pd.DataFrame(broken, columns=["path", "reason"]).sort_values("path", ignore_index=True)


def _broken_link(path: Path) -> str:
    return f"broken link to {os.readlink(path)}"


SPLIT_NAMES = {"train": "train", "training": "train", "trn": "train", "val": "val", "valid": "val",
               "validation": "val", "dev": "val", "test": "test", "testing": "test", "tst": "test"}


def _split_of(name: str) -> str | None:
    """The split a folder or cell names: `train`, `Validation`, RASTA's `wikipaintings_test`, `test-set`, ..."""
    name = name.strip().lower()
    if name in SPLIT_NAMES:
        return SPLIT_NAMES[name]
    found = {SPLIT_NAMES[word] for word in re.split(r"[^a-z]+", name) if word in SPLIT_NAMES}
    return found.pop() if len(found) == 1 else None


def from_folders(root: str | Path, task: str = "label", name: str | None = None) -> ArtCollection:
    """One folder per class, optionally under split folders: `[split/]<class>/<image>`.

    Split folders are recognised under the names publishers use (`train`, `validation`,
    `wikipaintings_test`, ...), but only when every top folder that holds class folders names a
    split; otherwise the top folders are read as classes of nested images.
    """
    root = _existing_dir(root)
    found, broken = _image_files(root)
    files = [(path, path.relative_to(root).parts) for path in found]
    files = [(path, parts) for path, parts in files if len(parts) >= 2]
    nested_tops = {parts[0] for _, parts in files if len(parts) >= 3}
    split_of_top = {top: _split_of(top) for top in nested_tops}
    splits_found = bool(nested_tops) and all(split_of_top.values())
    loose = {path for path, parts in files if splits_found and len(parts) == 2 and parts[0] in split_of_top}
    rows = [{"path": str(path), "split": split_of_top[parts[0]] if splits_found and len(parts) >= 3 else None,
             task: parts[-2]} for path, parts in files if path not in loose]
    collection = _build(rows, {task: False}, name or root.name, root)
    if loose:  # an image directly in a split folder has no class; keeping it would void the official split
        broken = pd.concat([broken, pd.DataFrame({"path": sorted(str(p) for p in loose),
                                                  "reason": "directly in a split folder, not in a class folder"})],
                           ignore_index=True)
    collection.skipped = broken
    if splits_found:
        collection.split_origin = "split folders " + ", ".join(f"{top} ({split_of_top[top]})"
                                                              for top in sorted(nested_tops))
    return collection


def from_wikiart(root: str | Path, name: str | None = None) -> ArtCollection:
    """The WikiArt/RASTA layout `[split/]<style>/<artist-slug>_<title>.jpg`: style, artist, split."""
    collection = from_folders(root, task="style", name=name)
    table = collection.table
    table["artist"] = table["path"].map(lambda p: Path(p).name.split("_", 1)[0])
    return replace(collection, multi_label={"style": False, "artist": False})


def from_manifest(path: str | Path, labels: list[str] | None = None, *, path_column: str | None = None,
                  image_root: str | Path | None = None, separator: str | None = None,
                  one_hot: dict[str, list[str]] | None = None, split_column: str | None = "split",
                  name: str | None = None, multi_label: list[str] | None = None) -> ArtCollection:
    """A CSV or TSV manifest: one row per image, chosen label columns.

    `labels`: columns used as tasks (single-label, or multi-label when `separator` splits cells,
    e.g. "Rembrandt;Bol"); by default every column but the path and split columns.
    `multi_label`: the columns `separator` splits (default: every label column), so single- and
    multi-label tasks can sit in one manifest.
    `one_hot`: task name -> list of 0/1 columns forming one multi-label task (the Paintings and
    IconArt format). Image paths are relative to `image_root` (default: the manifest's folder).
    Rows naming a missing file are skipped and reported with their row number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    if path.suffix.lower() not in MANIFEST_SUFFIXES:
        raise ValueError(f"{path} is a file, not a collection: give a collection folder or a CSV/TSV manifest "
                         f"({', '.join(sorted(MANIFEST_SUFFIXES))})")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            sample = handle.read(4096)
        delimiter = "\t" if path.suffix.lower() == ".tsv" or sample.count("\t") > sample.count(",") else ","
        frame = pd.read_csv(path, sep=delimiter, dtype=str, keep_default_na=False, quoting=csv.QUOTE_MINIMAL,
                            encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not a UTF-8 text manifest ({exc.reason} at byte {exc.start})") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ValueError(f"{path} cannot be read as a CSV/TSV manifest: {exc}") from None
    path_column = path_column or _guess_path_column(frame, path)
    one_hot = dict(one_hot or {})
    if labels is None:
        used = {path_column, split_column, *(c for cols in one_hot.values() for c in cols)}
        labels = [c for c in frame.columns if c not in used]
    labels = list(labels)
    missing = [c for c in [path_column, *labels, *(c for cols in one_hot.values() for c in cols)] if c not in frame]
    if missing:
        raise KeyError(f"{path}: no column(s) {missing}; the manifest has {list(frame.columns)}")
    split_cells = set(labels if multi_label is None else multi_label) if separator else set()
    if multi_label is not None and not separator:
        raise ValueError(f"{path}: multi-label columns {multi_label} need a separator (e.g. ';')")
    unknown = sorted(split_cells - set(labels))
    if unknown:
        raise KeyError(f"{path}: multi-label column(s) {unknown} are not label columns {labels}")
    root = Path(image_root) if image_root is not None else path.parent
    rows, skipped, seen = [], [], {}
    for line, record in enumerate(frame.to_dict("records"), start=2):  # line 1 is the header
        given = root / record[path_column]
        image = given.resolve()
        if not image.is_file():
            broken = given.is_symlink() and not given.exists()
            skipped.append({"path": str(given.absolute() if broken else image),
                            "reason": f"{path.name} row {line}: {_broken_link(given) if broken else 'file not found'}"})
            continue
        if str(image) in seen:  # the same image twice would sit in train and test at once
            skipped.append({"path": str(image), "reason": f"{path.name} row {line}: repeats row {seen[str(image)]}"})
            continue
        seen[str(image)] = line
        row = {"path": str(image), "split": _split_of(record.get(split_column, "") or "") if split_column else None}
        for task in labels:
            cell = record[task].strip()
            if task in split_cells:
                row[task] = tuple(s.strip() for s in cell.split(separator) if s.strip())
            else:
                row[task] = cell or None
        for task, columns in one_hot.items():
            row[task] = tuple(c for c in columns if _truthy(record[c], path, line, c))
        rows.append(row)
    multi = {t: t in split_cells for t in labels} | {t: True for t in one_hot}
    collection = _build(rows, multi, name or path.stem, root)
    if split_column and split_column in frame:
        collection.split_origin = f"manifest column {split_column!r}"
    collection.skipped = pd.concat([collection.skipped, pd.DataFrame(skipped, columns=["path", "reason"])],
                                   ignore_index=True)
    return collection


def _truthy(cell: str, path: Path, line: int, column: str) -> bool:
    value = cell.strip().lower()
    if value in ("1", "1.0", "true", "yes", "y"):
        return True
    if value in ("0", "0.0", "false", "no", "n", "", "-1"):
        return False
    raise ValueError(f"{path} row {line}, column {column!r}: expected 0/1, got {cell!r}")


def _guess_path_column(frame: pd.DataFrame, path: Path) -> str:
    for candidate in ("path", "image", "filename", "file", "item", "image_path"):
        if candidate in frame.columns:
            return candidate
    raise KeyError(f"{path}: cannot tell which column holds image paths; pass path_column "
                   f"(columns: {list(frame.columns)})")


def from_peopleart(root: str | Path) -> ArtCollection:
    """The People-Art collection: style, artist, person (present/absent) and the official split."""
    root = _existing_dir(root)
    images = root / "images"
    collection = from_wikiart(images, name="peopleart")
    table = collection.table
    person: dict[str, str] = {}
    split: dict[str, str] = {}
    for part in SPLITS:
        listing = root / "annotations" / f"person_{part}.txt"
        if not listing.is_file():
            raise FileNotFoundError(f"People-Art annotation list missing: {listing}")
        for number, line in enumerate(listing.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rel, flag = line.rsplit(maxsplit=1)
                present = {"1": "present", "-1": "absent"}[flag]
            except (ValueError, KeyError):
                raise ValueError(f"{listing} line {number}: expected '<Style>/<file> 1|-1', got {line!r}") from None
            key = str((images / rel).resolve())
            person[key], split[key] = present, part
    keys = table["path"].map(lambda p: str(Path(p).resolve()))
    table["person"] = keys.map(person)
    table["split"] = keys.map(split)
    return replace(collection, multi_label={"style": False, "artist": False, "person": False}, root=root,
                   split_origin="People-Art person lists (annotations/person_{train,val,test}.txt)")


def collection_root(source: str | Path) -> Path:
    """The folder `load(source)` records its images under: the collection folder, a manifest's folder, or the
    embedded synthetic collection's (generated if needed). Runs store image paths relative to it."""
    if str(source) == "synthetic":
        return synthetic_manifest().parent.resolve()
    path = Path(source).expanduser()
    return (path.parent if path.is_file() else path).resolve()


def _existing_dir(root: str | Path) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"collection folder not found: {root}")
    return root.resolve()


def _build(rows: list[dict], multi_label: dict[str, bool], name: str, root: Path) -> ArtCollection:
    if not rows:
        raise ValueError(f"no images found under {root} (looked for {sorted(IMAGE_SUFFIXES)} files "
                         f"in class folders)")
    table = pd.DataFrame(rows, columns=["path", "split", *multi_label])
    return ArtCollection(table=table, multi_label=multi_label, name=name, root=Path(root).resolve())


def load_synthetic(per_artist: int = 20, size: int = 160, seed: int = 0,
                   root: str | Path | None = None) -> ArtCollection:
    """The embedded default collection (style, artist, medium), generated on first use and cached on disk."""
    return from_manifest(synthetic_manifest(per_artist, size, seed, root), ["style", "artist", "medium"],
                         name="synthetic")


def load(source: str | Path, layout: str = "auto", **kwargs) -> ArtCollection:
    """Load a collection from a folder or manifest, or `"synthetic"` for the embedded default.

    layout: "auto" (peopleart if its annotation lists exist, a manifest for a .csv/.tsv file,
    otherwise folders), "folders", "wikiart", "manifest", "peopleart" or "synthetic".
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose from {list(LAYOUTS)}")
    if str(source) == "synthetic" or layout == "synthetic":
        return load_synthetic(**kwargs)
    path = Path(source).expanduser()
    if layout == "auto":
        if path.is_file():
            layout = "manifest"
        elif (path / "annotations").is_dir() and (path / "images").is_dir():
            layout = "peopleart"
        else:
            layout = "folders"
    builders = {"folders": from_folders, "wikiart": from_wikiart, "manifest": from_manifest,
                "peopleart": from_peopleart}
    return builders[layout](path, **kwargs)
