"""Benchmark: NetAdapt on the built-in digits, latency from a lookup table measured here.

    python benchmarks/netadapt_digits.py [--model mobilenet_v2] [--epochs 15] [--target-ratio 0.6]
                                         [--steps 1000] [--max-iterations N] [--final-steps 0]

Trains the seed network from scratch (small-data, 32x32), builds a latency table of its sites
at the training resolution, runs ``lightnets.search.netadapt`` (MobileNetV3's two proposal
kinds, dAcc / |dLatency| selection, ``--steps`` fine-tune steps per proposal) to the target,
and measures seed and result whole. Prints the history (per step: the group kept, predicted
latency, top-1) and writes ``benchmarks/results/netadapt-digits-<cpu>.json``.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from _results import write_results

import lightnets
from lightnets.report import format_table, machine_info
from lightnets.search import LatencyTable, netadapt
from lightnets.train import digits, fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--target-ratio", type=float, default=0.6)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--max-iterations", type=int, default=None)
    parser.add_argument("--final-steps", type=int, default=0)
    args = parser.parse_args()
    data = digits(resolution=args.resolution)
    torch.manual_seed(0)
    seed = lightnets.create_model(args.model, num_classes=10)
    fit(seed, data, "small-data", run_dir=None, epochs=args.epochs, show_progress=False, log=lambda m: None)
    seed.eval()
    table = LatencyTable.new(threads=torch.get_num_threads(), runs=30)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = netadapt(
            seed,
            data,
            table,
            input_size=args.resolution,
            target_ratio=args.target_ratio,
            steps=args.steps,
            final_steps=args.final_steps,
            max_iterations=args.max_iterations,
            run_dir=tmp,
            log=lambda m: print(m, flush=True),
        )
    wall = time.perf_counter() - start
    machine = machine_info()
    rows = [
        {
            "step": 0,
            "group": "(seed)",
            "change": "",
            "latency_ms": result.seed_ms,
            "top1": result.seed_top1,
            "proposals": "",
        }
    ]
    rows += [
        {
            "step": r["step"],
            "group": r["chosen"]["group"],
            "change": f"{r['chosen']['width_before']} -> {r['chosen']['width']}",
            "latency_ms": r["latency_ms"],
            "top1": r["top1"],
            "proposals": len(r["proposals"]),
        }
        for r in result.history
    ]
    print(
        f"\nNetAdapt on digits, {args.model}, {args.resolution}x{args.resolution}, target {args.target_ratio} of "
        f"the seed's predicted latency, {args.steps} fine-tune steps per proposal, {torch.get_num_threads()} "
        f"threads, {machine['cpu']}, torch {machine['torch']}; {wall:.0f} s"
    )
    print(
        format_table(
            rows,
            [
                ("step", "step"),
                ("group", "kept proposal"),
                ("change", "channels"),
                ("latency_ms", "predicted ms"),
                ("top1", "top-1"),
                ("proposals", "proposals"),
            ],
            formats={"latency_ms": "{:.3f}", "top1": lambda v: f"{100 * v:.2f}%"},
        )
    )
    print(
        f"measured whole: seed {result.measured_seed_ms:.3f} ms, result {result.measured_ms:.3f} ms "
        f"({result.measured_ms / result.measured_seed_ms:.1%}); top-1 {100 * result.seed_top1:.2f}% -> "
        f"{100 * result.top1:.2f}%"
    )
    out = write_results(
        "netadapt-digits",
        {
            "settings": vars(args),
            "wall_s": wall,
            "seed_ms": result.seed_ms,
            "predicted_ms": result.predicted_ms,
            "measured_seed_ms": result.measured_seed_ms,
            "measured_ms": result.measured_ms,
            "seed_top1": result.seed_top1,
            "top1": result.top1,
            "spec": str(result.spec),
            "history": result.history,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
