"""Benchmark: double fine-tuning at medium scale (Gonthier et al. 2020), through the 10,500 WikiArt paintings.

    python benchmarks/medium_study.py [--epochs 10] [--seeds 0,1,2] [--freeze 10] [--patience P]
                                      [--targets genres,person] [--factors | --no-factors] [--factor-seeds 0,1,2]
    python benchmarks/medium_study.py --quick          # a smoke test: minutes, into medium-study-quick*

Routes: ImageNet -> wikiart_styles (7 styles, 1,500 paintings each) -> genres (5 genres, one stratified
70/15/15 split per seed), and -> the People-Art person task (its official split). Per seed and target:
the source stage, single fine-tuning (ImageNet -> target), double fine-tuning (ImageNet -> wikiart ->
target) and the two off-the-shelf routes (a linear classifier on ImageNet's features and on the
source stage's); no scratch. MobileNetV2 at 128 px, every stage trained by the same rule: the same
epochs, the first K blocks frozen (`--freeze`, default 10, the best depth of the factor sweep on
genres) and the same early stopping (`--patience`, default none). `double_finetune` keeps the
target's validation and test images out of the source stage (the leak guard).

Source factors, on genres: the size of the source (about 1,500, 5,000 and all 10,500 paintings,
stratified over the 7 styles, nested) and its number of classes (2, 4 and 7 styles, all their
paintings; the styles in a fixed random order, nested), each a source stage then double fine-tuning
on genres, paired per seed with single fine-tuning on the same genre split; beside each source its
Fréchet distance to genres in ImageNet feature space (`artlab distance`). The subsets are CSV
manifests under the runs folder (no image is copied); the full source is the collection folder
itself, so its runs are those of the routes above.

Writes results/medium-study-{routes,difference,gain,factors,distance,cells}.csv and results/medium-study.md;
the runs go under benchmarks/runs, and finished runs are reused, so a rerun costs only the tables.
`--quick`: 1 epoch, 1 seed, 300-image subsets of every collection, 64 px, run names of their own.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
WIKIART, GENRES, PEOPLEART = SHARED / "wikiart_styles", SHARED / "genres", SHARED / "peopleart"
TARGETS = ("genres", "person")
SIZES = (1500, 5000)  # source sizes below the whole collection (stratified over the styles)
CLASSES = (2, 4)  # numbers of styles below all 7
QUICK = {"epochs": 1, "seeds": "0", "factor_seeds": "0", "image_size": 64, "images": 300, "sizes": (70, 150)}
METRICS = ("accuracy", "balanced_accuracy")
LEVEL = 0.95  # of the paired intervals


@dataclass(frozen=True)
class Settings:
    epochs: int
    seeds: tuple[int, ...]
    factor_seeds: tuple[int, ...]
    freeze: int
    patience: int | None
    image_size: int
    images: int | None  # quick: every collection cut to this many images
    sizes: tuple[int, ...]
    runs: Path
    results: Path

    @property
    def quick(self) -> bool:
        return self.images is not None

    @property
    def tag(self) -> str:
        """What run names carry of the settings, so runs of other settings never meet under one name."""
        patience = f"-patience{self.patience}" if self.patience else ""
        return f"{'quick-' if self.quick else ''}{self.epochs}ep-freeze{self.freeze}{patience}-{self.image_size}px"

    @property
    def prefix(self) -> str:
        return "medium-study-quick" if self.quick else "medium-study"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, help="epochs of every fine-tuning (default 10; --quick: 1)")
    parser.add_argument("--seeds", help="seeds of the routes (default 0,1,2; --quick: 0)")
    parser.add_argument("--freeze", type=int, default=10, help="blocks frozen in every fine-tuning stage (default 10)")
    parser.add_argument("--patience", type=int, default=None, help="early stopping of every stage (default: none)")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated, of genres,person")
    parser.add_argument("--factors", action=argparse.BooleanOptionalAction, default=True,
                        help="the source factors on genres (size, classes, distance; default on)")
    parser.add_argument("--factor-seeds", dest="factor_seeds", help="seeds of the factor cells (default 0,1,2)")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 1 epoch, 1 seed, 300-image subsets, 64 px")
    parser.add_argument("--runs-dir", dest="runs_dir", type=Path, default=HERE / "runs")
    parser.add_argument("--results-dir", dest="results_dir", type=Path, default=HERE / "results")
    args = parser.parse_args()
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not targets or set(targets) - set(TARGETS):
        parser.error(f"--targets takes one or more of {','.join(TARGETS)}, not {args.targets!r}")
    for folder in (WIKIART, GENRES, PEOPLEART):
        if not folder.is_dir():
            raise SystemExit(f"{folder} not found (../shared/data beside the repository)")
    quick = QUICK if args.quick else {}
    settings = Settings(epochs=args.epochs or quick.get("epochs", 10),
                        seeds=_seeds(args.seeds or quick.get("seeds", "0,1,2")),
                        factor_seeds=_seeds(args.factor_seeds or quick.get("factor_seeds", "0,1,2")),
                        freeze=args.freeze, patience=args.patience, image_size=quick.get("image_size", 128),
                        images=quick.get("images"), sizes=quick.get("sizes", SIZES), runs=args.runs_dir.resolve(),
                        results=args.results_dir.resolve())
    run_study(settings, targets, args.factors)


def _seeds(text: str) -> tuple[int, ...]:
    seeds = tuple(int(s) for s in text.split(",") if s.strip())
    if not seeds:
        raise SystemExit(f"seeds must name at least one seed, not {text!r}")
    return seeds


# ---- collections: the full ones as folders, subsets as CSV manifests --------------------------------------------
def stratified(table: pd.DataFrame, by: list[str], n: int | None, seed: int = 0) -> pd.DataFrame:
    """`n` rows (all when None or more than there are) in proportion to the groups of `by`, the remainders to the
    groups with the largest (ties: the first); within a group the first of a fixed random order, so a smaller
    subset of one table lies inside a larger one."""
    table = table.sort_values("path", ignore_index=True)
    if n is None or n >= len(table):
        return table
    rng = np.random.default_rng(seed)
    groups = [part.iloc[rng.permutation(len(part))] for _, part in table.groupby(by, sort=True)]
    shares = np.array([len(part) for part in groups]) * n / len(table)
    counts = np.floor(shares).astype(int)
    for i in sorted(range(len(groups)), key=lambda i: -(shares[i] - counts[i]))[: n - counts.sum()]:
        counts[i] += 1
    return pd.concat([part.head(k) for part, k in zip(groups, counts)]).sort_values("path", ignore_index=True)


def write_manifest(table: pd.DataFrame, path: Path) -> str:
    """`table` as a CSV manifest (absolute image paths), rewritten only when its content changes."""
    text = table.assign(path=table["path"].map(lambda p: str(Path(p).resolve()))).to_csv(index=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return str(path)


@dataclass(frozen=True)
class Source:
    """A source collection of the factor study: which factor and value it stands for, and its data."""

    factor: str
    value: int
    data: str
    images: int
    styles: tuple[str, ...]
    key: str  # in run names


class Collections:
    """The source pool (wikiart, or its quick subset), its subsets and the targets, as run configs' `data`."""

    def __init__(self, settings: Settings):
        from artlab import load

        self.settings = settings
        self.folder = settings.runs / f"{settings.prefix}-manifests"
        wikiart = load(WIKIART).table[["path", "label"]]
        self.pool = stratified(wikiart, ["label"], settings.images)
        self.source = str(WIKIART) if not settings.quick else write_manifest(self.pool, self.folder / "wikiart.csv")
        self.styles = sorted(self.pool["label"].unique())
        self.style_order = tuple(str(s) for s in np.random.default_rng(0).permutation(self.styles))

    def target(self, name: str) -> dict:
        """A target's TrainConfig fields: genres (a split drawn per seed), People-Art person (its official split)."""
        from artlab import load

        quick = self.settings.images
        if name == "genres":
            data = str(GENRES) if not quick else write_manifest(
                stratified(load(GENRES).table[["path", "label"]], ["label"], quick), self.folder / "genres.csv")
            return {"data": data, "task": "label"}
        data = str(PEOPLEART) if not quick else write_manifest(
            stratified(load(PEOPLEART).table.dropna(subset=["person"])[["path", "split", "person"]],
                       ["split", "person"], quick), self.folder / "peopleart-person.csv")
        return {"data": data, "task": "person", "split": "official"}

    def target_collection(self, name: str):
        """The target's images as its runs see them (People-Art: those with a person label), for the distance."""
        from artlab import load

        fields = self.target(name)
        collection = load(fields["data"])
        return collection.labelled(fields["task"]) if name == "person" else collection

    def factor_sources(self) -> list[Source]:
        """The sources of the factor study: smaller stratified subsets, fewer styles, and the whole pool (both
        factors' last value: one source, the routes' own)."""
        everything = Source("size", len(self.pool), self.source, len(self.pool), tuple(self.styles), "all")
        sources = []
        for size in self.settings.sizes:
            subset = stratified(self.pool, ["label"], size)
            sources.append(Source("size", size, write_manifest(subset, self.folder / f"wikiart-{size}.csv"),
                                  len(subset), tuple(self.styles), f"n{size}"))
        sources.append(everything)
        for count in CLASSES:
            styles = self.style_order[:count]
            subset = self.pool[self.pool["label"].isin(styles)]
            sources.append(Source("classes", count, write_manifest(subset, self.folder / f"wikiart-{count}styles.csv"),
                                  len(subset), tuple(sorted(styles)), f"{count}styles"))
        sources.append(Source("classes", len(self.styles), self.source, len(self.pool), tuple(self.styles), "all"))
        return sources


