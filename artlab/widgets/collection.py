"""The collection browser: pick a task and a class, see its images (or a row of thumbnails per class)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from artlab.data import ArtCollection
from artlab.data.summary import examples
from artlab.plots import gallery
from artlab.widgets.base import Explorer, expect, small_table

#: The class choice that shows a row of thumbnails for every class.
EVERY_CLASS = "(every class)"


class CollectionBrowser(Explorer):
    """State: `task` and `shown` (a class, or EVERY_CLASS); each (task, class) grid of thumbnails is drawn once."""

    title = "collection browser"

    def __init__(self, collection: ArtCollection, task: str | None = None, per_class: int = 5, n: int = 20,
                 seed: int = 0):
        expect(collection, ArtCollection, "CollectionBrowser", "an ArtCollection, as artlab.data.load(path) "
                                                               "returns it")
        super().__init__()
        self.collection, self.per_class, self.n, self.seed = collection, per_class, n, seed
        self.task = task or collection.tasks[0]
        collection.classes(self.task)  # an unknown task is refused here, naming the collection's tasks
        self.shown = EVERY_CLASS

    def classes(self) -> list[str]:
        """The choices for the current task: every class at once, then each class."""
        return [EVERY_CLASS, *self.collection.classes(self.task)]

    def select(self, task: str | None = None, shown: str | None = None) -> None:
        """Show another task (all its classes unless `shown` is given) or one class (or EVERY_CLASS)."""
        if task is not None:
            self.collection.classes(task)
            self.task, self.shown = task, EVERY_CLASS
        if shown is not None:
            if shown not in self.classes():
                raise KeyError(f"no class {shown!r} in task {self.task!r}; choose from {self.classes()}")
            self.shown = shown
        self.refresh()

    def figure(self):
        """The thumbnails: `per_class` of each class, one class per row; or up to `n` of the chosen class."""
        return self.cached("thumbnails", (self.task, self.shown),
                           self._every_class if self.shown == EVERY_CLASS else self._one_class)

    def _every_class(self):
        picked = examples(self.collection, self.task, self.per_class, seed=self.seed)
        paths: list[str | None] = []
        captions: list[str] = []
        for name, rows in picked.groupby("class", sort=False):  # pad each class to a full row
            padding = self.per_class - len(rows)
            paths += rows["path"].tolist() + [None] * padding
            captions += [str(name)] * len(rows) + [""] * padding
        return gallery(paths, captions, f"{self.collection.name}: {self.per_class} images of each {self.task} "
                                        f"(one row per class)", columns=self.per_class)

    def _one_class(self):
        picked = examples(self.collection, self.task, self.n, classes=[self.shown], seed=self.seed)
        total = int(self.collection.counts(self.task).get(self.shown, 0))
        captions = [Path(p).name for p in picked["path"]]
        return gallery(picked["path"].tolist(), captions, f"{self.task} = {self.shown}: {len(picked)} of its "
                                                          f"{total} images")

    def facts(self) -> pd.DataFrame:
        """Images per split of the class shown (or of the whole collection)."""
        counts = self.collection.summary(self.task)
        row = counts.sum() if self.shown == EVERY_CLASS else counts.loc[self.shown]
        return small_table({f"{split} images": int(n) for split, n in row.items()})

    def view(self) -> list[object]:
        return [self.figure(), self.facts()]

    def controls(self) -> list[object]:
        return self.linked_dropdowns(("task", "task", self.collection.tasks), ("shown", "class", self.classes))
