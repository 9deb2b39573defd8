"""Benchmark: inference backends side by side, with the same weights.

    python benchmarks/deploy.py [--threads 2] [--runs 50] [--rounds 3]

For mobilenet_v2, mobilenet_v3_large, mobilenet_v3_small and shufflenet_v2_x1_0 at 224x224,
batch 1: torchvision eager, lightnets eager (torchvision's weights through
``from_torchvision``), lightnets with BN folded, ONNX Runtime fp32 of our export and of
torchvision's (same exporter, BN folded in both), and ONNX Runtime int8 of ours (QDQ,
per-channel, calibrated on 8 random batches: this measures speed, not accuracy; see
benchmarks/int8_digits.py for accuracy). Every backend is measured once per round, rounds
alternate, and each figure is the median over rounds of per-round medians and ratios (the
machine is shared: alternating spreads drift over all backends). Prints median ms and the
ratio to torchvision eager, then the issue's three targets per model; denormals flushed;
writes ``benchmarks/results/deploy-<cpu>.json``.
Needs the test extra (torchvision, onnxruntime).
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torchvision
from _results import write_results

import lightnets
from lightnets.analysis import machine_info
from lightnets.convert import from_torchvision
from lightnets.cost import measure_latency
from lightnets.export import fuse
from lightnets.report import format_table

MODELS = ["mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "shufflenet_v2_x1_0"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; figures are medians over rounds")
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    rows, targets = [], []
    for name in args.models.split(","):
        torch.manual_seed(0)
        theirs = getattr(torchvision.models, name)().eval()
        ours = lightnets.create_model(name).eval()
        ours.load_state_dict(from_torchvision(name, theirs.state_dict()))
        fused = fuse(ours)
        size = (1, 3, 224, 224)
        kw = {"threads": args.threads, "runs": args.runs, "warmup": args.warmup}
        backends = {
            "torchvision eager": (theirs, "eager"),
            "lightnets eager": (ours, "eager"),
            "lightnets fused eager": (fused, "eager"),
            "ORT fp32 (lightnets)": (ours, "onnxruntime"),
            "ORT fp32 (torchvision)": (theirs, "onnxruntime"),
            "ORT int8 (lightnets)": (ours, "onnxruntime-int8"),
        }
        per_round = []
        for _ in range(args.rounds):
            per_round.append({k: measure_latency(m, size, backend=b, **kw).median_ms for k, (m, b) in backends.items()})
        results = {k: statistics.median(r[k] for r in per_round) for k in backends}
        for backend in backends:
            ratio = statistics.median(r[backend] / r["torchvision eager"] for r in per_round)
            rows.append({"model": name, "backend": backend, "median_ms": results[backend], "ratio": ratio})
        targets.append({
            "model": name,
            "eager": statistics.median(r["lightnets eager"] / r["torchvision eager"] for r in per_round),
            "onnx": statistics.median(r["ORT fp32 (lightnets)"] / r["ORT fp32 (torchvision)"] for r in per_round),
            "int8": statistics.median(r["ORT fp32 (lightnets)"] / r["ORT int8 (lightnets)"] for r in per_round),
        })
        print(f"{name}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in results.items()), flush=True)
    machine = machine_info()
    print(f"\n224x224, batch 1, {args.threads} threads, {machine['cpu']}, torch {machine['torch']}, "
          f"medians of {args.runs} runs, median over {args.rounds} alternating rounds")
    print(format_table(rows, [("model", "model"), ("backend", "backend"), ("median_ms", "median ms"),
                              ("ratio", "x torchvision eager")],
                       formats={"median_ms": "{:.2f}", "ratio": "{:.3f}"}))
    print()
    print(format_table(
        targets,
        [("model", "model"), ("eager", "lightnets / torchvision eager (<= 1.0)"),
         ("onnx", "our ONNX / torchvision's (<= 1.05)"),
         ("int8", "int8 speed-up over fp32 (>= 1.5)")],
        formats={"eager": "{:.3f}", "onnx": "{:.3f}", "int8": "{:.2f}x"},
    ))
    out = write_results("deploy", {"settings": vars(args), "rows": rows, "targets": targets})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
