"""The `artlab` command line: data summaries, model registry, training, evaluation, run index, notebooks, demo.

Only the standard library and the training config's options load before the arguments are parsed: each
command imports what it uses (torch, pandas, scikit-learn), so `artlab --help` and a mistyped option answer
at once.
"""

from __future__ import annotations

import argparse
import os
import sys
import typing
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from artlab.lazy import collect_nothing_at_exit
from artlab.training.config import (
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    Layout,
    add_arguments,
    check_device,
    from_arguments,
)

if TYPE_CHECKING:
    import pandas as pd


def _print_table(frame: pd.DataFrame, index: bool = True) -> None:
    import pandas as pd

    with pd.option_context("display.max_rows", 200, "display.max_columns", 20, "display.width", 160):
        print(frame.to_string(index=index))


def cmd_data_summary(args: argparse.Namespace) -> int:
    """What a collection holds, as notebook 01 shows it: a few sentences, then the tables (and a chart with --html)."""
    from artlab.data import collection_summary, load
    from artlab.plots import write_figure

    options = {"separator": args.separator} if args.separator else {}
    collection = load(args.source, args.layout, **options).check_images()
    summary = collection_summary(collection, args.task)
    print(summary)
    for task, table in summary.classes.items():
        print(f"\nimages per {task} and split")
        _print_table(table)
    print("\nfiles")
    _print_table(summary.files, index=False)
    if len(summary.skipped):
        print(f"\nskipped {len(summary.skipped)} file(s) or row(s):")
        _print_table(summary.skipped, index=False)
    if len(summary.duplicates):
        print(f"\n{len(summary.duplicates)} byte-identical files (kept together in one split when training):")
        _print_table(summary.duplicates[["group", "path", *collection.tasks]], index=False)
    if args.html:
        html = write_figure(summary.chart(args.task), Path(args.html))
        print(f"\nclass chart: {html} (plotly.min.js beside it)")
    return 0


