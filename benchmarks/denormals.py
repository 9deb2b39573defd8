"""Benchmark: why measure_latency flushes denormals.

    python benchmarks/denormals.py [--models mobilenet_v2,mobilenet_v3_large] [--runs 20]

Times freshly initialised models (eval mode, batch 1, 224x224) with denormals flushed and
not flushed, in one run, and prints the median of each and their ratio; writes
``benchmarks/results/denormals-<cpu>.json``. A ratio well above 1 is the slowdown a naive
timing of an untrained network would report as "latency".
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _results import write_results

import lightnets
from lightnets.analysis import machine_info
from lightnets.report import format_table


def median_ms(model: torch.nn.Module, x: torch.Tensor, runs: int, flush: bool) -> float:
    torch.set_flush_denormal(flush)
    try:
        with torch.inference_mode():
            for _ in range(3):
                model(x)
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - start) * 1e3)
    finally:
        torch.set_flush_denormal(False)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    families = "mobilenet_v1,mobilenet_v2,mobilenet_v3_large,mobilenet_v3_small,shufflenet_v1,shufflenet_v2"
    parser.add_argument("--models", default=families)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(1, 3, 224, 224)
    rows = []
    for name in args.models.split(","):
        model = lightnets.create_model(name).eval()
        plain = median_ms(model, x, args.runs, flush=False)
        flushed = median_ms(model, x, args.runs, flush=True)
        rows.append({"model": name, "not_flushed_ms": plain, "flushed_ms": flushed, "ratio": plain / flushed})
    machine = machine_info()
    print(f"random-init models, 224x224, batch 1, {torch.get_num_threads()} threads, {machine['cpu']}, "
          f"torch {machine['torch']}")
    print(format_table(rows, [("model", "model"), ("not_flushed_ms", "median ms, denormals kept"),
                              ("flushed_ms", "median ms, flushed"), ("ratio", "ratio")],
                       formats={"not_flushed_ms": "{:.2f}", "flushed_ms": "{:.2f}", "ratio": "{:.2f}x"}))
    out = write_results("denormals", {"runs": args.runs, "models": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
