"""Benchmark: how well a latency lookup table predicts whole networks on this machine.

    python benchmarks/lut_accuracy.py [--backends eager,onnxruntime] [--resolution 224] [--threads N]
                                      [--no-reference] [--reference-every K] [--rounds 3] [--tag NAME]

For each backend: builds a table for every distinct zoo network (all sites, 30 runs in 3
interleaved rounds), fits the per-network overhead and scale on every second network, then
measures every network whole and compares: with the fit as built, and refitted on every second
network of the validation's own interleaved rounds (this VM's speed drifts by up to 1.7x within
an hour, which no fit made minutes earlier can know; see ``lightnets.search.refit``). Prints one
table per backend and a summary for both fits (median absolute error over all networks and over
those the fit did not see, the worst network, how many are within 10%), writes
``benchmarks/results/lut-<backend>-<cpu>.json`` and ``.png``.

Speed reference (``lightnets.cost.speed``): by default a fixed block is timed every K modules of
every round, and the table's entries and the validation's measurements are divided by the
machine's speed at that moment. The same build keeps every median as measured too, so one run
reports both: "normalised" (at the table's reference speed) and "raw" (as measured, the raw
entries with a fit on the raw calibration measurements), and the speed factors (reference time /
the table's nominal) seen during the build and during the validation. ``--no-reference``: the
old behaviour (no reference; raw and normalised are then the same).
Target (the latency-table issue): every network within 10%, the build under 15 minutes.
"""

from __future__ import annotations

import argparse
import time

import torch
from _results import result_path, write_results

from lightnets.analysis import distinct_specs
from lightnets.cost import REFERENCE_EVERY, speed_summary
from lightnets.report import machine_info
from lightnets.search import (
    PLAIN_INPUT,
    LatencyTable,
    plot_validation,
    raw_view,
    refit,
    summarize,
    summary_lines,
    validate,
    validation_table,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="eager,onnxruntime")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds for the sites, the calibration and the validation (default 3)")
    parser.add_argument("--tag", default="", help="added to the result files' names (lut-<backend><tag>-<cpu>)")
    parser.add_argument("--no-reference", action="store_true", help="no speed reference (the old behaviour)")
    parser.add_argument("--reference-every", type=int, default=REFERENCE_EVERY,
                        help=f"a reference reading every K modules (default {REFERENCE_EVERY})")
    parser.add_argument("--input-layouts", action="store_true",
                        help="onnxruntime: price sites by their input layout (LatencyTable.new(input_layouts=True))")
    parser.add_argument("--fold-residuals", action="store_true",
                        help="onnxruntime: residuals folded, written in place (LatencyTable.new(fold_residuals=True))")
    parser.add_argument("--table", metavar="PATH", help="also write the table built (JSON; backend appended)")
    args = parser.parse_args()
    networks = distinct_specs()
    machine = machine_info()
    for backend in args.backends.split(","):
        table = LatencyTable.new(backend, threads=args.threads, runs=args.runs, reference=not args.no_reference,
                                 reference_every=args.reference_every, input_layouts=args.input_layouts,
                                 fold_residuals=args.fold_residuals)
        start = time.perf_counter()
        table.measure_sites(networks.values(), args.resolution, rounds=args.rounds)
        sites_s = time.perf_counter() - start
        overhead, scale = table.calibrate(list(networks.values())[::2], args.resolution, rounds=args.rounds)
        build_s = time.perf_counter() - start
        built_readings = len(table.reference_readings)
        as_built = validate(table, networks, args.resolution, rounds=args.rounds)
        rows, refit_overhead, refit_scale = refit(as_built, 2)
        raw_built = raw_view(as_built)
        raw_rows, raw_refit_overhead, raw_refit_scale = refit(raw_built, 2)
        speeds = {
            when: speed_summary([t / table.reference_ms for t in readings]) if table.reference else None
            for when, readings in (("build", table.reference_readings[:built_readings]),
                                   ("validation", table.reference_readings[built_readings:]))
        }
        plain = sum(key.endswith(PLAIN_INPUT) for key in table.entries)
        print(
            f"\n{backend}, {args.resolution}x{args.resolution}, batch 1, {table.threads} threads, {machine['cpu']}, "
            f"torch {machine['torch']}: {len(table.entries)} entries ({plain} of them a site with its input in the "
            f"plain layout) in {sites_s:.0f} s, build with calibration "
            f"{build_s:.0f} s; latency = {overhead:.3f} ms + {scale:.4f} x summed sites as built; refitted on every "
            f"second network of the validation's own rounds (marked *): {refit_overhead:.3f} ms + {refit_scale:.4f} x "
            f"summed sites (the machine at {refit_scale / scale:.2f}x the build's scale)"
        )
        if args.table:
            table.save(f"{args.table}.{backend}.json")
        print(validation_table(rows))
        summary = summarize(rows)
        summary_built = summarize(as_built)
        raw_summary, raw_summary_built = summarize(raw_rows), summarize(raw_built)
        label = "normalised" if table.reference else "no reference"
        print(f"{label}, as built: " + "; ".join(summary_lines(summary_built)))
        print(f"{label}, refitted: " + "; ".join(summary_lines(summary)))
        if table.reference:
            print(f"raw (as measured: {table.raw_overhead_ms:.3f} ms + {table.raw_scale:.4f} x summed raw sites), "
                  "as built: " + "; ".join(summary_lines(raw_summary_built)))
            print("raw, refitted: " + "; ".join(summary_lines(raw_summary)))
            print(f"speed reference: nominal {table.reference_ms:.3f} ms, a reading every {table.reference_every} "
                  f"modules; " + "; ".join(
                      f"during the {when} {s['min']:.2f}-{s['max']:.2f}x (median {s['median']:.2f}x)"
                      for when, s in speeds.items() if s))
        plot_validation(
            rows,
            str(result_path(f"lut-{backend}{args.tag}", ".png")),
            f"lookup table vs measured, {backend}, {args.resolution}x{args.resolution}",
        )
        out = write_results(
            f"lut-{backend}{args.tag}",
            {
                "settings": vars(args),
                "threads": table.threads,
                "entries": len(table.entries),
                "plain_input_entries": plain,
                "sites_s": sites_s,
                "build_s": build_s,
                "overhead_ms": overhead,
                "scale": scale,
                "summary": summary,
                "summary_as_built": summary_built,
                "refit": {"overhead_ms": refit_overhead, "scale": refit_scale},
                "reference": {"ms": table.reference_ms, "every": table.reference_every, "speeds": speeds}
                if table.reference else None,
                "raw": {"overhead_ms": table.raw_overhead_ms, "scale": table.raw_scale, "summary": raw_summary,
                        "summary_as_built": raw_summary_built,
                        "refit": {"overhead_ms": raw_refit_overhead, "scale": raw_refit_scale}},
                "rows": rows,
            },
        )
        print(f"wrote {out}")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
