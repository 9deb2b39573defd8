"""Benchmark: a zoo subset measured idle and under a CPU hog this script starts itself.

    python benchmarks/zoo_under_load.py [--hogs 2] [--models a,b,...] [--resolution 224]
                                        [--runs 30] [--rounds 5] [--why]

1. The subset through ``run_zoo`` (interleaved rounds, spread flags, load readings) on the
   machine as it is (run it idle), then again while ``--hogs`` processes spin, one per core
   by default. Prints both tables with their flags and checks that no row whose spread is
   over the limit is printed unflagged.
2. ``--why``: what makes the ShuffleNets the wildest rows under load. Idle and under the same
   hog, each setting in a fresh process (OpenMP's wait policy is read once, at start-up): 2
   threads timed the way measure_latency did before issue 15 (a worker team made before the
   flush, so the workers compute denormals), 2 threads with OpenMP's default (spinning)
   waits, 2 threads with ``OMP_WAIT_POLICY=PASSIVE``, and 1 thread, for two ShuffleNets and
   one MobileNet; and the count of operators per forward pass, since each is a parallel
   region whose end both threads must reach.

Writes ``benchmarks/results/zoo-under-load-<cpu>.json`` and ``.txt``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time

from _results import result_path, write_results

from lightnets.analysis import machine_info, run_zoo
from lightnets.cli.reports import zoo_report

SUBSET = ("shufflenet_v1_g1_x1_0,shufflenet_v2_x0_5,shufflenet_v2_x0_5_official,mobilenet_v3_small,"
          "mobilenet_v3_large,mobilenet_v2,mobilenet_v1_050")


def _spin() -> None:
    while True:
        pass


class Hog:
    """``count`` processes that spin until the block ends."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.procs: list[multiprocessing.Process] = []

    def __enter__(self) -> Hog:
        self.procs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(self.count)]
        for p in self.procs:
            p.start()
        time.sleep(1.0)  # let the scheduler see them before the load is read
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.join()


def zoo_phase(label: str, args: argparse.Namespace, lines: list[str]) -> dict:
    run = run_zoo(args.resolution, runs=args.runs, rounds=args.rounds, models=args.models.split(","),
                  show_progress=False)
    machine = machine_info()
    text = zoo_report(run, f"{label}: " + run.title(machine["cpu"], machine["torch"]))
    print(text + "\n", flush=True)
    lines += [text, ""]
    unflagged = [r.name for r in run.rows if r.latency.spread > run.spread_limit and not r.latency.unstable]
    if unflagged:
        raise SystemExit(f"rows over the spread limit printed unflagged: {unflagged}")
    return run.to_dict()


_WHY = """
import json, statistics, sys, time, torch, lightnets
from lightnets.cost import measure_latency, percentile
name, threads, resolution, old = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "old"
torch.manual_seed(0)
torch.set_num_threads(threads)
model = lightnets.create_model(name).eval()
x = torch.randn(1, 3, resolution, resolution)
if old:  # before the fix: a parallel operation makes the worker team, then only this thread flushes
    torch.ones(1 << 22) * 2.0
    torch.set_flush_denormal(True)
    with torch.inference_mode():
        for _ in range(5):
            model(x)
        times = []
        for _ in range(20):
            start = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - start) * 1e3)
    ordered = sorted(times)
    med, p10, p90 = statistics.median(ordered), percentile(ordered, 0.1), percentile(ordered, 0.9)
else:
    r = measure_latency(model, (1, 3, resolution, resolution), threads=threads, runs=20, warmup=5, rounds=5)
    med, p10, p90 = r.median_ms, r.p10_ms, r.p90_ms
print(json.dumps({"median_ms": med, "p10_ms": p10, "p90_ms": p90, "spread": (p90 - p10) / med}))
"""

_OPS = """
import sys, torch, lightnets
from torch.profiler import profile, ProfilerActivity
m = lightnets.create_model(sys.argv[1]).eval()
x = torch.randn(1, 3, int(sys.argv[2]), int(sys.argv[2]))
with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
    m(x)
print(sum(1 for e in prof.events() if e.name.startswith("aten::") and e.cpu_parent is None))
"""


def why_phase(args: argparse.Namespace, lines: list[str]) -> list[dict]:
    settings = [
        ("2 threads, workers not flushing (before)", 2, {}, "old"),
        ("2 threads, OpenMP default waits", 2, {}, "new"),
        ("2 threads, OMP_WAIT_POLICY=PASSIVE", 2, {"OMP_WAIT_POLICY": "PASSIVE"}, "new"),
        ("1 thread", 1, {}, "new"),
    ]
    rows = []
    for name in ("shufflenet_v1_g1_x1_0", "shufflenet_v2_x0_5", "mobilenet_v3_large"):
        ops = subprocess.run([sys.executable, "-c", _OPS, name, str(args.resolution)], capture_output=True,
                             text=True, check=True).stdout.strip()
        for hogged in (False, True):
            for label, threads, env, how in settings:
                command = [sys.executable, "-c", _WHY, name, str(threads), str(args.resolution), how]
                with Hog(args.hogs if hogged else 0):
                    out = subprocess.run(command, capture_output=True, text=True, check=True,
                                         env={**os.environ, **env})
                measured = json.loads(out.stdout)
                row = {"model": name, "top-level ops": int(ops), "hog": hogged, "setting": label, **measured}
                rows.append(row)
                line = (f"{name:24s} {int(ops):4d} ops  {'hog ' if hogged else 'idle'}  {label:36s} "
                        f"median {measured['median_ms']:8.2f} ms  p10-p90 {measured['p10_ms']:.2f}-"
                        f"{measured['p90_ms']:.2f}  spread {100 * measured['spread']:.0f}%")
                print(line, flush=True)
                lines.append(line)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hogs", type=int, default=os.cpu_count() or 1, help="spinning processes (default: cores)")
    parser.add_argument("--models", default=SUBSET)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--why", action="store_true", help="also the settings comparison under the hog")
    args = parser.parse_args()

    lines: list[str] = []
    idle = zoo_phase("as the machine is", args, lines)
    with Hog(args.hogs):
        hogged = zoo_phase(f"under {args.hogs} spinning processes", args, lines)
    why = why_phase(args, lines) if args.why else []
    out = write_results("zoo-under-load", {"settings": vars(args), "idle": idle, "hog": hogged, "why": why})
    result_path("zoo-under-load", ".txt").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
