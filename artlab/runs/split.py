"""A run's split: the exact images, labels and split it trained on (split.csv), written once and checked on read.

split.csv keeps each file's signature, and split.json its row count and sha256, so a run can tell
later whether its images went missing, changed or were relabelled, and refuse a split edited by hand.
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
from artlab.io import DamagedFile, read_json, write_json

SPLIT_FILE = "split.csv"
SPLIT_RECORD = "split.json"
#: Separator of multi-label cells in split.csv files written by artlab 0.1 (JSON lists since).
LEGACY_LABEL_SEPARATOR = "|"


def write_split(folder: Path, collection: ArtCollection) -> None:
    """split.csv (with each file's signature) and split.json (its row count and sha256), atomically."""
    table = collection.table.assign(signature=[signature_or_none(p) for p in collection.table["path"]])
    ArtCollection(table, collection.multi_label, collection.name).to_csv(folder / SPLIT_FILE)
    digest = hashlib.sha256((folder / SPLIT_FILE).read_bytes()).hexdigest()
    write_json(folder / SPLIT_RECORD, {"rows": len(table), "sha256": digest})


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


def recorded_frame(folder: Path) -> pd.DataFrame:
    """split.csv as text cells, after checking it is the one the run wrote."""
    check_split(folder)
    try:
        return pd.read_csv(folder / SPLIT_FILE, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DamagedFile(f"{folder / SPLIT_FILE} is damaged ({exc})") from None


def read_split(folder: Path, multi_label: dict[str, bool], name: str, quiet: bool = False) -> ArtCollection:
    """The exact images, labels and split recorded in a run's split.csv.

    Images missing since the run was written are left out and listed in `skipped`; images whose
    content changed are kept and listed in `changed`; either case is also warned about (unless `quiet`).
    """
    frame = recorded_frame(folder)
    missing_columns = [c for c in ("path", "split", *multi_label) if c not in frame]
    if missing_columns:
        raise DamagedFile(f"{folder / SPLIT_FILE} has no column(s) {missing_columns}")
    exists = frame["path"].map(os.path.isfile).to_numpy()
    table = pd.DataFrame({"path": frame["path"], "split": frame["split"].replace("", None)})
    for task, multi in multi_label.items():
        table[task] = frame[task].map(_labels) if multi else frame[task].replace("", None)
    collection = ArtCollection(table[exists].reset_index(drop=True), dict(multi_label), name)
    collection.skipped = pd.DataFrame({"path": frame["path"][~exists],
                                       "reason": "missing since the run recorded its split"})
    if "signature" in frame:
        recorded = frame["signature"][exists].tolist()
        collection.changed = [p for p, s in zip(collection.table["path"], recorded)
                              if s and not _same_content(s, signature_or_none(p))]
    if not quiet and ((~exists).any() or collection.changed):
        warnings.warn(f"run {name}: {int((~exists).sum())} of its {len(frame)} images are missing and "
                      f"{len(collection.changed)} changed since it recorded its split; results on them differ "
                      f"from the run's", stacklevel=3)
    return collection


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


def split_like(collection: ArtCollection, folder: Path) -> ArtCollection:
    """The split another run recorded, image by image; images it did not use are left out (and listed)."""
    recorded = recorded_frame(folder)
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
    if current is None:
        return False
    size, _, digest = recorded.split(":")
    now_size, _, now_digest = current.split(":")
    return size == now_size and digest == now_digest


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
