"""A run's split: the exact images, labels and split it trained on (split.csv), written once and checked on read.

split.csv keeps each file's signature, and split.json its row count and sha256, so a run can tell
later whether its images went missing, changed or were relabelled, and refuse a split edited by hand.
Paths are recorded relative to the collection's folder (split.json keeps where it was), so a run
finds its images again when the collection moves: to a `data` given, to where this process found it
(`remember_move`), or to a folder of the same name under $ARTLAB_DATA; their signatures vouch for them.
These functions work on a run folder's path; `Run` (folder.py) offers them as methods.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from artlab.cache import file_signature
from artlab.data.collection import ArtCollection
from artlab.data.layouts import collection_root
from artlab.data.standins import LINKS_FILE, originals
from artlab.io import DamagedFile, read_json, write_json

SPLIT_FILE = "split.csv"
SPLIT_RECORD = "split.json"
#: Separator of multi-label cells in split.csv files written by artlab 0.1 (JSON lists since).
LEGACY_LABEL_SEPARATOR = "|"
#: Folders where collections may have moved since their runs were trained (os.pathsep-separated), e.g. a workshop's
#: ~/workshop/data: a run trained on .../genres looks for ~/workshop/data/genres when its own folder is gone.
DATA_ENV = "ARTLAB_DATA"
#: Recorded collection folder -> where this process found that collection (see `remember_move`).
_MOVED: dict[str, Path] = {}


def write_split(folder: Path, collection: ArtCollection) -> None:
    """split.csv (paths relative to the collection's folder, each file's signature) and split.json (its row count,
    sha256 and the collection's folder), atomically."""
    table = collection.table.assign(signature=[signature_or_none(p) for p in collection.table["path"]])
    table["path"] = [_relative(p, collection.root) for p in table["path"]]
    ArtCollection(table, collection.multi_label, collection.name).to_csv(folder / SPLIT_FILE)
    digest = hashlib.sha256((folder / SPLIT_FILE).read_bytes()).hexdigest()
    root = str(collection.root) if collection.root is not None else None
    write_json(folder / SPLIT_RECORD, {"rows": len(table), "sha256": digest, "root": root})


def remember_move(recorded: str | Path, now: str | Path) -> None:
    """Runs whose collection was recorded at `recorded` find it at `now` for the rest of this process (set when a
    run is reused on the same images at another place)."""
    _MOVED[str(recorded)] = Path(now)


def recorded_root(folder: Path, data_then: str | None = None) -> Path | None:
    """Where the run's collection was when it recorded its split: split.json's root, or for runs written before
    artlab recorded it, the folder of the config's `data` (`data_then`)."""
    record = read_json(folder / SPLIT_RECORD) if (folder / SPLIT_RECORD).is_file() else {}
    if record.get("root"):
        return Path(record["root"])
    if data_then and data_then != "synthetic":
        return collection_root(data_then)
    return None


def locate(root_then: Path | None, data: str | Path | None = None, data_then: str | None = None) -> Path | None:
    """Where a run's collection is now: `data` if given; else where it was, if still there; else where this process
    found it (`remember_move`); else its config's `data` (the synthetic collection is made anew); else a folder
    of its name under $ARTLAB_DATA. None for a run that recorded absolute paths and was given no `data`."""
    if data is not None:
        return collection_root(data)
    if root_then is None:
        return None
    if root_then.is_dir():
        return root_then
    if str(root_then) in _MOVED:
        return _MOVED[str(root_then)]
    if data_then == "synthetic" or data_then and collection_root(data_then).is_dir():
        return collection_root(data_then)
    for base in filter(None, os.environ.get(DATA_ENV, "").split(os.pathsep)):
        candidate = Path(base).expanduser() / root_then.name
        if candidate.is_dir():
            return candidate.resolve()
    return root_then


def absolute_paths(paths: pd.Series, root_then: Path | None, root_now: Path | None) -> pd.Series:
    """Recorded paths as paths on this machine: relative ones under `root_now`, and absolute ones under `root_then`
    (runs written before paths were relative) moved there too."""
    def where(path: str) -> str:
        if not os.path.isabs(path):
            return str((root_now or Path()) / path)
        if root_now is not None and root_then is not None and root_now != root_then:
            relative = _relative(path, root_then)
            if not os.path.isabs(relative):
                return str(root_now / relative)
        return path
    return paths.map(where)


def _relative(path: str, root: Path | None) -> str:
    """`path` relative to `root` (with /), or as it is when outside it."""
    if root is None:
        return path
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return path


def check_split(folder: Path) -> None:
    """Refuse a split.csv that is not the one written (truncated or edited), when split.json vouches for it."""
    path, record = folder / SPLIT_FILE, folder / SPLIT_RECORD
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {SPLIT_FILE}: the run never got as far as splitting")
    if record.is_file():
        expected = read_json(record)
        if hashlib.sha256(path.read_bytes()).hexdigest() != expected.get("sha256"):
            raise DamagedFile(f"{path} is damaged: it differs from the split this run recorded "
                              f"({expected.get('rows')} rows); the run cannot be trusted or resumed")


def recorded_text(folder: Path) -> pd.DataFrame:
    """split.csv as text cells, its paths as recorded, after checking it is the one the run wrote."""
    check_split(folder)
    try:
        return pd.read_csv(folder / SPLIT_FILE, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DamagedFile(f"{folder / SPLIT_FILE} is damaged ({exc})") from None


def recorded_frame(folder: Path, data: str | Path | None = None, data_then: str | None = None) -> pd.DataFrame:
    """split.csv as text cells, its paths where the images are now (see `locate`)."""
    return _located(folder, data, data_then)[0]


def _located(folder: Path, data: str | Path | None, data_then: str | None) -> tuple[pd.DataFrame, Path | None,
                                                                                 Path | None]:
    """split.csv with its paths where the images are now, the collection's folder then and now."""
    frame = recorded_text(folder)
    root_then = recorded_root(folder, data_then)
    root_now = locate(root_then, data, data_then)
    if "path" in frame:
        frame["path"] = absolute_paths(frame["path"], root_then, root_now)
    return frame, root_then, root_now


def read_split(folder: Path, multi_label: dict[str, bool], name: str, quiet: bool = False,
               data: str | Path | None = None, data_then: str | None = None) -> ArtCollection:
    """The exact images, labels and split recorded in a run's split.csv, found where they are now (`data` if
    given, see `locate`; `data_then` is the run's config's `data`).

    Images missing since the run was written are left out and listed in `skipped`; images whose
    content changed are kept and listed in `changed`; either case is also warned about (unless `quiet`).
    A collection given as `data` in which none of the run's images is found, or none unchanged, is refused.
    """
    frame, root_then, root_now = _located(folder, data, data_then)
    missing_columns = [c for c in ("path", "split", *multi_label) if c not in frame]
    if missing_columns:
        raise DamagedFile(f"{folder / SPLIT_FILE} has no column(s) {missing_columns}")
    exists = frame["path"].map(os.path.isfile).to_numpy()
    table = pd.DataFrame({"path": frame["path"], "split": frame["split"].replace("", None)})
    for task, multi in multi_label.items():
        table[task] = frame[task].map(_labels) if multi else frame[task].replace("", None)
    collection = ArtCollection(table[exists].reset_index(drop=True), dict(multi_label), name, root=root_now)
    collection.skipped = pd.DataFrame({"path": frame["path"][~exists],
                                       "reason": "missing since the run recorded its split"})
    if "signature" in frame:
        recorded = frame["signature"][exists].tolist()
        collection.changed, collection.stand_ins = _changed(collection.table["path"].tolist(), recorded)
    hint = "" if data is not None else f" (moved? give the collection's new folder as `data`, or set {DATA_ENV})"
    elsewhere = data is not None or root_now != root_then
    if elsewhere and len(frame) and len(collection.changed) == len(collection) and len(collection):
        shrunk = all(_size(signature_or_none(p)) < _size(s) for p, s in zip(collection.table["path"], recorded) if s)
        raise ValueError(f"{collection.root} is not the collection run {name} trained on: none of its {len(frame)} "
                         f"images is there unchanged (found {len(collection)}, {len(collection.changed)} of them "
                         f"different)" + (f"; all are smaller: if they are a workshop pack's shrunk images, its links "
                                          f"file {LINKS_FILE} must be in that folder too" if shrunk else ""))
    if data is not None and not len(collection) and len(frame):
        raise ValueError(f"{data} is not the collection run {name} trained on: none of its {len(frame)} images is "
                         f"there")
    if not quiet and len(frame) and not exists.any():
        raise FileNotFoundError(f"run {name}: none of its {len(frame)} images is where it recorded them "
                                f"({collection.root}){hint}")
    if not quiet and ((~exists).any() or collection.changed):
        warnings.warn(f"run {name}: {int((~exists).sum())} of its {len(frame)} images are missing and "
                      f"{len(collection.changed)} changed since it recorded its split{hint}; results on them differ "
                      f"from the run's", stacklevel=3)
    return collection


def content_key(frame: pd.DataFrame, root: Path | None, tasks: dict[str, bool]) -> str:
    """What a split holds, wherever its collection lies: each image's path under `root`, split, labels of `tasks`
    (task -> multi-label) and content (size and the hash of its ends, not its time), in path order. `frame` is a
    collection's table or split.csv as text (multi-label cells as written); with no `signature` column the files
    are read."""
    signatures = frame["signature"] if "signature" in frame else frame["path"].map(signature_or_none)

    def label(task: str, i: int) -> str:
        cell = frame[task].iloc[i]
        return _comparable(_labels(cell) if tasks[task] and isinstance(cell, str) else cell)

    rows = sorted("\0".join([_relative(str(path), root), str(split or ""), *(label(t, i) for t in tasks),
                             _content(signature)])
                  for i, (path, split, signature) in enumerate(zip(frame["path"], frame["split"], signatures)))
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def content_keys(table: pd.DataFrame, root: Path | None, tasks: dict[str, bool]) -> set[str]:
    """`content_key` of a collection's table, and where some of its images are a workshop pack's stand-ins, that of
    the originals they answer to (`artlab.data.standins`): a run trained on either matches."""
    own = table["path"].map(signature_or_none).tolist()
    stood_for = [o.signature if o else mine for o, mine in zip(originals(table["path"]), own)]
    return {content_key(table.assign(signature=signatures), root, tasks)
            for signatures in ([own, stood_for] if stood_for != own else [own])}


def _changed(paths: list[str], recorded: list[str | None]) -> tuple[list[str], list[str]]:
    """The paths whose content differs from their recorded signature, and those that are verified stand-ins of the
    recorded originals (`artlab.data.standins`), which do not."""
    differ = [(p, s) for p, s in zip(paths, recorded) if s and not _same_content(s, signature_or_none(p))]
    changed, stand_ins = [], []
    for (path, signature), original in zip(differ, originals(p for p, _ in differ)):
        (stand_ins if original and _same_content(signature, original.signature) else changed).append(path)
    return changed, stand_ins


def _size(signature: str | None) -> int:
    """The file size a signature records (0 for none)."""
    return int(signature.split(":")[0]) if signature else 0


def _content(signature: str | None) -> str:
    """A file signature without its modification time (a copy to another machine keeps the content, not the time)."""
    if not signature:
        return ""
    size, _, digest = signature.split(":")
    return f"{size}:{digest}"


def changes(recorded: ArtCollection, collection: ArtCollection, tasks: tuple[str, ...]) -> str:
    """How `collection` (prepared now) differs from a recorded split, in words ("2 image(s) added, 1 relabelled";
    "" when it does not)."""
    then, now = recorded.table.set_index("path"), collection.table.set_index("path")
    added = now.index.difference(then.index).difference(pd.Index(recorded.skipped["path"]))
    counts = {"added": len(added), "missing": len(recorded.skipped), "changed": len(recorded.changed),
              "relabelled": len(relabelled(recorded, collection, tasks))}
    return ", ".join(f"{count} image(s) {what}" for what, count in counts.items() if count)


def relabelled(recorded: ArtCollection, collection: ArtCollection, tasks: tuple[str, ...]) -> list[str]:
    """The images of both whose label for one of `tasks` differs now from the recorded one."""
    then, now = recorded.table.set_index("path"), collection.table.set_index("path")
    common = now.index.intersection(then.index)
    differs = pd.Series(False, index=common)
    for task in tasks:
        differs |= now.loc[common, task].map(_comparable) != then.loc[common, task].map(_comparable)
    return common[differs.to_numpy()].tolist()


def exact(recorded: ArtCollection, collection: ArtCollection, tasks: tuple[str, ...], where: str) -> ArtCollection:
    """The recorded split for resuming: refused if any of its images is missing, changed or relabelled; images
    added to the collection since are left out (and warned about)."""
    moved = relabelled(recorded, collection, tasks)
    if recorded.stand_ins:  # it trained on the originals; what it would train on next are smaller copies
        raise ValueError(f"cannot resume {where}: {len(recorded.stand_ins)} of the images it trained on are here as a "
                         f"workshop pack's shrunk stand-ins (e.g. {recorded.stand_ins[0]}); resume it where the "
                         f"original images are")
    if len(recorded.skipped) or recorded.changed or moved:
        examples = (recorded.skipped["path"].tolist() + recorded.changed + moved)[:3]
        raise ValueError(f"cannot resume {where}: since it recorded its split, {len(recorded.skipped)} image(s) "
                         f"went missing, {len(recorded.changed)} changed and {len(moved)} were relabelled (e.g. "
                         f"{examples}); restore them, or start a new run (another --name)")
    added = len(set(collection.table["path"]) - set(recorded.table["path"]))
    if added:
        warnings.warn(f"{where}: {added} image(s) added to {collection.name} since the run started are not used "
                      f"(a resumed run keeps its recorded split)", stacklevel=4)
    return replace(recorded, skipped=collection.skipped)


def split_like(collection: ArtCollection, folder: Path, data_then: str | None = None) -> ArtCollection:
    """The split another run recorded, image by image; images it did not use are left out (and listed)."""
    recorded = recorded_frame(folder, collection.root, data_then)
    split_of = dict(zip(recorded["path"], recorded["split"]))
    known = collection.table["path"].isin(split_of).to_numpy()
    if not known.any():
        raise ValueError(f"--split-from {folder}: none of the {len(collection)} images is in its split")
    left = pd.DataFrame({"path": collection.table["path"][~known], "reason": f"not in the split of run {folder.name}"})
    out = collection.subset(known)
    table = out.table.assign(split=out.table["path"].map(split_of))
    return replace(out, table=table, skipped=pd.concat([collection.skipped, left], ignore_index=True))


def signature_or_none(path: str) -> str | None:
    try:
        return file_signature(path)
    except OSError:
        return None


def _same_content(recorded: str, current: str | None) -> bool:
    """Two file signatures agree on size and end bytes (a touch or a copy that resets the time is no change)."""
    return current is not None and _content(recorded) == _content(current)


def _labels(cell: str) -> tuple[str, ...]:
    """A multi-label cell of split.csv: a JSON list (or, from artlab 0.1, names joined by '|')."""
    if cell.startswith("["):
        return tuple(json.loads(cell))
    return tuple(c for c in cell.split(LEGACY_LABEL_SEPARATOR) if c)


def _comparable(label: object) -> str:
    """A label cell as text that compares equal across a loaded collection and a recorded split."""
    if isinstance(label, list | tuple | set | frozenset):
        return "|".join(sorted(map(str, label)))
    return "" if label is None or (isinstance(label, float) and np.isnan(label)) else str(label)