# ---- the studies ------------------------------------------------------------------------------------------------
def stage(settings: Settings, **fields):
    from artlab.training import TrainConfig

    return TrainConfig(epochs=settings.epochs, freeze=settings.freeze, patience=settings.patience, **fields)


def study_name(settings: Settings, target: str, source: str = "wikiart") -> str:
    return f"medium-{source}-to-{target}-{settings.tag}"


def routes_study(settings: Settings, collections: Collections, target: str, seeds: tuple[int, ...],
                 routes: tuple[str, ...], reports: Path):
    """ImageNet -> wikiart -> target and the direct routes asked for, for each seed (finished runs reused)."""
    from artlab.experiments import double_finetune

    return double_finetune(stage(settings, data=collections.source, task="label"),
                           stage(settings, **collections.target(target)), seeds=seeds, routes=routes,
                           image_size=settings.image_size, runs_dir=settings.runs, reports_dir=reports,
                           name=study_name(settings, target))


def labelled(cells: pd.DataFrame, **columns) -> pd.DataFrame:
    """`cells` with `columns` set, first."""
    return cells.assign(**columns)[[*columns, *(c for c in cells.columns if c not in columns)]]


def run_study(settings: Settings, targets: list[str], factors: bool) -> None:
    from artlab.experiments import ROUTES

    start = time.perf_counter()
    before = finished_runs(settings.runs)
    collections = Collections(settings)
    routes = ROUTES[:4]  # everything but scratch
    reports = settings.runs / "reports"
    cells, timings = [], {}
    for target in targets:
        began = time.perf_counter()
        study = routes_study(settings, collections, target, settings.seeds, routes, reports)
        timings[f"routes to {target}"] = time.perf_counter() - began
        cells.append(labelled(study.cells, part="routes", target=target, source="wikiart"))
        print(f"\n{target}: {study.report}\n{study.summary.to_string(index=False)}")
    if factors:
        began = time.perf_counter()
        cells.append(factor_cells(settings, collections, reports / "factors"))
        timings["source factors"] = time.perf_counter() - began
    cells = pd.concat(cells, ignore_index=True)
    began = time.perf_counter()
    distances = source_distances(settings, collections, targets, factors)
    timings["distances"] = time.perf_counter() - began
    trained = len(finished_runs(settings.runs) - before)
    write_results(settings, collections, cells, distances, timings, trained, time.perf_counter() - start)


