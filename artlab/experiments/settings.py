"""What a notebook's `quick` parameter means, in one place: the settings a notebook actually runs with.

    settings = notebook_settings(quick, data=data, task=task, image_size=image_size, epochs=epochs, k=k)
    data, task, image_size, epochs, k = settings.values()

`quick = True` swaps the work for a few seconds on the synthetic collection (small images, one
epoch, small top-k lists); `quick = False` keeps every value as given.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

#: What `quick` sets, per notebook parameter (parameters not named here keep their value).
QUICK: dict[str, Any] = {
    "data": "synthetic", "source": "synthetic", "target": "synthetic",  # collections
    "source_top_n": None,  # the synthetic collection has 8 styles: nothing to cut
    "arch": "mobilenet_v2",  # the light architecture, its ImageNet weights ship with the set-up
    "image_size": 64, "epochs": 1, "k": 10, "seeds": [0],  # training and analyses
    "steps": 32, "render_size": 64,  # filter renders
}

#: The synthetic collection's tasks, and the one `quick` picks when the given task is not among them.
SYNTHETIC_TASKS = ("style", "artist", "medium")
QUICK_TASKS = {"task": "style", "source_task": "style", "target_task": "medium"}
QUICK_MULTI_TASKS = ("style", "artist")


class NotebookSettings(Mapping[str, Any]):
    """The values a notebook runs with, in the order given; `changed` holds what `quick` replaced (name -> given)."""

    def __init__(self, values: dict[str, Any], quick: bool, changed: dict[str, Any]):
        self._values, self.quick, self.changed = dict(values), quick, dict(changed)

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no setting {name!r}; these settings are {list(self._values)}") from None

    def __repr__(self) -> str:
        if self.quick:
            head = "quick = True: shrunk to seconds on the synthetic collection (quick = False runs the values given)"
        else:
            head = "quick = False: the values given"
        width = max(map(len, self._values), default=0)
        lines = [head] + [f"  {name:<{width}} = {value!r}"
                          + (f"   (given: {self.changed[name]!r})" if name in self.changed else "")
                          for name, value in self._values.items()]
        return "\n".join(lines)


def notebook_settings(quick: bool, **given: Any) -> NotebookSettings:
    """The notebook's parameters as given, or with `quick`, shrunk to seconds on the synthetic collection.

    Only the parameters passed come back, in the order passed: `QUICK` says what quick sets; a
    task (`task`, `source_task`, `target_task`) is kept when the synthetic collection has it, and so are
    the `tasks` of a multi-task notebook (at least two; else style and artist).
    """
    if not isinstance(quick, bool):
        raise TypeError(f"quick must be True or False, not {quick!r}")
    values = dict(given)
    if quick:
        for name, value in given.items():
            if name in QUICK:
                values[name] = copy.deepcopy(QUICK[name])  # a notebook may change its list
            elif name in QUICK_TASKS and value not in SYNTHETIC_TASKS:
                values[name] = QUICK_TASKS[name]
            elif name == "tasks":  # a multi-task notebook: the synthetic tasks among those given, at least two
                kept = [t for t in value if t in SYNTHETIC_TASKS]
                values[name] = kept if len(kept) >= 2 else list(QUICK_MULTI_TASKS)
    changed = {name: given[name] for name in given if values[name] != given[name]}
    return NotebookSettings(values, quick, changed)