def cmd_models_list(_args: argparse.Namespace) -> int:
    import pandas as pd

    from artlab.models import describe

    _print_table(pd.DataFrame(describe()), index=False)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from artlab.training import train

    result = train(from_arguments(args), runs_dir=args.runs_dir, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one report (rank 0's)
        print(f"run {result.run.path}")
        _print_metrics(result.metrics)
    return 0


def _print_metrics(metrics: dict) -> None:
    from artlab.training.metrics import HEADLINE_METRICS

    for task, task_metrics in metrics.get("tasks", {}).items():  # a multi-task run: a block per task
        print(f"  task {task}")
        _print_metrics(task_metrics)
    for key in ("n_images", *HEADLINE_METRICS):
        if key in metrics:
            value = metrics[key]
            print(f"  {key:>18}: {value:.4f}" if isinstance(value, float) else f"  {key:>18}: {value}")


def cmd_eval(args: argparse.Namespace) -> int:
    from artlab.training import evaluate_run

    metrics = evaluate_run(args.run, part=args.split, data=args.data)
    print(f"run {args.run}, {args.split} split")
    _print_metrics(metrics)
    for key in ("images_missing_since_training", "images_changed_since_training", "images_unreadable_now"):
        if metrics.get(key):
            print(f"  warning: {metrics[key]} {key.replace('_', ' ')}")
    if metrics.get("images_shrunk_stand_ins"):
        print(f"  note: {metrics['images_shrunk_stand_ins']} of the images are a workshop pack's shrunk stand-ins")
    print(f"  written to {metrics['file']}" if "file" in metrics else
          "  (the run is unfinished: nothing written; its metrics.json comes when training ends)")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from artlab.runs import runs_root
    from artlab.training import list_runs

    table = list_runs(args.runs_dir)
    if table.empty:
        print(f"no runs under {runs_root(args.runs_dir)}")
    else:
        _print_table(table, index=False)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The quick notebook series into reports/notebooks, or (--strategies) the strategy comparison report."""
    if not args.strategies:
        args.quick, args.only, args.notebooks = True, None, None
        args.out = str(Path(args.reports_dir) / "notebooks")
        return cmd_notebooks_run(args)
    from artlab.experiments import compare_strategies

    table, html = compare_strategies(data=args.data or "synthetic", task=args.task, epochs=args.epochs,
                                     image_size=args.image_size, runs_dir=args.runs_dir, reports_dir=args.reports_dir)
    _print_table(table, index=False)
    print(f"\nchart: {html}")
    return 0


def _image_size(value: int | None) -> None:
    """--image-size within the sizes a network trains at (a smaller input pools to nothing in the last blocks)."""
    if value is not None and not MIN_IMAGE_SIZE <= value <= MAX_IMAGE_SIZE:
        raise ValueError(f"--image-size must be between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE} px (the sizes artlab "
                         f"trains at), not {value}")


def _seeds(value: object, what: str) -> tuple[int, ...]:
    """Seeds from "0,1,2" or a YAML list: one or more integers, or a ValueError naming `what`."""
    items = value.split(",") if isinstance(value, str) else [value] if isinstance(value, int) else value
    try:
        seeds = tuple(int(v) for v in items if isinstance(v, str) or isinstance(v, int) and not isinstance(v, bool))
        complete = len(seeds) == len(items)
    except (TypeError, ValueError):
        seeds, complete = (), False
    if not seeds or not complete:
        raise ValueError(f"{what} must be one or more integer seeds (e.g. 0,1,2), not {value!r}")
    return seeds


def cmd_notebooks_run(args: argparse.Namespace) -> int:
    """Execute the notebook series headless; print the index page (exit 1 at a failing notebook)."""
    from artlab.tools.notebooks import NotebookFailed, parse_parameters, run_series

    if not args.timeout > 0:  # NaN too
        raise ValueError(f"--timeout must be above 0 seconds (the most any one cell may run), not {args.timeout:g}")
    try:
        series = run_series(args.out, quick=args.quick, data=args.data, only=args.only, timeout=args.timeout,
                            folder=args.notebooks, runs_dir=args.runs_dir,
                            parameters=parse_parameters(getattr(args, "param", None)),
                            interactive=getattr(args, "interactive", False))
    except NotebookFailed as exc:
        print(f"artlab: error: {exc}", file=sys.stderr)
        print(f"index: {exc.index.resolve()} (run again to continue from the failed notebook)")
        return 1
    print(f"\nindex: {series.index.resolve()}")
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    """One zip of finished runs, the caches the notebooks read and (--images) the images: a workshop's material."""
    from artlab.runs.pack import pack, read_pack

    out = pack(args.out, args.runs or None, args.runs_dir, images=args.images, image_size=args.image_size)
    shrunk = sum(c.get("shrunk", 0) for c in read_pack(out).collections.values())
    said = f"; {shrunk} image(s) shrunk to {args.image_size} px" if args.image_size is not None else ""
    print(f"pack: {out} ({out.stat().st_size / 2**20:.1f} MiB{said}); on each laptop: artlab unpack {out.name}")
    return 0


def cmd_unpack(args: argparse.Namespace) -> int:
    """A pack's runs, images and caches where the notebooks find them."""
    from artlab.runs.pack import unpack

    done = unpack(args.pack, args.to, args.runs_dir)
    print(done)
    print(f"then, before starting JupyterLab:\n  export ARTLAB_RUNS={done.runs_dir.resolve()} "
          f"ARTLAB_DATA={done.data_dir.resolve()}")
    return 0


def cmd_study_double(args: argparse.Namespace) -> int:
    from artlab.experiments import double_finetune
    from artlab.io import read_yaml

    spec = read_yaml(args.config) if args.config else {}
    if not isinstance(spec, dict):
        raise ValueError(f"{args.config} must be a mapping with 'source' and 'target'")
    keys = ("source", "target", "seeds", "arch", "image_size", "shared_source")
    unknown = sorted(map(str, set(spec) - set(keys)))
    if unknown:
        raise ValueError(f"{args.config}: unknown keys {unknown}; use {', '.join(keys)}")
    shared_source = spec.get("shared_source", args.shared_source)
    if not isinstance(shared_source, bool):
        raise ValueError(f"{args.config}: shared_source must be true or false, not {shared_source!r}")
    source = _stage(spec.get("source"), args.config, "source") or {"data": args.source, "task": args.source_task,
                                                                   "top_n": args.source_top_n}
    target = _stage(spec.get("target"), args.config, "target") or {"data": args.target, "task": args.target_task}
    if not source.get("data") or not target.get("data"):
        raise ValueError("give --source and --target collections (or a YAML file with 'source' and 'target')")
    for stage in (source, target):
        stage.setdefault("epochs", args.epochs)
    seeds = _seeds(spec["seeds"], f"{args.config}: seeds") if "seeds" in spec else _seeds(args.seeds, "--seeds")
    study = double_finetune(source, target, seeds=seeds, arch=spec.get("arch", args.arch),
                            image_size=spec.get("image_size", args.image_size), device=args.device,
                            shared_source=shared_source, runs_dir=args.runs_dir)
    _print_table(study.summary, index=False)
    print()
    _print_table(study.difference, index=False)
    print(f"\nreport: {study.report}")
    return 0


def _stage(value: object, config: str, what: str) -> dict | None:
    """A study YAML's stage as a mapping of TrainConfig fields (a collection path means its `data`); None if absent."""
    if value is None:
        return None
    if isinstance(value, str):
        return {"data": value}
    if not isinstance(value, dict):
        raise ValueError(f"{config}: {what!r} must be a mapping of training options (data, task, ...) or a "
                         f"collection path, not {type(value).__name__} {value!r}")
    return dict(value)


def cmd_sweep(args: argparse.Namespace) -> int:
    from artlab.experiments import sweep
    from artlab.io import read_yaml

    spec = read_yaml(args.config)
    if not isinstance(spec, dict) or not isinstance(spec.get("base"), dict) or not isinstance(spec.get("grid"), dict):
        raise ValueError(f"{args.config} must be a mapping with 'base' (TrainConfig fields) and 'grid' "
                         f"(field: [values, ...])")
    unknown = sorted(set(spec) - {"base", "grid", "seeds", "workers", "source", "name"})
    if unknown:
        raise ValueError(f"{args.config}: unknown keys {unknown}; use base, grid, seeds, workers, source, name")
    workers = args.workers if args.workers is not None else spec.get("workers")
    seeds = _seeds(spec["seeds"], f"{args.config}: seeds") if "seeds" in spec else (0,)
    result = sweep(spec["base"], spec["grid"], seeds=seeds, workers=workers,
                   runs_dir=args.runs_dir, source=spec.get("source"), name=spec.get("name"))
    _print_table(result.table, index=False)
    failed = result.cells[result.cells["status"] != "finished"]
    for row in failed.itertuples(index=False):
        print(f"failed: {row.run}: {row.error}")
    print(f"\ntables and chart: {', '.join(map(str, result.files))}")
    return 1 if len(failed) else 0


def cmd_distance(args: argparse.Namespace) -> int:
    from artlab.analysis import collection_distance

    _image_size(args.image_size)
    check_device(args.device)
    result = collection_distance(args.a, args.b, arch=args.arch, layer=args.layer, image_size=args.image_size,
                                 device=args.device)
    print(f"{args.a} vs {args.b}: {result.images_a} vs {result.images_b} images, {result.arch} {result.layer} "
          f"pooled features at {result.image_size} px")
    print(f"  Fréchet distance:           {result.frechet:.4f}")
    print(f"  distance between the means: {result.mean_distance:.4f}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from artlab.experiments import audit

    if args.min_size < 0:
        raise ValueError(f"--min-size must be 0 or more images, not {args.min_size}")
    result = audit(args.run, by=args.by, split=args.split, min_size=args.min_size, task=args.task)
    if result.task:
        print(f"task {result.task}, {args.split} split")
    _print_table(result.table, index=False)
    gap = f"{result.gap:.1%}" if result.gap is not None else "n/a (fewer than two groups large enough)"
    print(f"\ngap between the best and the worst group of at least {args.min_size} images: {gap}")
    print(f"table and chart: {', '.join(map(str, result.files))}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from artlab.analysis import Comparison, analyze
    from artlab.models import resolve_device

    what = tuple(w.strip() for w in args.what.split(",") if w.strip())
    _image_size(args.image_size)
    check_device(args.device)
    comparison = Comparison(args.finetuned, pretrained=args.pretrained, data=args.data, what=what, k=args.k,
                            max_images=args.max_images, image_size=args.image_size,
                            device=resolve_device(args.device), cka_pool=args.cka_pool, cka_grid=args.grid,
                            task=args.task)
    result = analyze(comparison, out_dir=args.out)
    for name in ("params_blocks", "cka", "topk_overlap_layers", "topk_entropy_layers"):
        if name in result.tables:
            print(f"\n{name}")
            _print_table(result.tables[name].drop(columns=["n_images"], errors="ignore"), index=False)
    print(f"\ntables and report: {result.report.parent}\nreport: {result.report}")
    return 0


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser)  # one option per TrainConfig field
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run of the same name")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="artlab", description="Transfer learning from photographs to art.")
    runs_dir = argparse.ArgumentParser(add_help=False)
    runs_dir.add_argument("--runs-dir", default=None, help="where run folders live (default: $ARTLAB_RUNS, else runs)")
    sub = top.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="art collections").add_subparsers(dest="data_command", required=True)
    summary = data.add_parser("summary", help="counts per class and split, image formats, class chart")
    summary.add_argument("source", help="a collection folder, a CSV/TSV manifest, or 'synthetic'")
    summary.add_argument("--layout", default="auto", choices=typing.get_args(Layout))
    summary.add_argument("--task", help="only this task")
    summary.add_argument("--separator", help="manifests: separator of multi-label cells, e.g. ';'")
    summary.add_argument("--html", help="also write the class chart as an HTML page here (plotly.min.js beside it)")
    summary.set_defaults(func=cmd_data_summary)

    model_cmds = sub.add_parser("models", help="backbones").add_subparsers(dest="models_command", required=True)
    model_cmds.add_parser("list", help="registered architectures and whether their weights are here").set_defaults(
        func=cmd_models_list)

    train = sub.add_parser("train", parents=[runs_dir], help="train one strategy and write a run folder")
    _add_train_options(train)
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("eval", help="recompute a run's metrics from its saved model")
    evaluate.add_argument("run", help="a run folder")
    evaluate.add_argument("--split", default="test", choices=["train", "val", "test"])
    evaluate.add_argument("--data", help="the run's collection at another place (moved, or copied to this machine): "
                                         "its images are matched to the run's by their signatures")
    evaluate.set_defaults(func=cmd_eval)

    analyze = sub.add_parser("analyze", help="what fine-tuning changed: parameters, CKA, top-k images")
    analyze.add_argument("--finetuned", required=True, help="a fine-tune or scratch run folder")
    analyze.add_argument("--pretrained", nargs="?", const="imagenet", default="imagenet",
                         help="what to compare with: imagenet (default), random, or another run folder")
    analyze.add_argument("--data", help="images to analyse (default: the run's own collection)")
    analyze.add_argument("--what", default="params,cka,topk", help="comma-separated: params, cka, topk")
    analyze.add_argument("--cka-pool", dest="cka_pool", default="avg", choices=["avg", "grid", "flatten"],
                         help="how activation maps become CKA features (default avg)")
    analyze.add_argument("--grid", type=int, default=2, help="cells per side with --cka-pool grid (default 2)")
    analyze.add_argument("--k", type=int, default=100, help="top-k images per channel (default 100, up to 1000)")
    analyze.add_argument("--max-images", dest="max_images", type=int, help="analyse a random sample of this size")
    analyze.add_argument("--image-size", dest="image_size", type=int, help="default: the run's image size")
    analyze.add_argument("--device", default="auto")
    analyze.add_argument("--task", help="a multi-task run: the task whose classes measure the top-k class "
                                        "concentration (default: its first)")
    analyze.add_argument("--out", help="output folder (default: <run>/analysis)")
    analyze.set_defaults(func=cmd_analyze)

    study = sub.add_parser("study", help="studies made of many runs").add_subparsers(dest="study_command",
                                                                                      required=True)
    double = study.add_parser("double", parents=[runs_dir],
                              help="double fine-tuning: ImageNet -> source -> target, against the direct routes")
    double.add_argument("config", nargs="?", help="a YAML file with source, target (and seeds, arch, image_size, "
                                                  "shared_source)")
    double.add_argument("--source", help="the intermediate collection (e.g. ../shared/data/peopleart)")
    double.add_argument("--source-task", dest="source_task", help="its task (default: its first)")
    double.add_argument("--source-top-n", dest="source_top_n", type=int, help="keep its N largest classes")
    double.add_argument("--target", help="the small target collection")
    double.add_argument("--target-task", dest="target_task", help="its task (default: its first)")
    double.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    double.add_argument("--shared-source", dest="shared_source", action="store_true",
                        help="one source stage for every seed, kept apart from every seed's validation and test "
                             "images (default: one per seed)")
    double.add_argument("--epochs", type=int, default=10, help="epochs of every fine-tuning (default 10)")
    double.add_argument("--arch", default="mobilenet_v2")
    double.add_argument("--image-size", dest="image_size", type=int, default=128)
    double.add_argument("--device", default="auto")
    double.set_defaults(func=cmd_study_double)

    sweep = sub.add_parser("sweep", parents=[runs_dir], help="a factor sweep: every combination of a grid of "
                                                              "training settings, over seeds")
    sweep.add_argument("config", help="a YAML file: base (TrainConfig fields), grid (field: [values]; also "
                                      "source_classes), seeds, workers, source, name")
    sweep.add_argument("--workers", type=int, help="training processes at once (default: the YAML's, else half "
                                                   "the cores)")
    sweep.set_defaults(func=cmd_sweep)

    distance = sub.add_parser("distance", help="how far apart two collections are in ImageNet feature space")
    distance.add_argument("a", help="a collection folder, a CSV/TSV manifest, or 'synthetic'")
    distance.add_argument("b", help="the other collection")
    distance.add_argument("--arch", default="mobilenet_v2")
    distance.add_argument("--layer", help="the analysed layer whose pooled features are compared (default: the last)")
    distance.add_argument("--image-size", dest="image_size", type=int, default=128)
    distance.add_argument("--device", default="auto")
    distance.set_defaults(func=cmd_distance)

    audit = sub.add_parser("audit", help="a run's accuracy per group of artworks (per artist, medium, ...)")
    audit.add_argument("run", help="a finished single-label run folder")
    audit.add_argument("--by", required=True, help="the split.csv column to group by, e.g. artist")
    audit.add_argument("--split", default="test", choices=["train", "val", "test"])
    audit.add_argument("--min-size", dest="min_size", type=int, default=10,
                       help="groups with fewer images are flagged (default 10)")
    audit.add_argument("--task", help="a multi-task run: the task whose predictions are audited (default: its first)")
    audit.set_defaults(func=cmd_audit)

    sub.add_parser("runs", parents=[runs_dir], help="list runs").set_defaults(func=cmd_runs)

    packing = sub.add_parser("pack", parents=[runs_dir], help="one zip of finished runs, their analyses and the "
                                                              "caches the notebooks read, for a workshop")
    packing.add_argument("out", help="the zip to write, e.g. workshop.zip")
    packing.add_argument("runs", nargs="*", help="run names or folders (default: every finished run)")
    packing.add_argument("--images", action="store_true", help="also the images the runs used (attendees need "
                                                               "no copy of the collections)")
    packing.add_argument("--image-size", type=int, metavar="PIXELS",
                         help="with the images, those larger than this on their longer side shrunk to it (e.g. 512): "
                              "a smaller pack; each answers to its original, so the teacher's results still show")
    packing.set_defaults(func=cmd_pack)
    unpacking = sub.add_parser("unpack", parents=[runs_dir], help="a pack's runs, images and caches where the "
                                                                  "notebooks find them")
    unpacking.add_argument("pack", help="a zip written by artlab pack")
    unpacking.add_argument("--to", default=".", help="where runs/ and data/ go (default: here)")
    unpacking.set_defaults(func=cmd_unpack)

    notebooks = sub.add_parser("notebooks", help="the notebook series").add_subparsers(dest="notebooks_command",
                                                                                      required=True)
    run_nbs = notebooks.add_parser("run", parents=[runs_dir],
                                   help="execute the notebooks headless in order: executed .ipynb, HTML, index page")
    mode = run_nbs.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="quick", action="store_true", default=True,
                      help="small, fast runs (64 px, 1 epoch): minutes in all on the synthetic default (default)")
    mode.add_argument("--full", dest="quick", action="store_false", help="quick=False: real results (hours on a CPU)")
    run_nbs.add_argument("--data", help="your collection, for every notebook that declares `data` (07: `target`); "
                                        "a task it lacks becomes its first (default: the synthetic collection)")
    run_nbs.add_argument("--param", action="append", metavar="NAME=VALUE",
                         help="set a parameter of every notebook that declares it, e.g. --param "
                              "source=../shared/data/wikiart_styles --param seeds=[0,1] (repeatable)")
    run_nbs.add_argument("--only", help="comma-separated notebook numbers or names, e.g. 04,05")
    run_nbs.add_argument("--interactive", action="store_true",
                         help="pages whose explorers keep working offline, over choices computed ahead (larger "
                              "pages, longer runs)")
    run_nbs.add_argument("--out", default="reports/notebooks", help="output folder (default reports/notebooks)")
    run_nbs.add_argument("--timeout", type=float, default=900, help="seconds any one cell may run (default 900)")
    run_nbs.add_argument("--notebooks", help="the notebooks folder (default: ./notebooks)")
    run_nbs.set_defaults(func=cmd_notebooks_run)

    demo = sub.add_parser("demo", parents=[runs_dir],
                          help="the quick notebook series (reports/notebooks/index.html); --strategies: the "
                               "off-the-shelf vs fine-tuning vs scratch report under reports/")
    demo.add_argument("--strategies", action="store_true", help="the strategy comparison report instead")
    demo.add_argument("--data", help="the collection (default: synthetic)")
    demo.add_argument("--task", default="artist", help="--strategies: the task (default artist)")
    demo.add_argument("--epochs", type=int, default=8, help="--strategies: epochs (default 8)")
    demo.add_argument("--image-size", dest="image_size", type=int, default=128, help="--strategies: pixels")
    demo.add_argument("--reports-dir", dest="reports_dir", default="reports")
    demo.add_argument("--timeout", type=float, default=900, help="seconds any one notebook cell may run")
    demo.set_defaults(func=cmd_demo)
    return top


#: Users' mistakes and broken files (one line naming the file or option, never a traceback): built-in errors,
#: and (module, name) of artlab's and torch's, looked up only in modules the command imported (`user_errors`).
USER_ERRORS = (OSError, KeyError, ValueError, FloatingPointError, MemoryError)
IMPORTED_USER_ERRORS = (("artlab.models.weights", "WeightsUnavailable"), ("artlab.runs.folder", "RunBusy"),
                        ("artlab.data.images", "ImageError"), ("torch", "OutOfMemoryError"))


def user_errors() -> tuple[type[BaseException], ...]:
    """The error types to report in one line: an error of a module the command never imported cannot occur."""
    return USER_ERRORS + tuple(getattr(sys.modules[module], name) for module, name in IMPORTED_USER_ERRORS
                               if module in sys.modules)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename or exc} (is the folder read-only? choose another with --runs-dir)"
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":  # torch's, on a GPU
        return "out of memory: lower --image-size or --batch-size"
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror or exc}: {exc.filename}"
    return str(exc) or type(exc).__name__


def _warn_in_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as `artlab: warning: ...`, one line each (not Python's file:line and source line)."""
    print(f"artlab: warning: {_one_line(message)}", file=file or sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    collect_nothing_at_exit()  # a command that trained or read runs ends 0.1 s sooner
    shown, warnings.showwarning = warnings.showwarning, _warn_in_one_line
    try:
        return args.func(args)
    except Exception as exc:
        if not isinstance(exc, user_errors()):
            raise
        print(f"artlab: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: runs stopped mid-way resume with the same command (--resume for train)
        print("artlab: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":
    raise SystemExit(main())
