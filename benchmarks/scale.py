"""Benchmark: how artlab's time and memory grow with the number of images (issue 20), on wikiart_styles.

    flock /tmp/artlab-cpu.lock .venv/bin/python benchmarks/scale.py                 # 1,000, 5,000, 10,500 images
    python benchmarks/scale.py --sizes 1000,5000 --steps extract,finetune,baseline  # some sizes, some steps
    python benchmarks/scale.py --quick                                              # 200 images: a smoke test

Each size is a fixed stratified sample of `../shared/data/wikiart_styles` (7 styles, 224 px JPEGs)
with a fixed stratified 70/15/15 split, written as a CSV manifest (`path,style,split`) to
`benchmarks/runs/scale/` (no image is copied); MobileNetV2 at 128 px on the CPU. Every step runs in
a child process of its own with its own empty ARTLAB_CACHE (unless said otherwise), which reports
the step's seconds and its peak resident memory (ru_maxrss of itself and of its children). The
files are read once per size before the steps, so "cold" means artlab's cache, not the disk's.

  extract    artlab.features.extract of the pooled `features.18` (forward_speed.artlab_features):
             extract-cold             an empty cache (decoding, the decoded-image cache filled)
             extract-decoded-cached   a second child on that cache: decoding cached, features recomputed
  finetune   artlab.training.train(TrainConfig(..., epochs=2, batch_size=64)), a fresh run and cache:
             finetune-full-*          everything trained (freeze 0), augmentation on
             finetune-frozen-*        TrainConfig(freeze=10, augment=False): the frozen-prefix cache of
                                      the centre crops
             finetune-frozen-aug-*    TrainConfig(freeze=10), augmentation on, the package's defaults
                                      otherwise: with `augment_views` (4 by default) the prefix cache holds
                                      that many augmented crops of each training image; an artlab without
                                      it runs every block at every step (`prefix_cache_used` in the JSON)
             `--frozen-option KEY=VALUE` sets a TrainConfig field of both frozen runs (`augment_views=8`);
             `--variants` picks some of full, frozen, frozen-aug (for the baseline's epochs too).
             *-epoch is an epoch after the first, *-first-epoch the first one (with the frozen-prefix
             cache it computes the frozen blocks' output); an epoch is a pass over the training images
             plus one over the validation images, timed inside the run by finetune_speed.instrument
             (the same spans as finetune_speed.py). Should that hook be gone, the epoch is the wall time
             of the 2-epoch run minus that of a 1-epoch run (method "difference" in the JSON).
  analyze    artlab.analysis.analyze(Comparison(<finetune-full run>, k=100)) on the run's N images:
             params + CKA + top-k in one pass, tables and report written (`artlab analyze`)
  map        collection_map(collection, layer_features("imagenet", paths), "tsne") on the N images,
             from an empty cache (checks, features, t-SNE); map-tsne is the t-SNE part alone
  audit      artlab.experiments.audit(<finetune-full run>, by="style") on its test images
  baseline   the plain PyTorch loops of forward_speed.py and finetune_speed.py on the same images:
             baseline-extract (forward_speed.plain_pass), baseline-finetune-{full,frozen,frozen-aug}-epoch
             (finetune_speed.plain_run with the same freezing and augmentation, 1 epoch: the plain loop
             does the same work every epoch)

Analyze and audit use the finetune step's full run of the same size; if it is missing (the finetune
step not run), it is trained first, untimed. Output: benchmarks/results/scale.{json,csv,html}
(`--quick`: scale-quick.*): a row per step and size with seconds, images/s, peak MiB and the cost per
image relative to the 1,000-image size (else the smallest measured); the chart is seconds against
images, log-log (a slope of 1 is a constant cost per image). Images/s counts the images a step
processes (the collection; the training images for an epoch, as finetune_speed.py does; the test
images for the audit); the cost per image is seconds over the collection's size. `--repeats N`
measures each step N times (fresh child, run and cache each) and keeps the median and the largest
peak; a single measurement moves by up to 25% on a shared 2-core machine (forward_speed.py), so
use 3 where the time allows. Rows of earlier calls for other steps or sizes are kept (`--fresh`
drops them). Goals: the cost per image stays within 20% from 1,000 to 10,500 images, and every
step peaks at 4 GiB or less.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import date
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import pandas as pd  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import finetune_speed  # noqa: E402
import forward_speed  # noqa: E402

WIKIART = HERE.parent.parent / "shared" / "data" / "wikiart_styles"
WORK = HERE / "runs" / "scale"
RESULTS = HERE / "results"
STEPS = ("extract", "finetune", "analyze", "map", "audit", "baseline")
SIZES, QUICK_SIZE = (1000, 5000, 10500), 200
SIZE, BATCH = forward_speed.SIZE, forward_speed.BATCH  # 128 px, 64 images a batch on both sides
FREEZE, EPOCHS, K = 10, 2, 100
REFERENCE = 1000  # cost per image relative to this size (else the smallest measured)
GOAL_SPREAD, GOAL_MIB = 0.20, 4096
#: What each row measures: its group (--steps), what it counts as the images processed, and what it runs.
ROWS = {
    "extract-cold": ("extract", "images", "artlab.features.extract, features.18 pooled, empty cache"),
    "extract-decoded-cached": ("extract", "images", "the same on the cache the cold pass filled"),
    "finetune-full-epoch": ("finetune", "train", "freeze 0, augmentation: an epoch after the first"),
    "finetune-full-first-epoch": ("finetune", "train", "freeze 0, augmentation: the first epoch"),
    "finetune-frozen-epoch": ("finetune", "train", f"freeze {FREEZE}: an epoch after the first"),
    "finetune-frozen-first-epoch": ("finetune", "train", f"freeze {FREEZE}: the first epoch (prefix cache built)"),
    "finetune-frozen-aug-epoch": ("finetune", "train", f"freeze {FREEZE}, augmentation: an epoch after the first"),
    "finetune-frozen-aug-first-epoch": ("finetune", "train", f"freeze {FREEZE}, augmentation: the first epoch"),
    "analyze": ("analyze", "images", f"analyze(Comparison(full run, k={K})): params, CKA, top-k, report"),
    "map": ("map", "images", "check images + layer_features('imagenet') + collection_map t-SNE, empty cache"),
    "map-tsne": ("map", "images", "collection_map t-SNE alone (part of map)"),
    "audit": ("audit", "test", "audit(full run, by='style') on the test split, empty cache"),
    "baseline-extract": ("baseline", "images", "forward_speed.plain_pass: plain PyTorch, features.18 pooled"),
    "baseline-finetune-full-epoch": ("baseline", "train", "finetune_speed.plain_run, freeze 0, augmentation"),
    "baseline-finetune-frozen-epoch": ("baseline", "train", f"finetune_speed.plain_run, freeze {FREEZE}"),
    "baseline-finetune-frozen-aug-epoch": ("baseline", "train",
                                           f"finetune_speed.plain_run, freeze {FREEZE}, augmentation"),
}
VARIANTS = ("full", "frozen", "frozen-aug")
#: The baseline row each artlab row is set beside.
BASELINE_OF = {"extract-cold": "baseline-extract", "extract-decoded-cached": "baseline-extract",
               "finetune-full-epoch": "baseline-finetune-full-epoch",
               "finetune-frozen-epoch": "baseline-finetune-frozen-epoch",
               "finetune-frozen-aug-epoch": "baseline-finetune-frozen-aug-epoch"}


# ---- the samples --------------------------------------------------------------------------------------------
def write_manifest(n: int) -> Path:
    """A fixed stratified sample of `n` wikiart_styles images with a fixed stratified 70/15/15 split, as a manifest."""
    from sklearn.model_selection import train_test_split

    from artlab.data import load

    table = load(WIKIART, layout="folders", task="style").table[["path", "style"]]
    if n > len(table):
        raise SystemExit(f"--sizes: wikiart_styles has {len(table)} images, not {n}")
    if n < len(table):
        table = table.loc[train_test_split(table.index, train_size=n, stratify=table["style"], random_state=0)[0]]
    table = table.sort_values("path").reset_index(drop=True)
    train, rest = train_test_split(table.index, test_size=0.3, stratify=table["style"], random_state=0)
    val, test = train_test_split(rest, test_size=0.5, stratify=table.loc[rest, "style"], random_state=0)
    table["split"] = ""
    for part, rows in (("train", train), ("val", val), ("test", test)):
        table.loc[rows, "split"] = part
    path = WORK / f"wikiart_styles-{n}.csv"
    text = table.to_csv(index=False)
    if not path.is_file() or path.read_text() != text:
        from artlab.io import write_text

        write_text(path, text)
    return path


def manifest_paths(manifest: str | Path, part: str | None = None) -> list[str]:
    table = pd.read_csv(manifest)
    return table["path"].tolist() if part is None else table.loc[table["split"] == part, "path"].tolist()


# ---- the child processes: one step each ---------------------------------------------------------------------
def timed(function: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def peak_mib() -> float:
    """Peak resident memory of this process (and of any process it waited for), in MiB."""
    return max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024


def child_extract(spec: dict) -> dict:
    from artlab import models
    from artlab.data import ImageDataset

    paths = manifest_paths(spec["manifest"])
    decoded = ImageDataset(paths, None, SIZE, models.input_transform(models.build("mobilenet_v2"), SIZE),
                           keep=False).cached_fraction()
    seconds, _ = timed(lambda: forward_speed.artlab_features(paths))
    return {"rows": [{"step": spec["step"], "seconds": seconds, "processed": len(paths)}],
            "details": {"decoded_cached_before": decoded}}


def child_baseline_extract(spec: dict) -> dict:
    paths = manifest_paths(spec["manifest"])
    seconds, _ = timed(lambda: forward_speed.plain_pass(paths))
    return {"rows": [{"step": "baseline-extract", "seconds": seconds, "processed": len(paths)}]}


def train_config(manifest: str, name: str, epochs: int, options: dict):
    from artlab.training import TrainConfig

    return TrainConfig(name=name, data=str(manifest), task="style", image_size=SIZE, epochs=epochs, batch_size=BATCH,
                       lr=finetune_speed.LR, backbone_lr_mult=finetune_speed.MULT, device="cpu", seed=0, **options)


def fresh_cache() -> str:
    (WORK / "caches").mkdir(parents=True, exist_ok=True)
    os.environ["ARTLAB_CACHE"] = tempfile.mkdtemp(prefix="cache-", dir=WORK / "caches")
    return os.environ["ARTLAB_CACHE"]


def child_finetune(spec: dict) -> dict:
    """A fresh 2-epoch run (its earlier folder removed); its epochs timed inside the run, else by difference."""
    from artlab.training import train

    runs, name, variant = Path(spec["runs"]), spec["name"], spec["variant"]
    n_train = len(manifest_paths(spec["manifest"], "train"))
    shutil.rmtree(runs / name, ignore_errors=True)
    try:
        finetune_speed.instrument()  # records loops._train_epoch, the validation predict and training_inputs
        instrumented = True
    except AttributeError as exc:
        instrumented, why = False, str(exc)
    finetune_speed._SPANS.clear()
    total, result = timed(lambda: train(train_config(spec["manifest"], name, EPOCHS, spec["options"]), runs_dir=runs))
    spans = list(finetune_speed._SPANS)
    prefix_files = sorted(p.name for p in (Path(os.environ["ARTLAB_CACHE"]) / "prefix").glob("*.safetensors"))
    trains = [s for label, s in spans if label == "_train_epoch"]
    validations = [s for label, s in spans if label == "validating"]
    details = {"run": str(result.run.path), "whole_run_s": total, "accuracy": result.metrics.get("accuracy"),
               "history": result.history, "prefix_cache_used": bool(prefix_files), "options": spec["options"],
               "config": {k: v for k, v in result.run.config().items() if k in ("freeze", "augment", "augment_views")}}
    if instrumented and len(trains) == len(validations) == EPOCHS:
        inputs = sum(s for label, s in spans if label == "training_inputs")
        epochs = [t + v for t, v in zip(trains, validations)]
        epochs[0] += inputs  # the first epoch pays for preparing its inputs (the frozen-prefix cache)
        details |= {"method": "spans", "epoch_s": epochs, "training_inputs_s": inputs}
        rows = [{"step": f"finetune-{variant}-first-epoch", "seconds": epochs[0], "processed": n_train}]
        later = sum(epochs[1:]) / len(epochs[1:])
    else:  # the hook is gone: an epoch is a 2-epoch run minus a 1-epoch run, each from an empty cache
        shutil.rmtree(os.environ["ARTLAB_CACHE"], ignore_errors=True)
        fresh_cache()
        shutil.rmtree(runs / f"{name}-1ep", ignore_errors=True)
        one, _ = timed(lambda: train(train_config(spec["manifest"], f"{name}-1ep", 1, spec["options"]), runs_dir=runs))
        later = total - one
        details |= {"method": "difference", "one_epoch_run_s": one,
                    "why": why if not instrumented else f"spans {len(trains)} epochs, {len(validations)} validations"}
        rows = []
    rows.insert(0, {"step": f"finetune-{variant}-epoch", "seconds": later, "processed": n_train})
    return {"rows": rows, "details": details}


def child_baseline_finetune(spec: dict) -> dict:
    n_train = len(manifest_paths(spec["manifest"], "train"))
    run = finetune_speed.plain_run(Path(spec["manifest"]), spec["freeze"], spec["augment"], 1, 0)
    return {"rows": [{"step": spec["step"], "seconds": run["epochs"][0], "processed": n_train}],
            "details": {"whole_run_s": run["total"], "accuracy": run["accuracy"], "freeze": spec["freeze"],
                        "augment": spec["augment"]}}


def child_prepare(spec: dict) -> dict:
    """Train the full run that analyze and audit study (untimed: the finetune step was not run)."""
    from artlab.training import train

    train(train_config(spec["manifest"], spec["name"], EPOCHS, spec["options"]), runs_dir=spec["runs"])
    return {"rows": []}


def child_analyze(spec: dict) -> dict:
    from artlab.analysis import Comparison, analyze

    out = tempfile.mkdtemp(prefix="analysis-", dir=os.environ["ARTLAB_CACHE"])
    seconds, result = timed(lambda: analyze(Comparison(spec["run"], k=K, device="cpu"), out_dir=out))
    return {"rows": [{"step": "analyze", "seconds": seconds, "processed": len(result.labels)}],
            "details": {"what": list(result.comparison.what), "layers": int(result.tables["cka"]["layer"].nunique())}}


def child_map(spec: dict) -> dict:
    from artlab.data import load
    from artlab.interpret.projection import collection_map, layer_features

    start = time.perf_counter()
    checked, collection = timed(lambda: load(spec["manifest"]).check_images())
    paths = collection.table["path"].tolist()
    features_s, features = timed(lambda: layer_features("imagenet", paths, device="cpu"))
    tsne_s, table = timed(lambda: collection_map(collection, features, "tsne", color="style"))
    seconds = time.perf_counter() - start
    return {"rows": [{"step": "map", "seconds": seconds, "processed": len(table)},
                     {"step": "map-tsne", "seconds": tsne_s, "processed": len(table)}],
            "details": {"check_images_s": checked, "features_s": features_s, "tsne_s": tsne_s}}


def child_audit(spec: dict) -> dict:
    from artlab.experiments import audit

    out = tempfile.mkdtemp(prefix="audit-", dir=os.environ["ARTLAB_CACHE"])
    seconds, result = timed(lambda: audit(spec["run"], by="style", out_dir=out))
    return {"rows": [{"step": "audit", "seconds": seconds, "processed": int(result.table["images"].sum())}],
            "details": {"gap": result.gap}}


CHILDREN = {"extract": child_extract, "baseline-extract": child_baseline_extract, "finetune": child_finetune,
            "baseline-finetune": child_baseline_finetune, "prepare": child_prepare, "analyze": child_analyze,
            "map": child_map, "audit": child_audit}


def child(spec_file: str) -> None:
    """Run one step as the spec says and write its rows, details and peak memory to the spec's `out` file."""
    spec = json.loads(Path(spec_file).read_text())
    try:
        report = CHILDREN[spec["kind"]](spec)
    except BaseException as exc:
        report = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    report["peak_mib"] = peak_mib()
    Path(spec["out"]).write_text(json.dumps(report, default=str))
    if "error" in report:
        sys.stderr.write(report["traceback"])
        sys.exit(1)


