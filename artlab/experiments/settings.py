"""What a notebook's parameters mean, in one place: the settings a notebook actually runs with.

    settings = notebook_settings(quick, data=data, task=task, image_size=image_size, epochs=epochs, k=k)
    load(settings.data).summary(settings.task)

`quick = True` shrinks the work (small images, one epoch, short top-k lists): seconds on the
synthetic collection, minutes on a large one; `quick = False` keeps every value as given. Either
way the collections are the ones given, and each task is checked against its collection: a task
the collection lacks (or None) becomes its first, and a multi-task notebook on a collection with
one task runs on the synthetic collection; the settings say what changed and why.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from artlab.data import load

#: What `quick` sets, per notebook parameter (parameters not named here keep their value).
QUICK: dict[str, Any] = {
    "arch": "mobilenet_v2",  # the light architecture, its ImageNet weights ship with the set-up
    "image_size": 64, "epochs": 1, "k": 10, "seeds": [0],  # training and analyses
    "steps": 32, "render_size": 64,  # filter renders
}
#: Each collection parameter a notebook may declare and the parameters naming the tasks it learns there: `data`
#: (what the notebook learns), `source` and `target` (the two stages of double fine-tuning).
TASKS_OF: dict[str, tuple[str, ...]] = {"data": ("task", "tasks"), "source": ("source_task",),
                                        "target": ("target_task",)}
#: Label columns that are not learned but checked like a task: `by`, the column a bias audit groups by.
COLUMNS_OF: dict[str, tuple[str, ...]] = {"data": ("by",)}
#: Each task parameter (and label column) and the parameter naming its collection.
TASK_OF = {task: collection for of in (TASKS_OF, COLUMNS_OF) for collection, tasks in of.items() for task in tasks}
#: Where a headless run's `--data` goes: the first of these that a notebook's parameters cell declares (a
#: double fine-tuning notebook has no `data`: your collection is its small target).
DATA_PARAMETERS = ("data", "target")
#: The collection a multi-task notebook falls back to when the one given has a single task.
SEVERAL_TASKS = "synthetic"
#: Where a notebook's displayed settings leave their values for the headless runner's index page.
METADATA_KEY = "artlab_settings"


class NotebookSettings(Mapping[str, Any]):
    """The values a notebook runs with, in the order given; `changed` holds what was replaced (name -> given),
    `reasons` why a collection or task was (name -> sentence)."""

    def __init__(self, values: dict[str, Any], quick: bool, changed: dict[str, Any],
                 reasons: dict[str, str] | None = None):
        self._values, self.quick, self.changed = dict(values), quick, dict(changed)
        self.reasons = dict(reasons or {})

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
            head = "quick = True: the work shrunk, small images and one epoch (quick = False runs the values given)"
        else:
            head = "quick = False: the values given"
        width = max(map(len, self._values), default=0)
        lines = [head]
        for name, value in self._values.items():
            given = f"   (given: {self.changed[name]!r}" if name in self.changed else ""
            given += f": {self.reasons[name]})" if name in self.reasons else (")" if given else "")
            lines.append(f"  {name:<{width}} = {value!r}{given}")
        return "\n".join(lines)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> tuple[dict, dict]:
        """The text, and in the output's metadata the values as JSON, for the index page of a headless run."""
        plain = json.loads(json.dumps({"quick": self.quick, "values": self._values, "changed": self.changed},
                                      default=str))
        return {"text/plain": repr(self)}, {METADATA_KEY: plain}


def notebook_settings(quick: bool, **given: Any) -> NotebookSettings:
    """The notebook's parameters as given, or with `quick`, the work shrunk; tasks checked against collections.

    Only the parameters passed come back, in the order passed. `QUICK` says what quick sets. A task
    (`task`, `by`, `source_task`, `target_task`, beside `data`, `source`, `target`) that its collection
    lacks, or None, becomes the collection's first task; the `tasks` of a multi-task notebook keep
    those the collection has, completed to two from its others, and a collection with one task is
    replaced by the synthetic one. A collection that cannot be read is left for the notebook to report.
    """
    if not isinstance(quick, bool):
        raise TypeError(f"quick must be True or False, not {quick!r}")
    values = dict(given)
    if quick:
        values.update({name: copy.deepcopy(QUICK[name]) for name in given if name in QUICK})  # a notebook may
        # change its list
    reasons: dict[str, str] = {}
    tasks_of: dict[str, list[str] | None] = {}  # each collection read once, whatever the number of its tasks
    for name, collection in TASK_OF.items():
        if name in values and collection in values:
            _resolve_task(values, name, collection, reasons, tasks_of)
    changed = {name: given[name] for name in given if values[name] != given[name]}
    return NotebookSettings(values, quick, changed, reasons)


def data_parameter(declared: Iterable[str]) -> str | None:
    """The parameter of a notebook (`declared`: the names its parameters cell declares) that takes the collection
    of a headless run's `--data`; None when it declares none of DATA_PARAMETERS."""
    names = set(declared)
    return next((name for name in DATA_PARAMETERS if name in names), None)


def collections_and_tasks(names: Iterable[str]) -> list[str]:
    """Of a notebook's settings (`names`), those that say what it learned: each collection, then its tasks."""
    names = set(names)
    return [name for collection, tasks in TASKS_OF.items() for name in (collection, *tasks) if name in names]


def _tasks_of(data: Any) -> list[str] | None:
    """A collection's label tasks, or None when it cannot be read (the notebook's next cell says why)."""
    try:
        return list(load(data).tasks)
    except Exception:  # noqa: BLE001 - any reading error is reported where the notebook loads the collection
        return None


def _resolve_task(values: dict[str, Any], name: str, collection: str, reasons: dict[str, str],
                  tasks_of: dict[str, list[str] | None]) -> None:
    """Replace `values[name]` by task(s) that `values[collection]` has, with the reason in `reasons`."""
    key = str(values[collection])
    if key not in tasks_of:
        tasks_of[key] = _tasks_of(values[collection])
    tasks = tasks_of[key]
    if not tasks:
        return
    title = Path(str(values[collection])).name or str(values[collection])
    if name != "tasks":
        if values[name] not in tasks:
            reasons[name] = (f"{title} has no such task; its tasks: {', '.join(tasks)}" if values[name] is not None
                             else f"the first task of {title}")
            values[name] = tasks[0]
        return
    wanted = list(values[name] or [])
    if len(tasks) < 2:
        values[collection] = SEVERAL_TASKS
        reasons[collection] = (f"it has one task ({tasks[0]}), and multi-task learning needs two: shown on the "
                               f"{SEVERAL_TASKS} collection")
        _resolve_task(values, name, collection, reasons, tasks_of)
        return
    kept = [task for task in wanted if task in tasks]
    chosen = (kept + [task for task in tasks if task not in kept])[:max(2, len(kept))]
    if chosen != wanted:
        values[name] = chosen
        if wanted:
            missing = [task for task in wanted if task not in tasks]
            reasons[name] = (f"{title} has no task {', '.join(missing)}; its tasks: {', '.join(tasks)}" if missing
                             else "multi-task learning needs two")
