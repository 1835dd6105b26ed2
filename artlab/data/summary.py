"""What a collection holds, as tables and a chart: counts per class and split, formats, sizes, skipped files, copies.

    summary = collection_summary(load("path/to/collection").check_images())
    summary                    # a few plain sentences
    summary.classes["style"], summary.files, summary.skipped, summary.duplicates, summary.chart("style")

`examples` picks a few images of each class (the same ones every time), e.g. for a thumbnail grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from artlab.data.collection import ArtCollection


@dataclass
class CollectionSummary:
    """One collection described: per task, images per class and split; its files; what was left out and why."""

    collection: ArtCollection
    classes: dict[str, pd.DataFrame]  # task -> images per class and split, with a total column
    files: pd.DataFrame  # formats, image sizes, misnamed files, copies, skipped files
    skipped: pd.DataFrame  # path, reason: the files and rows that cannot be used
    duplicates: pd.DataFrame  # byte-identical files under several names, one row per file with its group

    def chart(self, task: str | None = None):
        """A bar chart of images per class of `task` (the first by default), stacked by split."""
        return self.collection.class_chart(task)

    def sentences(self) -> list[str]:
        """The summary in plain sentences, for a reader new to the collection."""
        c = self.collection
        tasks = "; ".join(f"{task}: {len(table.drop(index='(no label)', errors='ignore'))} classes"
                          + (" (several labels per image)" if c.multi_label[task] else "")
                          for task, table in self.classes.items())
        split = c.split_origin or "none in the collection (artlab draws one when training)"
        lines = [f"{c.name}: {len(c)} usable images. Tasks: {tasks}.", f"Split: {split}."]
        lines.append(f"{len(self.skipped)} file(s) or row(s) skipped, each with its reason (see `skipped`)."
                     if len(self.skipped) else "No file was skipped: every image could be read.")
        if len(self.duplicates):
            groups = self.duplicates["group"].nunique()
            lines.append(f"{len(self.duplicates)} files are byte-identical copies in {groups} group(s) "
                         f"(see `duplicates`): training keeps each group in one split.")
        return lines

    def __repr__(self) -> str:
        return "\n".join(self.sentences())


def collection_summary(collection: ArtCollection, task: str | None = None) -> CollectionSummary:
    """Describe a collection that went through `check_images()`: every task, or only `task`."""
    if collection.image_info is None:
        raise RuntimeError("call check_images() first: formats, sizes and copies come from decoding the files")
    tasks = [task] if task is not None else collection.tasks
    return CollectionSummary(collection, {t: collection.summary(t) for t in tasks}, collection.image_summary(),
                             collection.skipped.reset_index(drop=True), collection.duplicates())


def examples(collection: ArtCollection, task: str, per_class: int = 5, classes: list[str] | None = None,
             seed: int = 0) -> pd.DataFrame:
    """Up to `per_class` images of each class (all classes, or `classes`), drawn reproducibly: path and class.

    A multi-label image counts for each of its classes. Rows come class by class, in class order.
    """
    classes = collection.classes(task) if classes is None else classes
    unknown = sorted(set(classes) - set(collection.classes(task)))
    if unknown:
        raise KeyError(f"no class {unknown[0]!r} in task {task!r}; its classes are {collection.classes(task)}")
    table = collection.table[["path", task]].rename(columns={task: "class"})
    if collection.multi_label[task]:
        table = table.explode("class")
    table = table[table["class"].isin(classes)]
    drawn = table.sample(frac=1.0, random_state=seed).groupby("class", sort=False).head(per_class)
    order = {name: i for i, name in enumerate(classes)}
    return drawn.sort_values("class", key=lambda col: col.map(order), kind="stable").reset_index(drop=True)