# ---- the parent: sizes, steps, results ----------------------------------------------------------------------
class Bench:
    """Runs the steps of one call in child processes and keeps every row measured (and kept from earlier calls)."""

    def __init__(self, out: Path, fresh: bool, frozen_options: dict, variants: list[str]):
        self.out, self.frozen_options, self.chosen = out, frozen_options, variants
        self.settings = {"collection": "wikiart_styles", "arch": "mobilenet_v2", "image_size": SIZE,
                         "batch_size": BATCH, "epochs": EPOCHS, "freeze": FREEZE, "k": K,
                         "frozen_options": frozen_options}
        self.rows: dict[tuple[str, int], dict] = {}
        self.details: dict[str, dict] = {}
        self.errors: list[dict] = []
        self.samples: dict[tuple[str, int], list[dict]] = {}
        self.step = ""
        self.version = code_version()
        earlier = out.with_suffix(".json")
        if not fresh and earlier.is_file():
            saved = json.loads(earlier.read_text())
            if saved.get("settings") == self.settings:
                self.rows = {(r["step"], r["size"]): r for r in saved.get("rows", [])}
                self.details = saved.get("details", {})
                print(f"keeping {len(self.rows)} rows of {earlier} (--fresh drops them)", flush=True)
            else:
                print(f"{earlier} was measured with other settings: its rows are dropped", flush=True)

    def spawn(self, kind: str, size: int, cache: str, **spec) -> dict | None:
        """One child process; its rows stored with their peak memory. None (and the error recorded) if it failed."""
        work = Path(tempfile.mkdtemp(prefix="child-", dir=WORK / "caches"))
        spec = {"kind": kind, "out": str(work / "out.json"), **spec}
        (work / "spec.json").write_text(json.dumps(spec))
        label = spec.get("step") or spec.get("variant") or kind
        print(f"[{size} images] {kind} {label if label != kind else ''}".rstrip() + " ...", flush=True)
        env = {**os.environ, "ARTLAB_CACHE": cache, "TQDM_DISABLE": "1"}
        done = subprocess.run([sys.executable, __file__, "--child", str(work / "spec.json")], env=env, check=False)
        out = work / "out.json"
        report = json.loads(out.read_text()) if out.is_file() else {"error": f"exit status {done.returncode}"}
        shutil.rmtree(work, ignore_errors=True)
        if "error" in report:
            print(f"  FAILED: {report['error']}", flush=True)
            self.errors.append({"size": size, "kind": kind, "label": label, "error": report["error"]})
            return None
        for row in report["rows"]:
            samples = self.samples.setdefault((row["step"], size), [])
            samples.append(row | {"peak_mib": report["peak_mib"]})
            self.rows[(row["step"], size)] = {
                "step": row["step"], "size": size, "processed": row["processed"],
                "seconds": statistics.median(r["seconds"] for r in samples),
                "peak_mib": max(r["peak_mib"] for r in samples), "repeats": len(samples),
                "seconds_each": [r["seconds"] for r in samples], "code": self.version,
                "measured": date.today().isoformat()}
            print(f"  {row['step']:32s} {row['seconds']:8.1f} s  {row['processed'] / row['seconds']:8.1f} images/s  "
                  f"peak {report['peak_mib']:6.0f} MiB", flush=True)
        if report.get("details"):  # by step, then label@size: one dict per repeat
            self.details.setdefault(self.step, {}).setdefault(f"{label}@{size}", []).append(report["details"])
        return report

    def measure(self, step: str, size: int, manifest: Path, repeats: int) -> None:
        """One step at one size, `repeats` times (each a fresh child, run and cache): median seconds, largest peak."""
        self.samples, self.step = {}, step
        earlier = self.details.get(step, {})
        for key in [key for key in earlier if key.endswith(f"@{size}")]:
            del earlier[key]  # what an earlier call recorded for this step and size (its rows are replaced too)
        for _ in range(repeats):
            getattr(self, step)(size, manifest)

    def with_cache(self, function: Callable[[str], object]) -> None:
        """Call `function(cache)` with a fresh empty cache folder, removed afterwards."""
        (WORK / "caches").mkdir(parents=True, exist_ok=True)
        cache = tempfile.mkdtemp(prefix="cache-", dir=WORK / "caches")
        try:
            function(cache)
        finally:
            shutil.rmtree(cache, ignore_errors=True)

    # -- the steps --
    def extract(self, size: int, manifest: Path) -> None:
        def both(cache: str) -> None:
            if self.spawn("extract", size, cache, manifest=str(manifest), step="extract-cold"):
                self.spawn("extract", size, cache, manifest=str(manifest), step="extract-decoded-cached")

        self.with_cache(both)

    def variants(self, every: bool = False) -> dict[str, dict]:
        """The fine-tuning runs chosen (`every`: all of them): their TrainConfig fields beyond the shared ones."""
        options = {"full": {"freeze": 0, "augment": True},
                   "frozen": {"freeze": FREEZE, "augment": False, **self.frozen_options},
                   "frozen-aug": {"freeze": FREEZE, "augment": True, **self.frozen_options}}
        return {name: value for name, value in options.items() if every or name in self.chosen}

    def finetune(self, size: int, manifest: Path) -> None:
        for variant, options in self.variants().items():
            self.with_cache(lambda cache, v=variant, o=options: self.spawn(
                "finetune", size, cache, manifest=str(manifest), runs=str(runs_dir(size)), name=run_name(size, v),
                variant=v, options=o))

    def subject(self, size: int, manifest: Path) -> str | None:
        """The full fine-tuned run of this size that analyze and audit study (trained, untimed, if missing)."""
        from artlab.runs import Run

        run = Run.named(run_name(size, "full"), runs_dir(size))
        if not run.finished:
            self.with_cache(lambda cache: self.spawn("prepare", size, cache, manifest=str(manifest),
                                                     runs=str(runs_dir(size)), name=run.name,
                                                     options=self.variants(every=True)["full"]))
        return str(run.path) if run.finished else None

    def analyze(self, size: int, manifest: Path) -> None:
        run = self.subject(size, manifest)
        if run:
            self.with_cache(lambda cache: self.spawn("analyze", size, cache, run=run))

    def map(self, size: int, manifest: Path) -> None:
        self.with_cache(lambda cache: self.spawn("map", size, cache, manifest=str(manifest)))

    def audit(self, size: int, manifest: Path) -> None:
        run = self.subject(size, manifest)
        if run:
            self.with_cache(lambda cache: self.spawn("audit", size, cache, run=run))

    def baseline(self, size: int, manifest: Path) -> None:
        self.with_cache(lambda cache: self.spawn("baseline-extract", size, cache, manifest=str(manifest)))
        for variant, options in self.variants().items():
            self.with_cache(lambda cache, v=variant, o=options: self.spawn(
                "baseline-finetune", size, cache, manifest=str(manifest), step=f"baseline-finetune-{v}-epoch",
                freeze=o["freeze"], augment=bool(o.get("augment", True))))

    # -- the results --
    def table(self) -> pd.DataFrame:
        """A row per step and size: seconds, images/s, peak MiB, cost per image against the reference size."""
        frame = pd.DataFrame(list(self.rows.values()))
        if frame.empty:
            return frame
        frame["group"] = frame["step"].map(lambda s: ROWS[s][0])
        frame["images_per_s"] = frame["processed"] / frame["seconds"]
        frame["ms_per_image"] = 1000 * frame["seconds"] / frame["size"]
        reference = frame.groupby("step")["size"].transform(lambda s: REFERENCE if (s == REFERENCE).any() else s.min())
        frame["reference_size"] = reference
        per_image = frame.set_index(["step", "size"])["ms_per_image"]
        frame["cost_ratio"] = [row.ms_per_image / per_image[(row.step, row.reference_size)]
                               for row in frame.itertuples()]
        rates = frame.set_index(["step", "size"])["images_per_s"]
        frame["baseline_images_per_s"] = [rates.get((BASELINE_OF.get(row.step), row.size), float("nan"))
                                          for row in frame.itertuples()]
        frame["vs_baseline"] = frame["images_per_s"] / frame["baseline_images_per_s"]
        frame["what"] = frame["step"].map(lambda s: ROWS[s][2])
        order = {step: i for i, step in enumerate(ROWS)}
        frame = frame.sort_values(["step", "size"], key=lambda c: c.map(order) if c.name == "step" else c)
        columns = ["step", "size", "processed", "seconds", "images_per_s", "peak_mib", "ms_per_image", "reference_size",
                   "cost_ratio", "baseline_images_per_s", "vs_baseline", "group", "what", "code"]
        return frame[columns].reset_index(drop=True)

    def goals(self, table: pd.DataFrame) -> dict:
        """Per step: the largest departure of the cost per image from the reference size, and the peak memory."""
        goals = {}
        for step, rows in table.groupby("step", sort=False):
            spread = float((rows["cost_ratio"] - 1).abs().max())
            growth = float(rows["cost_ratio"].max() - 1)
            goals[step] = {"sizes": rows["size"].tolist(), "cost_ratios": rows["cost_ratio"].round(3).tolist(),
                           "largest_departure": spread,
                           "cost_within_20pct": spread <= GOAL_SPREAD if len(rows) > 1 else None,
                           "largest_growth": growth,
                           "growth_within_20pct": growth <= GOAL_SPREAD if len(rows) > 1 else None,
                           "peak_mib": float(rows["peak_mib"].max()),
                           "memory_within_4gib": bool(rows["peak_mib"].max() <= GOAL_MIB)}
        return goals

    def write(self) -> None:
        import torch

        from artlab.io import write_csv, write_json
        from artlab.plots import write_figure

        table = self.table()
        machine = {"date": date.today().isoformat(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                   "cores": os.cpu_count()}
        goals = self.goals(table) if len(table) else {}
        write_json(self.out.with_suffix(".json"),
                   {"settings": self.settings, "machine": machine, "rows": list(self.rows.values()),
                    "table": table.to_dict("records"), "goals": goals, "details": self.details,
                    "errors": self.errors, "steps": {s: {"group": g, "counts": c, "what": w}
                                                     for s, (g, c, w) in ROWS.items()}})
        write_csv(self.out.with_suffix(".csv"), table.round(4))
        if len(table):
            write_figure(chart(table, machine), self.out.with_suffix(".html"))  # plotly.min.js beside it


def chart(table: pd.DataFrame, machine: dict):
    """Seconds against images per step, log-log (a slope of 1: the same cost per image at every size)."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for step, rows in table.groupby("step", sort=False):
        figure.add_trace(go.Scatter(
            x=rows["size"], y=rows["seconds"], mode="lines+markers", name=step,
            line={"dash": "dash" if step.startswith("baseline") else "solid"},
            customdata=rows[["images_per_s", "peak_mib", "cost_ratio"]],
            hovertemplate=f"<b>{step}</b><br>%{{x:,}} images: %{{y:.1f}} s<br>%{{customdata[0]:.1f}} images/s, "
                          "peak %{customdata[1]:.0f} MiB<br>cost per image %{customdata[2]:.2f}x the reference"
                          "<extra></extra>"))
    figure.update_layout(
        title=f"artlab at scale on wikiart_styles: seconds per step (MobileNetV2, {SIZE} px, {machine['cores']} "
              f"cores, {machine['date']}; dashed: plain PyTorch)",
        xaxis={"title": "images in the collection", "type": "log"}, yaxis={"title": "seconds", "type": "log"},
        legend={"title": "step"}, height=650)
    return figure


def code_version() -> str:
    """The commit measured, with "+modified" when artlab/ or benchmarks/ differ from it (rows of several calls mix)."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=HERE.parent, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+modified" if git("status", "--porcelain", "--", "artlab", "benchmarks") else "")