def factor_cells(settings: Settings, collections: Collections, reports: Path) -> pd.DataFrame:
    """Per factor source and seed: its source stage and double fine-tuning on genres; single fine-tuning on the
    same genre split (labelled source "none"), the pair's other half. The whole pool's runs are the routes'."""
    from artlab.experiments import ROUTES, double_finetune

    seeds = settings.factor_seeds
    base = routes_study(settings, collections, "genres", seeds, (ROUTES[2], ROUTES[3]), reports)
    parts = {"none": base.cells[base.cells["route"] == ROUTES[2]]}
    for source in collections.factor_sources():
        if source.key in parts:  # the whole pool: the last value of both factors
            continue
        study = base if source.key == "all" else double_finetune(
            stage(settings, data=source.data, task="label"), stage(settings, **collections.target("genres")),
            seeds=seeds, routes=(ROUTES[3],), image_size=settings.image_size, runs_dir=settings.runs,
            reports_dir=reports, name=study_name(settings, "genres", f"wikiart-{source.key}"))
        parts[source.key] = study.cells[study.cells["route"] != ROUTES[2]]
    return pd.concat([labelled(cells, part="factors", target="genres", source=key) for key, cells in parts.items()],
                     ignore_index=True)


def source_distances(settings: Settings, collections: Collections, targets: list[str], factors: bool) -> pd.DataFrame:
    """The Fréchet distance (and the distance between means) in ImageNet feature space between each source and its
    target, as `artlab distance` computes it (pooled features of the last block, cached on disk)."""
    from artlab import collection_distance

    pairs = [("wikiart", collections.source, target) for target in targets]
    if factors:
        pairs += [(s.key, s.data, "genres") for s in collections.factor_sources() if s.key != "all"]
        pairs += [("wikiart", collections.source, "genres")] if "genres" not in targets else []
    rows, seen = [], {}
    for key, data, target in pairs:
        if target not in seen:
            seen[target] = collections.target_collection(target)
        distance = collection_distance(data, seen[target], image_size=settings.image_size)
        rows.append({"source": key, "target": target, "frechet": distance.frechet,
                     "mean_distance": distance.mean_distance, "source images": distance.images_a,
                     "target images": distance.images_b})
    return pd.DataFrame(rows)


