"""Benchmark: how long artlab's commands take to end once their work is done, with the garbage collector's passes
at exit left out (`artlab.lazy.collect_nothing_at_exit`, as artlab does) and with them (the baseline: artlab
without its exit handler; the freeze of what the imports loaded, `settle_imports`, kept in both).

    python benchmarks/exit_speed.py [--repeats 7]

Each case is a fresh process running one `artlab train` command on the small synthetic collection (the first run
of each case, untimed, fills the caches). The process prints a line when the command has returned; its exit is
timed from that line to its end, and its whole run from start to end. The baseline is the same process with
artlab's exit handler unregistered after the command. One torch thread (OMP_NUM_THREADS=1), as in the tests. Each
figure is the median of `--repeats` runs, the two variants alternating; the scratch folder is removed at the end.
Results go to benchmarks/results/exit-speed.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from artlab.data.synthetic import synthetic_manifest
from artlab.io import write_json

RESULTS = Path(__file__).resolve().parent / "results" / "exit-speed.json"
#: The commands timed: an off-the-shelf rerun (its features cached: mostly imports, a probe and the run's files)
#: and a one-epoch fine-tuning at 64 px.
CASES = {
    "off-the-shelf rerun": ["--strategy", "off_the_shelf", "--image-size", "64"],
    "one-epoch fine-tuning": ["--strategy", "fine_tune", "--epochs", "1", "--image-size", "64"],
}
#: The baseline: artlab's exit handler taken out after the command (registered once, by main()).
BASELINE = "import atexit, gc\natexit.unregister(gc.freeze)\n"


def timed(code: str, env: dict[str, str]) -> tuple[float, float]:
    """Seconds of a fresh `python -c code` from start to end, and from its line "ended" to its end."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    for line in process.stdout:
        if line.strip() == "ended":
            break
    ended = time.perf_counter()
    process.stdout.read()
    if process.wait() != 0:
        raise RuntimeError(f"the command failed ({process.returncode}): {code}")
    done = time.perf_counter()
    return done - start, done - ended


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="artlab-exit-"))
    try:
        measure(scratch, args.repeats)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def measure(scratch: Path, repeats: int) -> None:
    """Time each case in `scratch` (its cache and runs) and write the results."""
    env = os.environ | {"ARTLAB_CACHE": str(scratch / "cache"), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    manifest = synthetic_manifest(per_artist=6, size=96, root=scratch / "collection")
    results = {}
    for number, (case, options) in enumerate(CASES.items()):
        def code(name: str, baseline: bool, options: list[str] = options) -> str:
            argv = ["train", "--data", str(manifest), "--task", "style", "--device", "cpu", *options,
                    "--name", name, "--runs-dir", str(scratch / "runs")]
            return f"import sys\nfrom artlab.cli import main\nstatus = main({argv!r})\n" + \
                (BASELINE if baseline else "") + "print('ended', flush=True)\nsys.exit(status)\n"

        timed(code(f"case{number}-warm-up", False), env)
        runs: dict[str, list[tuple[float, float]]] = {"artlab": [], "baseline": []}  # (whole run, exit) seconds
        for repeat in range(repeats):
            for variant in ("artlab", "baseline"):
                runs[variant].append(timed(code(f"case{number}-{variant}-{repeat}", variant == "baseline"), env))
        medians = {variant: {"run_s": statistics.median(w for w, _ in values),
                             "exit_s": statistics.median(e for _, e in values)} for variant, values in runs.items()}
        medians["ratio_exit"] = medians["artlab"]["exit_s"] / medians["baseline"]["exit_s"]
        medians["ratio_run"] = medians["artlab"]["run_s"] / medians["baseline"]["run_s"]
        results[case] = medians
        print(f"{case}: exit {medians['artlab']['exit_s']:.3f} s against {medians['baseline']['exit_s']:.3f} s "
              f"({medians['ratio_exit']:.2f}x); whole run {medians['artlab']['run_s']:.2f} s against "
              f"{medians['baseline']['run_s']:.2f} s ({medians['ratio_run']:.2f}x)")
    write_json(RESULTS, {"repeats": repeats, "cases": results})


if __name__ == "__main__":
    main()
