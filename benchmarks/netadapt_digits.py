"""Benchmark: NetAdapt on the built-in digits, latency from a lookup table measured here.

    python benchmarks/netadapt_digits.py [--model mobilenet_v2] [--epochs 15] [--resolution 32]
        [--backend onnxruntime] [--threads 1] [--target-ratio 0.6] [--delta-ratio 0.01]
        [--batch 1] [--runs 30] [--steps 1000] [--final-steps 0] [--workers 1] [--train-fraction 1.0]
        [--baseline 0.35,0.5,0.75] [--tag NAME]

Trains the seed network from scratch (small-data recipe, ``--epochs``), builds a latency table
of its sites at the training resolution on ``--backend`` with ``--threads`` (MobileNetV3's
latencies are single-threaded, section 6.1), runs ``lightnets.search.netadapt`` (the table
calibrated on the seed measured whole, MobileNetV3's two proposal kinds, dAcc / |dLatency|
selection, ``--steps`` fine-tune steps per proposal) to ``--target-ratio`` of the seed's
measured latency, fine-tunes ``--final-steps``, and measures every kept network whole. With
``--baseline`` it also trains those width multipliers of the same family from scratch with the
budget the NetAdapt network's weights received (the seed's steps, ``--steps`` per kept step,
``--final-steps``) and measures them the same way: NetAdapt's comparison (Yang et al. 2018,
section 4). ``--train-fraction`` trains on a share of the digits (a task on which accuracies
differ). Prints the history (per step: the group kept, predicted and measured latency, top-1),
writes ``benchmarks/results/netadapt-<tag>-<cpu>.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time

import torch
from _results import result_path, write_results

import lightnets
from lightnets.report import format_table, machine_info
from lightnets.search import LatencyTable, netadapt, plot_netadapt, width_baseline
from lightnets.train import digits, fit, get_recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1, help="images per timed forward pass")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per site and network")
    parser.add_argument("--target-ratio", type=float, default=0.6)
    parser.add_argument("--delta-ratio", type=float, default=0.01)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--max-iterations", type=int, default=None)
    parser.add_argument("--final-steps", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--train-fraction", type=float, default=1.0)
    parser.add_argument("--baseline", default="", help="width multipliers to train as the baseline")
    parser.add_argument("--tag", default=None, help="results name (default digits-<model>)")
    args = parser.parse_args()
    tag = args.tag or f"digits-{args.model}"
    data = digits(resolution=args.resolution, train_fraction=args.train_fraction)
    start = time.perf_counter()
    torch.manual_seed(0)
    seed = lightnets.create_model(args.model, num_classes=10)
    fit(seed, data, "small-data", run_dir=None, epochs=args.epochs, show_progress=False, log=lambda m: None)
    seed.eval()
    seed_steps = args.epochs * math.ceil(data[0].size / get_recipe("small-data").batch_size)
    train_s = time.perf_counter() - start
    table = LatencyTable.new(args.backend, threads=args.threads, runs=args.runs, batch=args.batch)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = netadapt(
            seed,
            data,
            table,
            input_size=args.resolution,
            target_ratio=args.target_ratio,
            delta_ratio=args.delta_ratio,
            steps=args.steps,
            final_steps=args.final_steps,
            max_iterations=args.max_iterations,
            workers=args.workers,
            run_dir=tmp,
            log=lambda m: print(m, flush=True),
        )
    netadapt_s = time.perf_counter() - start
    # seed and result once more, side by side, in 5 rounds (ONNX Runtime: 5 fresh sessions each)
    shape = (args.batch, 3, args.resolution, args.resolution)
    again = table.time_rounds([lightnets.build(seed.spec), result.model], [shape, shape], 5, part=False,
                              label="seed and result", show_progress=False)
    seed_again, result_again = (statistics.median(statistics.median(t) for t in rounds) for rounds in again)
    baseline, budget = [], seed_steps + args.steps * len(result.history) + args.final_steps
    if args.baseline:
        widths = [float(w) for w in args.baseline.split(",")]
        baseline = width_baseline(args.model, widths, data, table, input_size=args.resolution, steps=budget,
                                  log=lambda m: print(m, flush=True))
    machine = machine_info()
    proposals = sum(len(r["proposals"]) for r in result.history)
    rows = [{"step": 0, "group": "(seed)", "change": "", "latency_ms": result.seed_ms,
             "measured_ms": result.measured_seed_ms, "top1": result.seed_top1, "proposals": ""}]
    rows += [
        {
            "step": r["step"],
            "group": r["chosen"]["group"],
            "change": f"{r['chosen']['width_before']} -> {r['chosen']['width']}",
            "latency_ms": r["latency_ms"],
            "measured_ms": r["measured_ms"],
            "top1": r["top1"],
            "proposals": len(r["proposals"]),
        }
        for r in result.history
    ]
    title = (
        f"NetAdapt on digits (train fraction {args.train_fraction:g}), {args.model}, "
        f"{args.resolution}x{args.resolution}, batch {args.batch}, {args.backend}, {table.threads} thread(s), "
        f"target {args.target_ratio} of the seed's measured latency, delta {args.delta_ratio} of it per step, "
        f"{args.steps} fine-tune steps per proposal, {args.final_steps} final; {machine['cpu']}, "
        f"torch {machine['torch']}"
    )
    print(f"\n{title}\nseed training {train_s:.0f} s; NetAdapt {netadapt_s:.0f} s ({proposals} proposals fine-tuned, "
          f"{args.workers} worker(s))")
    percent = {"top1": lambda v: f"{100 * v:.2f}%", "latency_ms": "{:.3f}", "measured_ms": "{:.3f}"}
    print(
        format_table(
            rows,
            [("step", "step"), ("group", "kept proposal"), ("change", "channels"), ("latency_ms", "predicted ms"),
             ("measured_ms", "measured ms"), ("top1", "top-1"), ("proposals", "proposals")],
            formats=percent,
        )
    )
    print(
        f"result after the final fine-tune: measured {result.measured_seed_ms:.3f} ms -> {result.measured_ms:.3f} ms "
        f"({result.measured_ms / result.measured_seed_ms:.1%} of the seed), top-1 {100 * result.seed_top1:.2f}% -> "
        f"{100 * result.top1:.2f}% ({100 * (result.top1 - result.seed_top1):+.2f} points)"
    )
    print(f"measured again side by side (5 rounds): seed {seed_again:.3f} ms, result {result_again:.3f} ms "
          f"({result_again / seed_again:.1%})")
    if baseline:
        print(f"\nwidth multipliers of {args.model} trained from scratch for {budget} steps (the NetAdapt network's "
              f"budget: {seed_steps} seed + {args.steps} x {len(result.history)} kept steps + {args.final_steps} "
              f"final), measured the same way")
        print(format_table(
            baseline + [{"width_mult": "NetAdapt", "measured_ms": result.measured_ms, "top1": result.top1}],
            [("width_mult", "network"), ("measured_ms", "measured ms"), ("top1", "top-1")],
            formats={"measured_ms": "{:.3f}", "top1": lambda v: f"{100 * v:.2f}%"},
        ))
    plot = result_path(f"netadapt-{tag}", ".png")
    plot_netadapt(result, str(plot), f"NetAdapt, {args.model}, digits x{args.train_fraction:g}, {args.resolution}px, "
                  f"{args.backend}", baseline)
    out = write_results(
        f"netadapt-{tag}",
        {
            "settings": vars(args),
            "title": title,
            "train_s": train_s,
            "netadapt_s": netadapt_s,
            "seed_steps": seed_steps,
            "baseline_steps": budget,
            "seed_ms": result.seed_ms,
            "predicted_ms": result.predicted_ms,
            "measured_seed_ms": result.measured_seed_ms,
            "measured_ms": result.measured_ms,
            "seed_top1": result.seed_top1,
            "top1": result.top1,
            "seed_spec": str(seed.spec),
            "spec": str(result.spec),
            "remeasured_seed_ms": seed_again,
            "remeasured_ms": result_again,
            "history": result.history,
            "baseline": baseline,
        },
    )
    print(f"wrote {out} and {plot}")


if __name__ == "__main__":
    main()
