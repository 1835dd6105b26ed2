"""A sweep's grid: its factors checked, its default name, and the plan of cells (and source runs) it trains."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from artlab.training import TrainConfig
from artlab.training.config import plain_name
from artlab.training.metrics import HEADLINE_METRICS

SOURCE_CLASSES = "source_classes"  # the derived factor: train the source stage on the N largest classes
NOT_FACTORS = ("name", "seed")  # cells are named by the sweep; seeds are their own argument
#: What a cell reports: a single-task run's headline test metrics, a multi-task run's mean score over its tasks.
METRICS = (*HEADLINE_METRICS, "mean_score")


@dataclass
class Cell:
    """One (combination, seed) of the grid: its factor values and the config of its run."""

    factors: dict[str, Any]
    seed: int
    config: TrainConfig
    source: str | None = None  # the name of the source run it starts from


def check_grid(grid: dict[str, Sequence]) -> dict[str, list]:
    """The grid with each factor checked (a TrainConfig field or "source_classes") and its values as a list."""
    if not isinstance(grid, dict) or not grid:
        raise ValueError(f"grid must map at least one TrainConfig field (or {SOURCE_CLASSES!r}) to a list of values")
    allowed = [f.name for f in fields(TrainConfig) if f.name not in NOT_FACTORS]
    checked = {}
    for key, values in grid.items():
        if key in NOT_FACTORS:
            raise ValueError(f"grid: {key!r} cannot be a factor (cells are named from the sweep; pass seeds=[...])")
        if key != SOURCE_CLASSES and key not in allowed:
            raise ValueError(f"grid: unknown factor {key!r}; choose from the TrainConfig fields {allowed} "
                             f"or {SOURCE_CLASSES!r}")
        if isinstance(values, str | bytes | dict) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"grid[{key!r}] must be a non-empty list of values, not {values!r}")
        checked[key] = [TrainConfig.coerce_field(key, v) for v in values]
        if key == SOURCE_CLASSES and any(v is not None and (not isinstance(v, int) or v < 2) for v in checked[key]):
            raise ValueError(f"grid[{SOURCE_CLASSES!r}] holds numbers of classes (2 or more, or null for all), "
                             f"not {values!r}")
    return checked


def default_name(base: TrainConfig, factors: list[str], source: TrainConfig | None = None) -> str:
    """`sweep-<data>[-<task>]-<strategy>-<factors>-<digest>`: the digest of every other setting tells apart
    sweeps whose bases differ (a quick and a full one), so their cells never meet under one run name."""
    data = Path(str(base.data).rstrip("/")).stem
    task = f"-{base.task}" if base.task else ""
    settings = {k: v for k, v in _named(base).items() if k not in (*factors, *NOT_FACTORS)}
    settings["source"] = _named(source) if source else None
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:6]
    return plain_name(f"sweep-{data}{task}-{base.strategy}-{'-'.join(factors)}-{digest}")


def _named(config: TrainConfig) -> dict:
    """A config's fields for the name's digest: `keep_out` only when set (sweeps named before it existed keep
    their names, and so their finished cells)."""
    return {k: v for k, v in config.to_dict().items() if not (k == "keep_out" and v is None)}


def label(factor: str, value: Any) -> str:
    """A factor value as it appears in run names and chart axes (0.001, 10, all)."""
    if value is None:
        return "all" if factor == SOURCE_CLASSES else "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def plan(base: TrainConfig, grid: dict[str, list], seeds: list[int], source: TrainConfig | None, name: str,
         root: Path) -> tuple[dict[str, TrainConfig], list[Cell]]:
    """The source runs (by name) and the cells, in grid order; run names checked to be distinct."""
    sources: dict[str, TrainConfig] = {}
    cells = []
    for values in itertools.product(*grid.values()):
        factors = dict(zip(grid, values))
        fields_ = {k: v for k, v in factors.items() if k != SOURCE_CLASSES}
        tag = "-".join(f"{k}{label(k, v)}" for k, v in factors.items())
        for seed in seeds:
            source_name = None
            extra = {}
            if source is not None:
                top_n = factors.get(SOURCE_CLASSES, source.top_n)
                source_name = plain_name(f"{name}-source-{'top' + str(top_n) if top_n else 'all'}-seed{seed}")
                sources.setdefault(source_name, _make(source, f"source of {tag}", name=source_name, seed=seed,
                                                      top_n=top_n))
                extra = {"init_from": str(root / source_name)}
            config = _make(base, tag, name=plain_name(f"{name}-{tag}-seed{seed}"), seed=seed, **fields_, **extra)
            cells.append(Cell(factors, seed, config, source_name))
    counted = Counter([c.config.name for c in cells] + list(sources))
    repeated = sorted(n for n, times in counted.items() if times > 1)  # counted once each: grids of thousands
    if repeated:
        raise ValueError(f"grid values give the same run name twice ({repeated[:3]}); make the values distinct "
                         f"or the sweep name shorter")
    return sources, cells


def _make(config: TrainConfig, tag: str, **changes) -> TrainConfig:
    try:
        return replace(config, **changes)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"grid cell {tag}: {exc}") from None
