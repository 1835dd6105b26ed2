"""Benchmark: a notebook kernel started warm (artlab.tools.warm_kernels) against one started as jupyter_client starts
it (its local provisioner), up to the end of a notebook's import cell.

    python benchmarks/kernel_start.py [--rounds 5]

Each kernel is this interpreter's python3 kernel, started, then made to run notebook 03's import cell
(`from artlab import ...; from artlab.widgets import ChangeExplorer`): the wait a user has before the first cell's
answer. Alternating, median of `--rounds`; the kernel's own CPU seconds alongside. The warm kernels' zygote is
started once before the rounds (the first kernel of a session waits for it), and its start is reported apart.
Results go to benchmarks/results/kernel-start.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from artlab.io import write_json

RESULTS = Path(__file__).resolve().parent / "results" / "kernel-start.json"
IMPORT_CELL = ("from artlab import Comparison, TrainConfig, analyze, notebook_settings, train\n"
               "from artlab.widgets import ChangeExplorer\n"
               "import os; times = os.times(); print(times.user + times.system)")


def one_kernel(warm: bool, cwd: str) -> dict:
    """Seconds to a ready kernel, to the end of the import cell, and the kernel's CPU seconds by then."""
    from jupyter_client.manager import KernelManager

    from artlab.tools.warm_kernels import kernels_warm

    start = time.perf_counter()
    with kernels_warm(warm) as on:
        assert on == warm, "artlab's provisioner is not registered: make install"
        manager = KernelManager(kernel_name="python3")
        manager.start_kernel(cwd=cwd)
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=120)
        ready = time.perf_counter() - start
        printed: list[str] = []

        def keep(message: dict) -> None:
            if message["msg_type"] == "stream":
                printed.append(message["content"]["text"])

        reply = client.execute_interactive(IMPORT_CELL, timeout=120, output_hook=keep)
        assert reply["content"]["status"] == "ok", reply["content"]
        done = time.perf_counter() - start
        return {"ready_s": ready, "first_cell_done_s": done, "kernel_cpu_s": float("".join(printed))}
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--rounds", type=int, default=5)
    args = options.parse_args()
    import psutil

    from artlab.tools.warm_kernels import zygote_pids

    cwd = tempfile.mkdtemp(prefix="artlab-kernel-start-")
    first = one_kernel(True, cwd)  # starts the zygote
    (zygote,) = zygote_pids()
    zygote_cpu = sum(psutil.Process(zygote).cpu_times()[:2])
    runs: dict[str, list[dict]] = {"plain (jupyter_client)": [], "warm (artlab)": []}
    for _ in range(args.rounds):
        runs["plain (jupyter_client)"].append(one_kernel(False, cwd))
        runs["warm (artlab)"].append(one_kernel(True, cwd))
    rows = {name: {key: statistics.median(r[key] for r in found) for key in found[0]} for name, found in runs.items()}
    for name, row in rows.items():
        print(f"{name:24s} ready {row['ready_s']:5.2f} s  import cell done {row['first_cell_done_s']:5.2f} s  "
              f"kernel cpu {row['kernel_cpu_s']:5.2f} s")
    ratio = rows["warm (artlab)"]["first_cell_done_s"] / rows["plain (jupyter_client)"]["first_cell_done_s"]
    print(f"first kernel of the session (zygote started): {first['first_cell_done_s']:.2f} s; "
          f"the zygote's own CPU: {zygote_cpu:.2f} s; warm / plain: {ratio:.2f}x")
    result = {"code": os.popen("git rev-parse --short HEAD").read().strip(), "date": time.strftime("%Y-%m-%d %H:%M"),
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "rounds": args.rounds, "median": rows,
              "runs": runs, "first_warm_kernel": first, "zygote_cpu_s": zygote_cpu, "warm_vs_plain": ratio}
    write_json(RESULTS, result)


if __name__ == "__main__":
    main()
