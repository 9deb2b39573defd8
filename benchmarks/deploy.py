"""Benchmark: inference backends side by side, with the same weights.

    python benchmarks/deploy.py [--threads 2] [--runs 50]

For mobilenet_v2, mobilenet_v3_large, mobilenet_v3_small and shufflenet_v2_x1_0 at 224x224,
batch 1: torchvision eager, lightnets eager (torchvision's weights through
``from_torchvision``), lightnets with BN folded, ONNX Runtime fp32 of our export and of
torchvision's (same exporter, BN folded in both), and ONNX Runtime int8 of ours (QDQ,
per-channel, calibrated on 8 random batches: this measures speed, not accuracy; see
benchmarks/int8_digits.py for accuracy). Median ms and the ratio to torchvision eager,
measured in one run with denormals flushed; writes ``benchmarks/results/deploy-<cpu>.json``.
Needs the test extra (torchvision, onnxruntime).
"""

from __future__ import annotations

import argparse

import torch
import torchvision
from _results import write_results

import lightnets
from lightnets.analysis import machine_info
from lightnets.cli.tables import format_table
from lightnets.convert import from_torchvision
from lightnets.cost import measure_latency
from lightnets.export import fuse

MODELS = ["mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "shufflenet_v2_x1_0"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    rows = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        theirs = getattr(torchvision.models, name)().eval()
        ours = lightnets.create_model(name).eval()
        ours.load_state_dict(from_torchvision(name, theirs.state_dict()))
        size = (1, 3, 224, 224)
        kw = {"threads": args.threads, "runs": args.runs, "warmup": args.warmup}
        results = {
            "torchvision eager": measure_latency(theirs, size, **kw).median_ms,
            "lightnets eager": measure_latency(ours, size, **kw).median_ms,
            "lightnets fused eager": measure_latency(fuse(ours), size, **kw).median_ms,
        }
        results["ORT fp32 (lightnets)"] = measure_latency(ours, size, backend="onnxruntime", **kw).median_ms
        results["ORT fp32 (torchvision)"] = measure_latency(theirs, size, backend="onnxruntime", **kw).median_ms
        results["ORT int8 (lightnets)"] = measure_latency(ours, size, backend="onnxruntime-int8", **kw).median_ms
        base = results["torchvision eager"]
        for backend, ms in results.items():
            rows.append({"model": name, "backend": backend, "median_ms": ms, "ratio": ms / base})
        print(f"{name}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in results.items()), flush=True)
    machine = machine_info()
    print(f"\n224x224, batch 1, {args.threads} threads, {machine['cpu']}, torch {machine['torch']}, median of {args.runs} runs")
    print(format_table(rows, [("model", "model"), ("backend", "backend"), ("median_ms", "median ms"), ("ratio", "x torchvision eager")],
                       formats={"median_ms": "{:.2f}", "ratio": "{:.3f}"}))
    out = write_results("deploy", {"settings": vars(args), "rows": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