def runs_dir(size: int) -> Path:
    return WORK / str(size) / "runs"


def run_name(size: int, variant: str) -> str:
    return f"wikiart_styles-{size}-{variant}"


def option(text: str) -> tuple[str, object]:
    """KEY=VALUE, the value read as YAML (true, 4, 0.5, a string)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {text!r}")
    return key.strip(), yaml.safe_load(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", help=f"comma-separated numbers of images (default {','.join(map(str, SIZES))})")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, of {','.join(STEPS)} (default all)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SIZE} images: a smoke test (into scale-quick.*)")
    parser.add_argument("--frozen-option", action="append", type=option, default=[], metavar="KEY=VALUE",
                        help=f"a TrainConfig field of both frozen runs (freeze={FREEZE}; augment false for frozen, "
                             "true for frozen-aug), e.g. augment_views=8")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"the fine-tuning runs of finetune and baseline, of {','.join(VARIANTS)} (default all)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="measure each step this many times (fresh child, run and cache each): the median")
    parser.add_argument("--out", help="output path without suffix (default benchmarks/results/scale)")
    parser.add_argument("--fresh", action="store_true", help="drop the rows of earlier calls")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown or not steps:
        parser.error(f"--steps: unknown {unknown}; choose from {','.join(STEPS)}")
    try:
        sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [QUICK_SIZE] if args.quick else list(SIZES)
    except ValueError:
        parser.error(f"--sizes must be comma-separated numbers, not {args.sizes!r}")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if any(n < 100 for n in sizes):
        parser.error("--sizes: at least 100 images each (7 styles in every part of a 70/15/15 split)")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not variants or set(variants) - set(VARIANTS):
        parser.error(f"--variants: choose from {','.join(VARIANTS)}, not {args.variants!r}")
    frozen_options = dict(args.frozen_option)
    try:
        train_config("synthetic", "check", 1, {"freeze": FREEZE, "augment": False, **frozen_options})
    except (TypeError, ValueError) as exc:
        parser.error(f"--frozen-option: {exc}")
    if not WIKIART.is_dir():
        raise SystemExit(f"{WIKIART} not found")
    out = Path(args.out) if args.out else RESULTS / ("scale-quick" if args.quick else "scale")
    bench = Bench(out, args.fresh, frozen_options, variants)
    start = time.perf_counter()
    try:
        for size in sizes:
            manifest = write_manifest(size)
            for path in manifest_paths(manifest):  # read every file once: the OS file cache favours no step
                Path(path).read_bytes()
            print(f"\n{size} wikiart_styles images: {manifest}", flush=True)
            for step in (s for s in STEPS if s in steps):
                bench.measure(step, size, manifest, args.repeats)
                bench.write()
    finally:
        shutil.rmtree(WORK / "caches", ignore_errors=True)
    table = bench.table()
    print(f"\nwall time {time.perf_counter() - start:.0f} s; written: {out}.json, .csv, .html\n")
    if len(table):
        shown = table[["step", "size", "seconds", "images_per_s", "peak_mib", "cost_ratio", "vs_baseline"]]
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
        print()
        for step, goal in bench.goals(table).items():
            verdict = {None: "one size only", True: "within 20%", False: "NOT within 20%"}[goal["cost_within_20pct"]]
            print(f"  {step:34s} cost per image {verdict:15s} (largest departure {goal['largest_departure']:.0%}, "
                  f"largest growth {goal['largest_growth']:+.0%}); peak {goal['peak_mib']:.0f} MiB "
                  f"{'<=' if goal['memory_within_4gib'] else '>'} 4 GiB")
    if bench.errors:
        print(f"\n{len(bench.errors)} step(s) failed: " + "; ".join(f"{e['label']}@{e['size']}: {e['error']}"
                                                                 for e in bench.errors))
        sys.exit(1)


if __name__ == "__main__":
    main()
