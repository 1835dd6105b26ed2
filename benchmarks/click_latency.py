"""Benchmark: how fast every explorer answers a change of each of its controls, on genres at full settings.

    ARTLAB_CACHE=<the series' cache> python benchmarks/click_latency.py --runs-dir <the series' runs>
        [--data ../shared/data/genres] [--think 20]

The explorers are built as the notebooks build them at full settings (`artlab notebooks run --full --data
genres`), from that series' runs (missing ones are trained first, untimed). A click is a call of the
explorer's `select` (or the strategy explorer's `add`, its "train and compare" button) and the time is from
that call to the new view computed (`view()`), which the live widget then displays. Each control goes
through a sample of its choices in three states:

  uncomputed   a new explorer, renders and attribution maps not on disk (a scratch cache holds the rest)
  in memory    the same explorer, the same choices again (after one unmeasured pass from the state the first
               pass ended in, so that every state measured was shown before)
  on disk      a new explorer, the choices computed before now on disk

For each control: p50 and p95 of the time to the new view, and in the uncomputed state the time to the
first progress bar (none: the view computed without one). The live widget also says "Computing..." after
NOTICE_AFTER_S (0.15 s) whenever a view takes longer (tests/test_widgets.py).

Computing ahead (`Explorer.prefetch`): the channel explorer's user opens a layer and goes down its most
changed channels, looking at each view for `--think` seconds. Measured without and with prefetching, on
renders not on disk, with the time of a view already computed taken every second while the background
renders (the kernel's responsiveness). Goals (issue 22): a computed view within 0.3 s at p95, an
uncomputed one shows progress within 0.2 s, a render at full settings (256 steps, 128 px, both networks)
within 15 s. Results go to benchmarks/results/click-latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "click-latency.json"
#: What is computed on a click and kept on disk: each state of the benchmark starts without these.
CLICK_CACHES = ("renders", "attributions")


def scratch_cache(cache: Path) -> Path:
    """A cache that shares everything of `cache` (links) but the renders and attribution maps (empty)."""
    scratch = Path(tempfile.mkdtemp(prefix="artlab-clicks-"))
    for entry in cache.iterdir() if cache.is_dir() else []:
        if entry.name not in CLICK_CACHES:
            (scratch / entry.name).symlink_to(entry)
    return scratch


class FirstBar:
    """The time of the first progress bar created after `arm()` (artlab's bars all come from artlab.progress)."""

    def __init__(self) -> None:
        import artlab.progress as progress

        self.start, self.first = 0.0, None
        watcher, plain = self, progress.tqdm

        class Watched(plain):  # type: ignore[misc, valid-type]
            def __init__(self, *args, **kwargs):
                if watcher.first is None:
                    watcher.first = time.perf_counter() - watcher.start
                super().__init__(*args, **kwargs)

        progress.tqdm = Watched

    def arm(self) -> None:
        self.start, self.first = time.perf_counter(), None


def click(explorer, change: Callable[[], object], bars: FirstBar) -> tuple[float, float | None]:
    """Seconds from `change()` to the new view, and to the first progress bar (None if none)."""
    bars.arm()
    change()
    explorer.view()
    return time.perf_counter() - bars.start, bars.first


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def drive(name: str, build: Callable[[], object], controls: dict[str, list[Callable]], bars: FirstBar) -> list[dict]:
    """Each control's choices in the three states; one row per (control, state)."""
    rows = []
    first = build()
    timings = {(control, state): [] for control in controls for state in ("uncomputed", "in memory", "on disk")}
    for state, explorer in (("uncomputed", first), ("in memory", first), ("on disk", None)):
        explorer = explorer or build()
        if state == "in memory":  # once unmeasured: from the state the first pass ended in, as the measured pass
            for changes in controls.values():
                for change in changes:
                    click(explorer, partial(change, explorer), bars)
        for control, changes in controls.items():
            for change in changes:
                timings[control, state].append(click(explorer, partial(change, explorer), bars))
    for (control, state), measured in timings.items():
        seconds = [t for t, _ in measured]
        firsts = [f for _, f in measured if f is not None]
        rows.append({"explorer": name, "control": control, "state": state, "clicks": len(seconds),
                     "p50_s": round(statistics.median(seconds), 3), "p95_s": round(percentile(seconds, 0.95), 3),
                     "first_bar_p95_s": round(percentile(firsts, 0.95), 3) if firsts else None,
                     "with_bar": len(firsts)})
        print(f"{name:<20} {control:<18} {state:<11} p50 {rows[-1]['p50_s']:7.3f} s  p95 {rows[-1]['p95_s']:7.3f} s"
              f"  first bar {rows[-1]['first_bar_p95_s']}", flush=True)
    return rows


def sample(values: list, n: int) -> list:
    """Up to `n` of `values`, spread over them (the first and the last included)."""
    if len(values) <= n:
        return list(values)
    return [values[round(i * (len(values) - 1) / (n - 1))] for i in range(n)]


def prefetch_gain(analysis, render, think: float, channels: int = 4) -> dict:
    """The channel explorer's user walks down one layer's most changed channels: without and with prefetching."""
    from artlab.widgets import ChannelExplorer

    results = {}
    for mode in ("without", "with"):
        os.environ["ARTLAB_CACHE"] = str(scratch_cache(Path(os.environ["ARTLAB_CACHE_SOURCE"])))
        explorer = ChannelExplorer(analysis, settings=render)
        layer = explorer.layers[-2]
        walk = explorer.most_changed(layer)[:channels]
        latencies, responsive = [], []
        for i, channel in enumerate(walk):
            start = time.perf_counter()
            explorer.select(layer=layer, channel=channel)
            explorer.view()
            latencies.append(time.perf_counter() - start)
            if mode == "with":
                explorer.prefetch()
            if i < len(walk) - 1:
                until = time.perf_counter() + think
                while time.perf_counter() < until:  # the user looks; the kernel answers what is computed
                    start = time.perf_counter()
                    explorer.view()
                    responsive.append(time.perf_counter() - start)
                    time.sleep(1.0)
        explorer.prefetcher.settle()
        results[mode] = {"layer": layer, "channels": walk, "latency_s": [round(t, 2) for t in latencies],
                         "later_clicks_median_s": round(statistics.median(latencies[1:]), 3),
                         "computed_view_while_looking_p95_s": round(percentile(responsive, 0.95), 3),
                         "computed_ahead": len(explorer.prefetcher.done)}
        print(f"prefetch {mode}: {results[mode]}", flush=True)
    return results


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data" / "genres"))
    options.add_argument("--runs-dir", required=True, help="the runs folder of the full series on --data")
    options.add_argument("--think", type=float, default=20.0, help="seconds the user looks at each channel")
    options.add_argument("--per-control", type=int, default=4, help="choices tried per control")
    args = options.parse_args()
    os.environ["ARTLAB_CACHE_SOURCE"] = os.environ.get("ARTLAB_CACHE", str(Path.home() / ".cache" / "artlab"))
    os.environ["ARTLAB_CACHE"] = str(scratch_cache(Path(os.environ["ARTLAB_CACHE_SOURCE"])))

    from artlab import Comparison, TrainConfig, analyze, load, run_strategies, sweep, train
    from artlab.interpret import RenderSettings
    from artlab.interpret.attribution import METHODS
    from artlab.widgets import (
        ArtworkInspector,
        AuditExplorer,
        ChangeExplorer,
        ChannelExplorer,
        CollectionBrowser,
        CollectionMap,
        StrategyExplorer,
        SweepExplorer,
        TopKBrowser,
    )

    n, runs = args.per_control, args.runs_dir
    full = {"data": args.data, "task": "label", "epochs": 10, "image_size": 128, "freeze": 10, "patience": 3}
    run = train(TrainConfig(arch="mobilenet_v2", **full), runs_dir=runs, resume=True).run
    collection = load(args.data).check_images()
    changes = analyze(Comparison(run.path, what=("params", "cka")))
    tops = analyze(Comparison(run.path, what=("params", "topk"), k=100))
    render = RenderSettings(steps=256, size=128)
    strategies = run_strategies(runs_dir=runs, arch="mobilenet_v2", **full)
    factors = sweep(TrainConfig(data=args.data, task="label", arch="mobilenet_v2", image_size=128, epochs=5),
                    {"freeze": [0, 10], "lr": [0.01, 0.001]}, seeds=[0, 1], runs_dir=runs)
    bars = FirstBar()
    rows: list[dict] = []

    def channel_choices(explorer_layers: list[str]) -> list[Callable]:
        return [lambda e, layer=layer: e.select(layer=layer) for layer in sample(explorer_layers, n)]

    browser = CollectionBrowser(collection, "label")
    rows += drive("collection browser", lambda: CollectionBrowser(collection, "label"),
                  {"class": [lambda e, c=c: e.select(shown=c) for c in sample(browser.classes(), n + 1)]}, bars)
    explorer = ChangeExplorer(changes)
    rows += drive("change explorer", lambda: ChangeExplorer(changes), {
        "figure": [lambda e, f=f: e.select(figure_id=f) for f in explorer.figure_ids],
        "layer": [lambda e, layer=layer: e.select(layer=layer) for layer in sample(explorer.layers, n)]}, bars)
    explorer = ChannelExplorer(tops, settings=render)
    rows += drive("channel explorer", lambda: ChannelExplorer(tops, settings=render), {
        "layer": channel_choices(explorer.layers[:-1]),
        "channel": [lambda e, c=c: e.select(layer=explorer.layers[-1], channel=c)
                    for c in explorer.most_changed(explorer.layers[-1])[1:n]]}, bars)
    explorer = TopKBrowser(tops)
    rows += drive("top-k browser", lambda: TopKBrowser(tops), {
        "network": [lambda e, net=net: e.select(network=net) for net in explorer.networks()],
        "layer": [lambda e, layer=layer: e.select(layer=layer) for layer in sample(explorer.layers, n)],
        "channel": [lambda e, c=c: e.select(channel=c) for c in range(1, n + 1)]}, bars)
    rows += drive("artwork inspector", lambda: ArtworkInspector.from_run(run.path, limit=20), {
        "artwork": [lambda e, i=i: e.select(index=i) for i in range(1, n + 1)],
        "method": [lambda e, m=m: e.select(method=m) for m in METHODS]}, bars)
    sources = {"ImageNet": "imagenet", "fine-tuned": run.path}

    def collection_map():
        return CollectionMap.from_collection(collection, sources, method="tsne", color="label", image_size=128)

    explorer = collection_map()
    rows += drive("collection map", collection_map, {
        "network": [lambda e, net=net: e.select(network=net) for net in explorer.maps],
        "colour by": [lambda e, c=c: e.select(color=c) for c in explorer.columns],
        "artwork": [lambda e, i=i: e.select(index=i) for i in range(1, n + 1)]}, bars)
    explorer = StrategyExplorer(strategies, freeze=[14, 18])
    rows += drive("strategy explorer", lambda: StrategyExplorer(strategies, freeze=[14, 18]), {
        "strategy": [lambda e, s=s: e.select(strategy=s) for s in ("off_the_shelf", "fine_tune")],
        "frozen blocks": [lambda e, k=k: e.select(freeze=k) for k in (0, 5, 10, 14)],
        "train and compare": [lambda e: e.add("off_the_shelf", layer="features.14")]}, bars)
    rows += drive("factor sweep", lambda: SweepExplorer(factors), {
        "metric": [lambda e, m=m: e.select(metric=m) for m in factors.metrics],
        "x": [lambda e, f=f: e.select(x=f) for f in factors.factors]}, bars)
    audit = AuditExplorer(run.path)
    rows += drive("audit", lambda: AuditExplorer(run.path), {
        "group by": [lambda e, c=c: e.select(by=c) for c in audit.columns],
        "min. images": [lambda e, m=m: e.select(min_size=m) for m in (5, 10, 20)]}, bars)

    renders = [r for r in rows if r["explorer"] == "channel explorer" and r["state"] == "uncomputed"]
    ahead = prefetch_gain(tops, render, args.think)
    summary = {"computed_view_p95_s": max(r["p95_s"] for r in rows if r["state"] == "in memory"),
               "from_disk_p95_s": max(r["p95_s"] for r in rows if r["state"] == "on disk"),
               "full_render_both_networks_p50_s": statistics.median(r["p50_s"] for r in renders),
               "goals": {"computed_view_p95_s": 0.3, "first_progress_s": 0.2, "full_render_s": 15.0}}
    RESULTS.write_text(json.dumps({"data": Path(args.data).name, "per_control": n, "think_s": args.think,
                                   "summary": summary, "rows": rows, "prefetch": ahead}, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
