"""Benchmark: platform-aware architecture search on the built-in digits, latency from a lookup table.

    python benchmarks/nas_digits.py [--base mobilenet_v3_small] [--target-ratio 0.7] [--budget 40]
        [--proxy-steps 200] [--resolution 32] [--train-fraction 0.3] [--w -0.15 | --hard]
        [--backend eager] [--threads 1] [--runs 30] [--widths 0.5,0.75,1.0] [--seed 0] [--noise-seeds 2]
        [--tag NAME]

Searches the MnasNet-style space around ``--base`` (lightnets.search.SearchSpace) twice with the
same budget, on one SQLite storage in a temporary directory: TPE (model-based) and random search
(the baseline), maximising MnasNet's reward ACC x (LAT / TAR)^w (section 3 eq. 2; w = -0.15 by
default, MobileNetV3-Small's, section 4.1) with TAR = ``--target-ratio`` x the base network's
predicted latency. Latency: one lookup table at ``--resolution`` on ``--backend`` with
``--threads`` (MobileNetV3 measures single-threaded), calibrated on the base network measured
whole; the best networks are measured whole at the end. Accuracy: ``--proxy-steps`` optimizer
steps of the small-data recipe on ``--train-fraction`` of the digits (a task on which networks
differ), seeded. The base network at ``--widths`` multipliers is scored the same way. Prints the
proxy's spread, both searches' best networks and fronts and the width baseline; writes
``benchmarks/results/nas-<tag>-<cpu>.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from _results import result_path, write_results

from lightnets.report import format_table, machine_info
from lightnets.search import (
    W_MOBILENET_V3_SMALL,
    LatencyTable,
    ProxyEvaluator,
    SearchSpace,
    evaluate_widths,
    plot_search,
    search,
)
from lightnets.train import digits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="mobilenet_v3_small")
    parser.add_argument("--target-ratio", type=float, default=0.7, help="TAR as a share of the base's latency")
    parser.add_argument("--budget", type=int, default=40, help="completed trials per search")
    parser.add_argument("--proxy-steps", type=int, default=200)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--train-fraction", type=float, default=0.3)
    reward_kind = parser.add_mutually_exclusive_group()
    reward_kind.add_argument("--w", type=float, default=W_MOBILENET_V3_SMALL)
    reward_kind.add_argument("--hard", action="store_true")
    parser.add_argument("--backend", default="eager")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=30, help="timed runs per site and network")
    parser.add_argument("--widths", default="0.5,0.75,1.0", help="width multipliers of the base to score")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise-seeds", type=int, default=2, help="the best network trained from other seeds too")
    parser.add_argument("--tag", default=None, help="results name (default digits-<base>)")
    args = parser.parse_args()
    tag = args.tag or f"digits-{args.base}"
    data = digits(resolution=args.resolution, train_fraction=args.train_fraction)
    table = LatencyTable.new(args.backend, threads=args.threads, runs=args.runs)
    evaluator = ProxyEvaluator(data, table, input_size=args.resolution, steps=args.proxy_steps, seed=args.seed)
    space = SearchSpace.around(args.base, num_classes=len(data[0].classes))
    table.calibrate([space.base_network()], args.resolution)
    target = args.target_ratio * evaluator.latency_ms(space.base_network())
    w = None if args.hard else args.w
    print(f"{space.size():,} networks around {args.base}; target {target:.3f} ms "
          f"({args.target_ratio:g} x the base's predicted latency)", flush=True)
    results, seconds = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for sampler in ("tpe", "random"):
            start = time.perf_counter()
            results[sampler] = search(
                space, evaluator, budget=args.budget, target_ms=target, w=w, hard=args.hard, sampler=sampler,
                study_name=f"nas-{sampler}", storage=f"sqlite:///{tmp}/nas.db", seed=args.seed,
                calibrate=False, noise_seeds=args.noise_seeds, log=lambda m: print(m, flush=True),
            )
            seconds[sampler] = time.perf_counter() - start
    widths = [float(x) for x in args.widths.split(",") if x.strip()]
    baseline = evaluate_widths(args.base, widths, evaluator)
    for row in baseline:
        row["reward_value"] = _reward(row, target, w, args.hard)
    machine = machine_info()
    kind = "hard constraint (alpha 0, beta -1)" if args.hard else f"w = {args.w:g}"
    title = (
        f"architecture search on digits (train fraction {args.train_fraction:g}), around {args.base}, "
        f"{args.resolution}x{args.resolution}, {args.backend}, {table.threads} thread(s); reward {kind}, target "
        f"{target:.3f} ms; {args.budget} trials per sampler, proxy {args.proxy_steps} steps; {machine['cpu']}, "
        f"torch {machine['torch']}"
    )
    print(f"\n{title}")
    rows = []
    for sampler, result in results.items():
        spread = result.spread
        noise = (f"; the best network over {len(spread['seed_accuracies'])} seeds: stdev "
                 f"{100 * spread['seed_stdev']:.2f} points" if "seed_stdev" in spread else "")
        print(f"{sampler}: {seconds[sampler]:.0f} s; proxy top-1 over the first {spread['count']} candidates "
              f"{100 * spread['min']:.2f}-{100 * spread['max']:.2f}% (stdev {100 * spread['stdev']:.2f} points){noise}")
        best = result.best
        rows.append({"network": f"{sampler} best (trial {best['number']})", "latency_ms": best["latency_ms"],
                     "measured_ms": best.get("measured_ms"), "accuracy": best["accuracy"],
                     "reward": best["reward"], "front": len(result.front)})
    rows += [{"network": f"{args.base} {r['label']}", "latency_ms": r["latency_ms"], "measured_ms": None,
              "accuracy": r["accuracy"], "reward": r["reward_value"], "front": ""} for r in baseline]
    print(format_table(
        rows,
        [("network", "network"), ("latency_ms", "predicted ms"), ("measured_ms", "measured ms"),
         ("accuracy", "proxy top-1"), ("reward", "reward"), ("front", "front size")],
        formats={"latency_ms": "{:.3f}", "measured_ms": lambda v: "" if v is None else f"{v:.3f}",
                 "accuracy": lambda v: f"{100 * v:.2f}%", "reward": "{:.4f}"},
    ))
    plot = result_path(f"nas-{tag}", ".png")
    plot_search({s: r.rows for s, r in results.items()}, str(plot), f"search around {args.base}, digits "
                f"x{args.train_fraction:g}, {args.resolution}px, {args.backend}", target_ms=target, baseline=baseline)
    out = write_results(f"nas-{tag}", {
        "settings": vars(args), "title": title, "target_ms": target, "space_size": space.size(),
        "seconds": seconds, "results": {s: r.to_dict() for s, r in results.items()}, "widths": baseline,
    })
    print(f"wrote {out} and {plot}")


def _reward(row: dict, target: float, w: float | None, hard: bool) -> float:
    from lightnets.search import reward

    return reward(row["accuracy"], row["latency_ms"], target, None if hard else w, hard)


if __name__ == "__main__":
    main()
