"""Benchmark: how well this machine's measurement of a whole network agrees with itself: the
ceiling for any latency predictor judged against one measurement.

    python benchmarks/network_repeatability.py [--backends onnxruntime] [--threads 2] [--rounds 18]
                                               [--runs 90] [--tag NAME]

Every distinct zoo network is measured whole twice, pass A then pass B, each exactly as
``benchmarks/lut_accuracy.py`` measures the networks it validates (``LatencyTable.measure_networks``'s
conditions: interleaved rounds, a fresh ONNX Runtime session per network per round, the speed
reference between them, the median of the per-round medians at the reference speed).

Pass A is then scored as if it were a lookup table's prediction of pass B: a predictor that knew
each network's latency exactly, as it was a few minutes earlier. The score is the one
``lut_accuracy.py`` gives a table (``lightnets.search.refit``: overhead and scale fitted on every
second network of pass B, relative errors, how many of the networks within 10%), so the two read
side by side. The same for the two halves of pass B (even rounds predicting odd rounds): the
machine against itself within one measurement. A network that a perfect predictor misses by
more than 10% is one no table can be shown to meet the 10% target on, on this machine, that day.
Writes ``benchmarks/results/repeatability-<backend><tag>-<cpu>.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _results import write_results

import lightnets
from lightnets.analysis import distinct_specs
from lightnets.cost import BACKENDS
from lightnets.report import format_table, machine_info
from lightnets.search import LatencyTable, refit, summarize, summary_lines


def median_of_rounds(per_round: list[list[float]]) -> float:
    return statistics.median(statistics.median(runs) for runs in per_round)


def as_rows(names: list[str], earlier: list[float], later: list[float]) -> list[dict]:
    """``earlier`` in the place of a table's summed sites, ``later`` in that of the measured network."""
    return [{"model": name, "calibration": False, "sites_ms": a, "predicted_ms": a, "measured_ms": b,
             "error": a / b - 1} for name, a, b in zip(names, earlier, later, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="onnxruntime", help="comma-separated: eager, onnxruntime, ...")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=18, help="interleaved rounds per pass (default 18)")
    parser.add_argument("--runs", type=int, default=90, help="timed runs per network per pass, split over the rounds")
    parser.add_argument("--tag", default="", help="appended to the result file's name")
    args = parser.parse_args()
    if args.rounds < 2 or args.rounds % 2:
        parser.error(f"--rounds must be an even number >= 2 (the halves of pass B), got {args.rounds}")
    unknown = [b for b in args.backends.split(",") if b not in BACKENDS]
    if unknown:
        parser.error(f"unknown backend(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(BACKENDS)}")
    if args.threads < 1 or args.runs < 1:
        parser.error(f"--threads and --runs must be >= 1, got {args.threads} and {args.runs}")
    networks = distinct_specs()
    names = list(networks)
    models = [lightnets.build(spec) for spec in networks.values()]
    shapes = [(1, spec.settings.in_chans, args.resolution, args.resolution) for spec in networks.values()]
    machine = machine_info()
    for backend in args.backends.split(","):
        table = LatencyTable.new(backend, threads=args.threads, runs=args.runs)
        passes, seconds = [], []
        for label in ("pass A", "pass B"):
            start = time.perf_counter()
            timed = table.time_rounds(models, shapes, args.rounds, part=False, label=f"{backend}, {label}",
                                      show_progress=True)
            passes.append(table.normalise(timed)[0])
            seconds.append(time.perf_counter() - start)
        a = [median_of_rounds(per_round) for per_round in passes[0]]
        b = [median_of_rounds(per_round) for per_round in passes[1]]
        b_even = [median_of_rounds(per_round[0::2]) for per_round in passes[1]]
        b_odd = [median_of_rounds(per_round[1::2]) for per_round in passes[1]]
        scores = {}
        for label, earlier, later in (("pass A predicting pass B", a, b),
                                      ("pass B, even rounds predicting odd", b_even, b_odd)):
            rows, overhead, scale = refit(as_rows(names, earlier, later), 2)
            scores[label] = {"rows": rows, "summary": summarize(rows), "overhead_ms": overhead, "scale": scale}
        a_vs_b = scores["pass A predicting pass B"]["rows"]
        halves = scores["pass B, even rounds predicting odd"]["rows"]
        print(f"\n{backend}, {args.resolution}x{args.resolution}, batch 1, {table.threads} threads, {machine['cpu']}: "
              f"{len(names)} networks, {args.rounds} rounds of {args.runs} runs per pass; "
              f"pass A {seconds[0]:.0f} s, pass B {seconds[1]:.0f} s")
        print(format_table(
            [{"model": name, "a": x, "b": y, "ab": r["error"], "halves": h["error"]}
             for name, x, y, r, h in zip(names, a, b, a_vs_b, halves, strict=True)],
            [("model", "model"), ("a", "pass A ms"), ("b", "pass B ms"), ("ab", "A predicting B (refit)"),
             ("halves", "even predicting odd (refit)")],
            formats={"a": "{:.2f}", "b": "{:.2f}", "ab": "{:+.1%}", "halves": "{:+.1%}"},
        ))
        for label, score in scores.items():
            print(f"{label}: " + "; ".join(summary_lines(score["summary"])))
        out = write_results(f"repeatability-{backend}{args.tag}", {
            "settings": vars(args), "threads": table.threads, "seconds": seconds,
            "pass_a_ms": dict(zip(names, a, strict=True)), "pass_b_ms": dict(zip(names, b, strict=True)),
            "scores": scores,
        })
        print(f"wrote {out}")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
