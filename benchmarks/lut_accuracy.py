"""Benchmark: how well a latency lookup table predicts whole networks on this machine.

    python benchmarks/lut_accuracy.py [--backends eager,onnxruntime] [--resolution 224] [--threads N]

For each backend: builds a table for every distinct zoo network (all sites, 30 runs in 3
interleaved rounds), fits the per-network overhead and scale on every second network, then
measures every network whole and compares. Prints one table per backend and a summary (median
absolute error over all networks and over those the fit did not see, the worst network, how
many are within 10%), writes ``benchmarks/results/lut-<backend>-<cpu>.json`` and ``.png``.
Target (the latency-table issue): every network within 10%, the build under 15 minutes.
"""

from __future__ import annotations

import argparse
import time

import torch
from _results import result_path, write_results

import lightnets
from lightnets.analysis import distinct_models
from lightnets.report import machine_info
from lightnets.search import LatencyTable, plot_validation, summarize, summary_lines, validate, validation_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="eager,onnxruntime")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    networks, seen = {}, set()
    for name in distinct_models():
        spec = lightnets.create_model(name).spec
        if str(spec) not in seen:
            seen.add(str(spec))
            networks[name] = spec
    machine = machine_info()
    for backend in args.backends.split(","):
        table = LatencyTable.new(backend, threads=args.threads, runs=args.runs)
        start = time.perf_counter()
        table.measure_sites(networks.values(), args.resolution)
        sites_s = time.perf_counter() - start
        overhead, scale = table.calibrate(list(networks.values())[::2], args.resolution)
        build_s = time.perf_counter() - start
        rows = validate(table, networks, args.resolution)
        print(
            f"\n{backend}, {args.resolution}x{args.resolution}, batch 1, {table.threads} threads, {machine['cpu']}, "
            f"torch {machine['torch']}: {len(table.entries)} sites in {sites_s:.0f} s, build with calibration "
            f"{build_s:.0f} s; latency = {overhead:.3f} ms + {scale:.4f} x summed sites"
        )
        print(validation_table(rows))
        summary = summarize(rows)
        print("\n".join(summary_lines(summary)))
        plot_validation(
            rows,
            str(result_path(f"lut-{backend}", ".png")),
            f"lookup table vs measured, {backend}, {args.resolution}x{args.resolution}",
        )
        out = write_results(
            f"lut-{backend}",
            {
                "settings": vars(args),
                "threads": table.threads,
                "entries": len(table.entries),
                "sites_s": sites_s,
                "build_s": build_s,
                "overhead_ms": overhead,
                "scale": scale,
                "summary": summary,
                "rows": rows,
            },
        )
        print(f"wrote {out}")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
