"""Benchmark: training speed and measured latency when another process keeps one core busy, by thread setting.

    python benchmarks/threads_under_load.py [--steps 30] [--rounds 2] [--idle]
        [--latency-models mobilenet_v3_small,shufflenet_v2_x0_5,shufflenet_v1_g1_x1_0]

Starts its own CPU hog (a Python loop pinned to one core), then times ``fit`` for a fixed
number of optimizer steps of mobilenet_v3_small on the built-in digits (small-data recipe,
32x32, batch 64, in memory) under three settings, each in a fresh process because OpenMP reads
``OMP_WAIT_POLICY`` once, when ``import torch`` loads it:

- ``default``: torch's thread count (one per core), OpenMP's own wait policy (spinning): what
  ``lightnets train`` did before it chose a wait policy;
- ``threads=1``: one thread, OpenMP's own wait policy (``--threads 1`` then);
- ``passive`` (lightnets' default now): torch's thread count, ``OMP_WAIT_POLICY=PASSIVE``.

In the same processes it then measures the batch-1 latency at 224x224 (``measure_latency``,
median of 30 runs) of ``--latency-models``, a subset of the zoo with the rows issue 15 saw
wildest under load (ShuffleNets: many small operators, each a parallel region).

Rounds alternate the settings so that drift hits all of them; the table gives each setting's
median wall time over the rounds and its ratio to ``threads=1``. ``--idle`` runs without the
hog, for the same settings on a quiet machine. Writes
``benchmarks/results/threads-under-load-<cpu>.json`` (``threads-idle-<cpu>.json`` with --idle).
Issue 19's readings to compare with (``lightnets train mobilenet_v3_small --epochs 1``: 22
steps and a validation pass, 2 cores, a latency benchmark on one): 104 s default, 16.7 s one
thread, 19.2 s passive. About 6 minutes under load with the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = {
    # name: (threads for fit, OMP_WAIT_POLICY or None for OpenMP's own)
    "default": (None, None),
    "threads=1": (1, None),
    "passive": (None, "PASSIVE"),
}
ROOT = Path(__file__).resolve().parents[1]


def child(setting: str, steps: int, batch: int, latency_models: list[str]) -> None:
    """Runs in a fresh process whose environment already holds the setting's wait policy."""
    import torch

    import lightnets
    from lightnets.train import fit

    threads, _ = SETTINGS[setting]
    torch.manual_seed(0)
    model = lightnets.create_model("mobilenet_v3_small", num_classes=10)
    start = time.perf_counter()
    fit(model, "digits", "small-data", run_dir=None, max_steps=steps, batch_size=batch, threads=threads,
        show_progress=False, log=lambda _: None)
    seconds = time.perf_counter() - start
    from lightnets.cost import measure_latency

    latency = {}
    for name in latency_models:
        net = lightnets.create_model(name)
        latency[name] = measure_latency(net, (1, 3, 224, 224), threads=threads, runs=30, warmup=5).median_ms
    print(json.dumps({"seconds": seconds, "threads": threads or torch.get_num_threads(), "latency_ms": latency,
                      "wait_policy": os.environ.get("OMP_WAIT_POLICY", "OpenMP default")}))


def run_setting(setting: str, steps: int, batch: int, latency_models: str) -> dict:
    _, policy = SETTINGS[setting]
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, __file__, "--child", setting, "--steps", str(steps), "--batch", str(batch),
         "--latency-models", latency_models],
        env=env, capture_output=True, text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"the {setting} run failed (exit code {done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def start_hog(core: int) -> subprocess.Popen:
    """A process that keeps ``core`` busy, as the latency benchmark did in issue 19."""
    code = f"import os\nos.sched_setaffinity(0, {{{core}}})\nwhile True:\n    pass\n"
    return subprocess.Popen([sys.executable, "-c", code])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per timing (default 30)")
    parser.add_argument("--batch", type=int, default=64, help="batch size (default 64, the small-data recipe's)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over the settings (default 2)")
    parser.add_argument("--hog-core", type=int, help="the core to keep busy (default: the last one)")
    parser.add_argument("--idle", action="store_true", help="no hog: the same settings on a quiet machine")
    parser.add_argument("--latency-models", default="mobilenet_v3_small,shufflenet_v2_x0_5,shufflenet_v1_g1_x1_0",
                        help="models whose 224x224 batch-1 latency is measured under each setting (default: "
                             "mobilenet_v3_small,shufflenet_v2_x0_5,shufflenet_v1_g1_x1_0; '' for none)")
    parser.add_argument("--child", choices=list(SETTINGS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.steps, args.batch, [m for m in args.latency_models.split(",") if m])
        return

    cores = sorted(os.sched_getaffinity(0))
    hog_core = cores[-1] if args.hog_core is None else args.hog_core
    hog = None if args.idle else start_hog(hog_core)
    times: dict[str, list[float]] = {name: [] for name in SETTINGS}
    latencies: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    info: dict[str, dict] = {}
    try:
        for round_ in range(args.rounds):
            for name in SETTINGS:
                result = run_setting(name, args.steps, args.batch, args.latency_models)
                times[name].append(result["seconds"])
                latencies[name].append(result["latency_ms"])
                info[name] = result
                print(f"round {round_ + 1}/{args.rounds} {name}: {result['seconds']:.1f} s", flush=True)
    finally:
        if hog is not None:
            hog.terminate()
            hog.wait()

    from _results import write_results

    from lightnets.report import format_table

    one = statistics.median(times["threads=1"])
    rows = [
        {"setting": name, "threads": info[name]["threads"], "policy": info[name]["wait_policy"],
         "median": statistics.median(times[name]), "ratio": statistics.median(times[name]) / one,
         "all": ", ".join(f"{t:.1f}" for t in times[name])}
        for name in SETTINGS
    ]
    load = "idle" if args.idle else f"core {hog_core} kept busy by a spinning process"
    print(f"\nmobilenet_v3_small, digits 32x32, batch {args.batch}, {args.steps} steps, {len(cores)} cores, {load}")
    print(format_table(rows, [("setting", "setting"), ("threads", "threads"), ("policy", "OMP_WAIT_POLICY"),
                              ("median", "median s"), ("ratio", "x threads=1"), ("all", "each round s")],
                       formats={"median": "{:.1f}", "ratio": "{:.2f}"}))
    models = [m for m in args.latency_models.split(",") if m]
    if models:
        lat_rows = [
            {"setting": name, **{m: statistics.median(r[m] for r in latencies[name]) for m in models}}
            for name in SETTINGS
        ]
        print(f"\nbatch-1 latency at 224x224 (ms, median of 30 runs; median over the rounds), {load}")
        print(format_table(lat_rows, [("setting", "setting")] + [(m, m) for m in models],
                           formats={m: "{:.2f}" for m in models}))
    path = write_results("threads-idle" if args.idle else "threads-under-load", {
        "model": "mobilenet_v3_small", "data": "digits", "resolution": 32, "batch": args.batch, "steps": args.steps,
        "rounds": args.rounds, "cores": len(cores), "hog_core": None if args.idle else hog_core,
        "settings": {row["setting"]: {**row, "seconds": times[row["setting"]], "latency_ms": latencies[row["setting"]]}
                     for row in rows},
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