# ---- tables -----------------------------------------------------------------------------------------------------
def interval(values: pd.Series, level: float = LEVEL) -> dict:
    """Mean, sd and the t interval of the mean of paired differences (none with one seed)."""
    from scipy import stats

    values = values.dropna().to_numpy(dtype=float)
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    sd = float(values.std(ddof=1)) if n > 1 else math.nan
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n) if n > 1 else math.nan
    return {"seeds": n, "mean": mean, "sd": sd, "ci low": mean - half, "ci high": mean + half}


def differences(cells: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Double minus single fine-tuning per seed (routes: per target; factors: per source against single fine-tuning
    on the same genre split), for each metric; and per comparison the mean difference with its paired interval."""
    from artlab.experiments import ROUTES
    from artlab.experiments.study import paired

    names = ("double", "single", "double - single")
    routes = cells[cells["part"] == "routes"]
    factors = cells[(cells["part"] == "factors") & (cells["route"] != "source stage")]
    sources = [s for s in factors["source"].unique() if s != "none"]
    per_seed = []
    for metric in (m for m in METRICS if m in cells):
        if len(routes):
            table = paired(routes, "route", (ROUTES[3], ROUTES[2]), metric, names, by=("target",))
            per_seed.append(table.assign(part="routes", source="wikiart", metric=metric))
        for source in sources:
            table = paired(factors[factors["source"].isin([source, "none"])], "source", (source, "none"), metric, names)
            per_seed.append(table.assign(part="factors", target="genres", source=source, metric=metric))
    if not per_seed:
        return pd.DataFrame(), pd.DataFrame()
    keys = ["part", "target", "source", "metric"]
    per_seed = pd.concat(per_seed, ignore_index=True)[[*keys, "seed", *names]]
    gains = pd.DataFrame([dict(zip(keys, key)) | interval(part[names[2]])
                          for key, part in per_seed.groupby(keys, sort=False)])
    return per_seed, gains


def route_summary(cells: pd.DataFrame) -> pd.DataFrame:
    from artlab.experiments.study import spread

    routes = cells[cells["part"] == "routes"]
    return spread(routes, ["target", "route"], [m for m in METRICS if m in routes])


def factor_table(cells: pd.DataFrame, gains: pd.DataFrame, distances: pd.DataFrame,
                 sources: list[Source]) -> pd.DataFrame:
    from artlab.experiments import ROUTES

    factors = cells[cells["part"] == "factors"]
    rows = []
    for source in sources:
        mine = factors[factors["source"] == source.key]
        stage_ = mine.loc[mine["route"] == "source stage", "accuracy"]
        double = mine.loc[mine["route"] == ROUTES[3], "accuracy"]
        gain = gains[(gains["part"] == "factors") & (gains["source"] == source.key) & (gains["metric"] == "accuracy")]
        near = distances[(distances["source"] == (source.key if source.key != "all" else "wikiart"))
                         & (distances["target"] == "genres")]
        rows.append({"factor": source.factor, "value": source.value, "source": source.key, "images": source.images,
                     "styles": " ".join(source.styles), "frechet to genres": near["frechet"].iloc[0],
                     "mean distance": near["mean_distance"].iloc[0], "source stage accuracy": stage_.mean(),
                     "double accuracy mean": double.mean(), "double accuracy sd": double.std(ddof=1),
                     "seeds": len(double), "double - single mean": gain["mean"].iloc[0],
                     "ci low": gain["ci low"].iloc[0], "ci high": gain["ci high"].iloc[0]})
    return pd.DataFrame(rows)


def finished_runs(root: Path) -> set[str]:
    return {p.parent.name for p in root.glob("*/metrics.json")} if root.is_dir() else set()


def write_results(settings: Settings, collections: Collections, cells: pd.DataFrame, distances: pd.DataFrame,
                  timings: dict[str, float], trained: int, seconds: float) -> None:
    per_seed, gains = differences(cells)
    summary = route_summary(cells)
    factors = (factor_table(cells, gains, distances, collections.factor_sources())
               if (cells["part"] == "factors").any() else pd.DataFrame())
    out = settings.results
    out.mkdir(parents=True, exist_ok=True)
    tables = {"routes": summary, "difference": per_seed, "gain": gains, "factors": factors, "cells": cells,
              "distance": distances}
    for part, table in tables.items():
        if len(table):
            table.to_csv(out / f"{settings.prefix}-{part}.csv", index=False)
    runs = cells["run"].nunique()
    text = markdown(settings, summary, per_seed, gains, factors, distances, timings, runs, trained, seconds,
                    kept_note(cells))
    (out / f"{settings.prefix}.md").write_text(text)
    print("\n" + text)
    print(f"tables: {out}/{settings.prefix}-*.csv")


def kept_note(cells: pd.DataFrame) -> str:
    """How many images each source stage kept out (the target's validation and test images, or look-alikes)."""
    if "kept out" not in cells:
        return ""
    stages = cells[cells["route"] == "source stage"].drop_duplicates("run")
    if not stages["kept out"].fillna(0).any():
        return "It kept no image out."
    parts = []
    for (target, source), part in stages.groupby(["target", "source"], sort=False):
        counts = ", ".join(f"{int(n)} (seed {seed})" for seed, n in zip(part["seed"], part["kept out"].fillna(0)))
        parts.append(f"{source} -> {target}: {counts}")
    return "Images kept out of the source stages by the leak guard: " + "; ".join(parts) + "."


def _pct(value: float, signed: bool = False) -> str:
    return "" if pd.isna(value) else f"{value * 100:+.1f}" if signed else f"{value * 100:.1f}%"


def markdown(settings: Settings, summary: pd.DataFrame, per_seed: pd.DataFrame, gains: pd.DataFrame,
             factors: pd.DataFrame, distances: pd.DataFrame, timings: dict[str, float], runs: int, trained: int,
             seconds: float, kept: str = "") -> str:
    from artlab.plots import markdown_table

    patience = f"early stopping after {settings.patience} epochs without improvement" if settings.patience else \
        "no early stopping"
    lines = [f"# Double fine-tuning at medium scale{' (quick smoke test)' if settings.quick else ''}", "",
             f"MobileNetV2 at {settings.image_size} px from ImageNet; every fine-tuning stage {settings.epochs} "
             f"epoch{'s' if settings.epochs != 1 else ''}, "
             f"first {settings.freeze} blocks frozen, {patience}; seeds {list(settings.seeds)} (factors: "
             f"{list(settings.factor_seeds)}). Source: wikiart_styles ({_source_words(settings)}); targets: genres "
             f"(a stratified 70/15/15 split per seed) and the People-Art person task (official split). The leak guard "
             f"keeps the target's validation and test images out of its source stages. {kept + ' ' if kept else ''}"
             f"{runs} runs, {trained} trained by "
             f"this invocation; wall time {seconds:.0f} s ("
             + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + ").", ""]
    shown = summary.assign(**{c: summary[c].map(_pct) for c in summary if c.endswith((" mean", " sd"))},
                           route=summary["route"].replace("source stage", "source stage (its own wikiart test split)"))
    lines += ["## Test scores per route (mean and sd over seeds)", "", markdown_table(shown)]
    routes = gains[gains["part"] == "routes"] if len(gains) else gains
    if len(routes):
        seeds = per_seed[per_seed["part"] == "routes"]
        lines += [f"## Double minus single fine-tuning (points; paired {LEVEL:.0%} t interval over seeds)", ""]
        for row in routes.to_dict("records"):
            mine = seeds[(seeds["target"] == row["target"]) & (seeds["metric"] == row["metric"])]
            each = ", ".join(f"{_pct(v, True)} (seed {s})" for s, v in zip(mine["seed"], mine["double - single"]))
            ci = f" [{_pct(row['ci low'], True)}, {_pct(row['ci high'], True)}]" if row["seeds"] > 1 else ""
            lines.append(f"- {row['target']}, {row['metric']}: mean {_pct(row['mean'], True)}{ci}; per seed {each}")
        lines.append("")
    if len(distances):
        lines += ["## Source-target distance (ImageNet features, `artlab distance`)", "",
                  markdown_table(distances.round(3))]
    if len(factors):
        shown = factors.drop(columns=["styles"]).assign(
            **{c: factors[c].map(_pct) for c in ("source stage accuracy", "double accuracy mean",
                                                 "double accuracy sd")},
            **{c: factors[c].map(lambda v: _pct(v, True)) for c in ("double - single mean", "ci low", "ci high")},
            **{c: factors[c].round(2) for c in ("frechet to genres", "mean distance")})
        styles = "; ".join(f"{row.source}: {row.styles}" for row in factors.itertuples(index=False)
                           if row.factor == "classes")
        lines += ["## Source factors on genres", "",
                  "Each source a source stage then double fine-tuning on genres; double - single: against single "
                  "fine-tuning on the same genre split, per seed (points, with its paired interval). The source "
                  "stage's accuracy is on its own test split (7, 4 or 2 styles: not comparable across the class "
                  "factor). Fewer styles are also fewer images (all of each style's paintings). The Fréchet "
                  "distance between finite samples has a positive bias that shrinks with the number of images, so "
                  "across source sizes compare the distance between means too.", "", markdown_table(shown),
                  f"Styles: {styles}.", ""]
    return "\n".join(lines)


def _source_words(settings: Settings) -> str:
    if settings.quick:
        return f"a stratified subset of {settings.images} paintings, 7 styles; the targets cut to as many"
    return "10,500 paintings, 7 styles"


if __name__ == "__main__":
    main()
