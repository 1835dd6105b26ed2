"""ArtCollection: image paths, any number of label tasks (single- or multi-label) and a split."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from artlab.data.images import scan
from artlab.data.standins import originals
from artlab.io import write_csv

SPLITS = ("train", "val", "test")
NO_LABEL = "(no label)"
FORMAT_SUFFIXES = {"JPEG": {".jpg", ".jpeg", ".jpe"}, "PNG": {".png"}, "WEBP": {".webp"}, "GIF": {".gif"},
                   "BMP": {".bmp"}, "TIFF": {".tif", ".tiff"}}


@dataclass
class ArtCollection:
    """A labelled set of artworks.

    `table` has one row per usable image: `path` (absolute), `split` ("train"/"val"/"test" or
    None) and one column per task. A multi-label task holds a tuple of class names per row.
    `skipped` lists the files and rows that could not be used, with the reason. `split_origin`
    says where an existing split came from (e.g. the split folders found), empty when there is none.
    `changed` lists files whose content differs from what a run recorded (see `Run.read_split`), and
    `stand_ins` those that are a workshop pack's shrunk stand-ins of the images it recorded (`standins`).
    `root` is the folder the collection was loaded from (a manifest's image folder): a run records its
    images relative to it, so the run still finds them when the collection moves.
    """

    table: pd.DataFrame
    multi_label: dict[str, bool]
    name: str = "collection"
    skipped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["path", "reason"]))
    image_info: pd.DataFrame | None = None
    split_origin: str = ""
    changed: list[str] = field(default_factory=list)  # files whose content differs from a run's record
    stand_ins: list[str] = field(default_factory=list)  # files standing in for the images a run recorded
    root: Path | None = None

    @property
    def tasks(self) -> list[str]:
        """Names of the label tasks, in column order."""
        return list(self.multi_label)

    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        tasks = ", ".join(f"{t} ({len(self.classes(t))} classes{', multi-label' if m else ''})"
                          for t, m in self.multi_label.items())
        return f"ArtCollection({self.name!r}, {len(self)} images, tasks: {tasks}, {len(self.skipped)} skipped)"

    # ---- labels -------------------------------------------------------------------------------
    def _check_task(self, task: str) -> None:
        if task not in self.multi_label:
            raise KeyError(f"unknown task {task!r}; this collection has {self.tasks}")

    def classes(self, task: str) -> list[str]:
        """Sorted class names of a task."""
        self._check_task(task)
        col = self.table[task]
        if self.multi_label[task]:
            return sorted({c for labels in col for c in labels})
        return sorted(col.dropna().unique().tolist())

    def counts(self, task: str) -> pd.Series:
        """Number of images per class, largest first."""
        self._check_task(task)
        col = self.table[task]
        values = col.explode() if self.multi_label[task] else col
        return values.dropna().value_counts().rename("images")

    def targets(self, task: str, classes: list[str] | None = None) -> np.ndarray:
        """Integer class indices (single-label) or a 0/1 indicator matrix (multi-label).

        `classes` fixes the class order (e.g. a trained model's), else the sorted classes are used.
        """
        classes = self.classes(task) if classes is None else classes
        index = {c: i for i, c in enumerate(classes)}
        col = self.table[task]
        if self.multi_label[task]:
            out = np.zeros((len(col), len(classes)), dtype=np.float32)
            for row, labels in enumerate(col):
                out[row, [index[c] for c in labels]] = 1.0
            return out
        return col.map(index).to_numpy(dtype=np.int64)

    # ---- selection ----------------------------------------------------------------------------
    def subset(self, mask: np.ndarray | pd.Series) -> ArtCollection:
        """The rows where `mask` is true, as a new collection."""
        return replace(self, table=self.table[np.asarray(mask, dtype=bool)].reset_index(drop=True))

    def labelled(self, task: str) -> ArtCollection:
        """Only the images that carry a label for `task`; the others are listed in `skipped`."""
        self._check_task(task)
        col = self.table[task]
        mask = (col.map(len) > 0 if self.multi_label[task] else col.notna()).to_numpy()
        if mask.all():
            return self
        unlabelled = pd.DataFrame({"path": self.table["path"][~mask], "reason": f"no {task} label"})
        return replace(self.subset(mask), skipped=pd.concat([self.skipped, unlabelled], ignore_index=True))

    def labelled_any(self, tasks: list[str]) -> ArtCollection:
        """Only the images that carry a label for at least one of `tasks` (multi-task training)."""
        if len(tasks) == 1:
            return self.labelled(tasks[0])
        for task in tasks:
            self._check_task(task)
        mask = np.zeros(len(self), dtype=bool)
        for task in tasks:
            col = self.table[task]
            mask |= (col.map(lambda v: isinstance(v, tuple) and len(v) > 0) if self.multi_label[task]
                     else col.notna()).to_numpy()
        if mask.all():
            return self
        unlabelled = pd.DataFrame({"path": self.table["path"][~mask], "reason": f"no label for any of {tasks}"})
        return replace(self.subset(mask), skipped=pd.concat([self.skipped, unlabelled], ignore_index=True))

    def filter(self, task: str, min_images: int = 0, top_n: int | None = None,
               drop_rows: bool = True) -> ArtCollection:
        """Keep classes with at least `min_images` images, then the `top_n` largest of those.

        Single-label rows of dropped classes are removed; multi-label rows lose the dropped
        classes and are removed only when none is left. With `drop_rows=False` (multi-task: the
        image still serves its other tasks) such rows stay, without a label for this task.
        """
        if not drop_rows:
            return self._unlabel_classes(task, self._kept_classes(task, min_images, top_n))
        kept = self._kept_classes(task, min_images, top_n)
        out = self.labelled(task)
        if self.multi_label[task]:
            table = out.table.copy()
            table[task] = table[task].map(lambda labels: tuple(c for c in labels if c in kept))
            out = replace(out, table=table)
            return out.subset(out.table[task].map(len) > 0)
        return out.subset(out.table[task].isin(kept))

    def _kept_classes(self, task: str, min_images: int, top_n: int | None) -> set[str]:
        counts = self.counts(task)
        keep = counts[counts >= min_images]
        if top_n is not None:
            keep = keep.sort_values(ascending=False, kind="stable").iloc[:top_n]
        return set(keep.index)

    def _unlabel_classes(self, task: str, kept: set[str]) -> ArtCollection:
        """Remove the labels of `task` outside `kept`, keeping every row."""
        table = self.table.copy()
        if self.multi_label[task]:
            table[task] = table[task].map(lambda labels: tuple(c for c in labels if c in kept))
        else:
            table[task] = table[task].where(table[task].isin(kept), None)
        return replace(self, table=table)

    def split(self, val: float = 0.15, test: float = 0.15, task: str | None = None, seed: int = 0,
              keep_existing: bool = True) -> ArtCollection:
        """Assign a deterministic train/val/test split, stratified on `task` (single-label).

        With `keep_existing`, a collection whose every row already has a split (an official
        one) is kept; missing val is carved out of train.

        Byte-identical images (see `duplicates`) always land in one split: a drawn split places
        each group as one image; an existing split that puts copies on both sides keeps the
        held-out copy and lists the others in `skipped`.
        """
        splits = self.table["split"]
        if keep_existing and splits.notna().all():
            out = self._drop_copies_across_splits()
            if (out.table["split"] == "val").any() or val == 0:
                return out
            return out._carve_val(val, task, seed)
        groups = self._duplicate_groups()
        first = np.flatnonzero(~pd.Series(groups).duplicated().to_numpy())  # one image per group
        strata = self._strata(task)
        strata = strata[first] if strata is not None else None
        rest, test_idx = _split(np.arange(len(first)), test, strata, seed)
        rest_strata = strata[rest] if strata is not None else None
        train_idx, val_idx = _split(rest, val / (1 - test) if test < 1 else 0.0, rest_strata, seed)
        chosen = np.empty(len(first), dtype=object)
        chosen[train_idx], chosen[val_idx], chosen[test_idx] = "train", "val", "test"
        split_of_group = dict(zip(groups[first], chosen))
        table = self.table.copy()
        table["split"] = [split_of_group[g] for g in groups]
        return replace(self, table=table)

    def _duplicate_groups(self) -> np.ndarray:
        """A group id per row: rows whose files have the same content (sha1; a workshop pack's stand-in: its
        original's, `standins`) share one; else the row's path."""
        if self.image_info is None or "sha1" not in self.image_info:
            return self.table["path"].to_numpy()
        sha1 = dict(zip(self.image_info["path"], self.image_info["sha1"]))
        paths = self.table["path"]
        return np.array([o.sha1 if o else sha1.get(p) or p for p, o in zip(paths, originals(paths))], dtype=object)

    def duplicates(self) -> pd.DataFrame:
        """Byte-identical images under several names: one row per file, with its group and split."""
        groups = pd.Series(self._duplicate_groups())
        repeated = groups.duplicated(keep=False).to_numpy()
        table = self.table[repeated].assign(group=groups[repeated].to_numpy())
        return table.sort_values(["group", "path"], kind="stable").reset_index(drop=True)

    def _drop_copies_across_splits(self) -> ArtCollection:
        """Keep one split per group of identical images: the most held-out one (test, then val)."""
        groups = self._duplicate_groups()
        order = {"test": 0, "val": 1, "train": 2}
        best: dict[str, str] = {}
        for group, split in zip(groups, self.table["split"]):
            if group not in best or order.get(split, 3) < order.get(best[group], 3):
                best[group] = split
        leak = np.array([split != best[group] for group, split in zip(groups, self.table["split"])], dtype=bool)
        if not leak.any():
            return self
        reasons = [f"byte-identical to a {best[g]} image: dropped from {s} so it cannot leak into {best[g]}"
                   for g, s in zip(groups[leak], self.table["split"][leak])]
        gone = pd.DataFrame({"path": self.table["path"][leak].to_numpy(), "reason": reasons})
        return replace(self.subset(~leak), skipped=pd.concat([self.skipped, gone], ignore_index=True))

    def split_problems(self, task: str) -> list[str]:
        """Plain sentences about classes the split leaves without training, validation or test images."""
        if self.multi_label[task]:
            return []
        problems = []
        for name, row in self.summary(task).drop(index=NO_LABEL, errors="ignore").iterrows():
            missing = [s for s in SPLITS if row.get(s, 0) == 0]
            if missing:
                problems.append(f"class {name!r} has {int(row['total'])} image(s): none in {' or '.join(missing)}"
                                + (" (it is never learned)" if "train" in missing else "")
                                + (" (it is never tested)" if "test" in missing else ""))
        return problems

    def _carve_val(self, val: float, task: str | None, seed: int) -> ArtCollection:
        train = np.flatnonzero(self.table["split"].to_numpy() == "train")
        strata = self._strata(task)
        _, val_idx = _split(train, val, strata[train] if strata is not None else None, seed)
        table = self.table.copy()
        table.loc[val_idx, "split"] = "val"
        return replace(self, table=table)

    def _strata(self, task: str | None) -> np.ndarray | None:
        """Class labels to stratify on, or None when stratifying is impossible (multi-label, tiny classes)."""
        if task is None or self.multi_label.get(task, True):
            return None
        labels = self.table[task].fillna("").to_numpy()
        _, counts = np.unique(labels, return_counts=True)
        return labels if counts.min() >= 3 else None

    def part(self, split: str) -> ArtCollection:
        """The rows of one split ("train", "val" or "test")."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
        return self.subset(self.table["split"] == split)

    # ---- description --------------------------------------------------------------------------
    def check_images(self) -> ArtCollection:
        """Decode every image once; unusable files move to `skipped` with their reason.

        A collection with no usable image at all is refused with the reasons counted.
        """
        info = scan(self.table["path"].tolist())
        bad = info["error"].notna().to_numpy()
        skipped = pd.concat([self.skipped, info.loc[bad, ["path", "error"]].rename(columns={"error": "reason"})],
                            ignore_index=True)
        if len(info) and bad.all():
            reasons = info["error"].str.split(":").str[0].value_counts()
            raise ValueError(f"{self.name}: none of its {len(info)} image files is usable ("
                             + ", ".join(f"{n} {r}" for r, n in reasons.items()) + ")")
        good = self.subset(~bad)
        return replace(good, skipped=skipped, image_info=info[~bad].reset_index(drop=True))

    def summary(self, task: str | None = None) -> pd.DataFrame:
        """Images per class and split for a task (the first by default), with a total column.

        Images without a label for the task are counted under "(no label)", never left out.
        """
        task = task or self.tasks[0]
        self._check_task(task)
        table = self.table.assign(split=self.table["split"].fillna("unsplit"))
        if self.multi_label[task]:
            table = table.explode(task)
        out = pd.crosstab(table[task].fillna(NO_LABEL), table["split"])
        out = out[[s for s in (*SPLITS, "unsplit") if s in out.columns]]
        out["total"] = out.sum(axis=1)
        return out.sort_values("total", ascending=False, kind="stable").rename_axis(index=task, columns=None)

    def image_summary(self) -> pd.DataFrame:
        """Counts of real file formats plus the spread of image sizes (needs `check_images`)."""
        if self.image_info is None:
            raise RuntimeError("call check_images() first: image sizes and formats come from decoding the files")
        info = self.image_info
        rows = [{"statistic": f"format {fmt}", "value": int(n)} for fmt, n in info["format"].value_counts().items()]
        for side in ("width", "height"):
            rows += [{"statistic": f"{side} {stat}", "value": int(getattr(info[side], stat)())}
                     for stat in ("min", "median", "max")]
        misnamed = sum(Path(p).suffix.lower() not in FORMAT_SUFFIXES.get(f, {Path(p).suffix.lower()})
                       for p, f in zip(info["path"], info["format"]))
        rows.append({"statistic": "extension differs from content", "value": int(misnamed)})
        rows.append({"statistic": "byte-identical copies", "value": int(len(self.duplicates()))})
        rows.append({"statistic": "skipped files", "value": len(self.skipped)})
        return pd.DataFrame(rows)

    def class_chart(self, task: str | None = None):
        """A plotly bar chart of images per class, stacked by split."""
        import plotly.express as px

        task = task or self.tasks[0]
        counts = self.summary(task).drop(columns="total").reset_index()
        long = counts.melt(id_vars=task, var_name="split", value_name="images")
        fig = px.bar(long, x=task, y="images", color="split", title=f"{self.name}: images per {task}")
        fig.update_layout(xaxis_tickangle=-45, barmode="stack")
        return fig

    # ---- persistence --------------------------------------------------------------------------
    def to_csv(self, path: str | Path) -> None:
        """Write the table atomically, e.g. to record the split a run used.

        Multi-label cells are JSON lists (`["Rembrandt", "Bol"]`), so class names may hold any
        character; `read_table_csv` reads them back.
        """
        table = self.table.copy()
        for task, multi in self.multi_label.items():
            if multi:
                table[task] = table[task].map(lambda labels: json.dumps(list(labels), ensure_ascii=False))
        write_csv(path, table)


def _split(index: np.ndarray, fraction: float, strata: np.ndarray | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministically split `index` into (rest, fraction), stratified where possible. Kept in the cache under all
    it depends on, scikit-learn's version included: a notebook that reuses a finished run checks its split without
    importing scikit-learn (1.6 s)."""
    if fraction <= 0 or len(index) < 2:
        return index, index[:0]
    import torch

    from artlab.cache import cache_dir, digest, load_checked, save_checked
    from artlab.io import load_tensors, save_tensors

    spec = {"index": index.tolist(), "strata": None if strata is None else [str(s) for s in strata],
            "fraction": fraction, "seed": seed, "scikit-learn": metadata.version("scikit-learn"), "version": 1}
    path, what = cache_dir() / "splits" / f"{digest(spec)}.safetensors", f"split of {len(index)} images"
    cached = load_checked(path, what, load_tensors)
    if cached is not None and set(cached) == {"rest", "part"}:
        rest, part = cached["rest"].numpy(), cached["part"].numpy()
        if np.array_equal(np.sort(np.concatenate([rest, part])), np.sort(index)):
            return rest, part
    rest, part = _drawn_split(index, fraction, strata, seed)
    try:
        save_checked(path, {"rest": torch.as_tensor(rest), "part": torch.as_tensor(part)}, {}, what, save_tensors)
    except OSError:  # the cache is an optimisation: a full or read-only disk does not stop a split
        pass
    return rest, part


def _drawn_split(index: np.ndarray, fraction: float, strata: np.ndarray | None,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's `train_test_split` of `index`, stratified unless a class is too small for both sides."""
    from sklearn.model_selection import train_test_split

    try:
        return tuple(train_test_split(index, test_size=fraction, random_state=seed, stratify=strata))
    except ValueError:  # a class too small to appear on both sides
        return tuple(train_test_split(index, test_size=fraction, random_state=seed))
