"""Benchmark: platform-aware architecture search on the built-in digits, against random search and
width scaling at the same measured latency.

    python benchmarks/nas_digits.py [--base mobilenet_v3_small]
        [--target-model mobilenet_v3_small_075 | --target-ratio R] [--budget 50] [--proxy-steps 60]
        [--resolution 32] [--latency-resolution 224] [--train-fraction 0.3] [--w -0.15 | --hard]
        [--backend eager] [--threads 1] [--runs 45] [--rounds 9] [--widths 0.5,0.75,1.0]
        [--families "mobilenet_v2:0.35,0.5;shufflenet_v2:0.5,1.0"] [--measure-top 8]
        [--select budget|reward] [--no-measure-fresh] [--final-steps 600] [--final-seeds 3] [--seed 0]
        [--noise-seeds 2] [--tag NAME]

The demonstration the NAS issue asks for, in one run:

1. A lookup table on ``--backend`` with ``--threads`` (MobileNetV3 measures single-threaded) at
   ``--latency-resolution`` (the deployed size: MnasNet takes latency there and accuracy from a
   proxy task), calibrated on the base network at ``--widths`` and ``--calibration-samples``
   random candidates of the space, measured whole in ``--rounds`` interleaved rounds.
2. The target TAR: the table's prediction of ``--target-model`` (default mobilenet_v3_small_075,
   the width-scaled base of the issue's example), so that LAT and TAR come from the same entries
   and fit, or ``--target-ratio`` x the base's prediction.
3. Two searches of the MnasNet-style space around ``--base`` with the same ``--budget``: TPE
   (model-based) and random search (the baseline), maximising ACC x (LAT / TAR)^w (MnasNet eq. 2;
   w = -0.15, MobileNetV3-Small's, by default). Accuracy: ``--proxy-steps`` steps of the
   small-data recipe on ``--train-fraction`` of the digits at ``--resolution``, seeded, scored on
   the training images the fraction leaves out (``digits(val_from_train=True)``, as MnasNet
   reserved training images for its search); the spread of proxy top-1 over the first 50
   candidates of each search is printed.
   Each search ends by measuring its best reward and up to ``--measure-top`` candidates tied
   with it (within the proxy's standard error) beside the target network; ``--select budget``
   keeps, of those still tied, the slowest within the measured target. These measurements run in
   a new process (``--no-measure-fresh``: in the search's own, which an hour of trainings
   changes: one run here read the target 20% slower there, relative to the finalists).
4. The final comparison: both searches' chosen networks and the width-scaled base of the target
   (``--target-model``) measured side by side (interleaved rounds; "of target" is of the target
   measured in those rounds), in this process and again in a new one, then each trained with the
   same recipe and budget (``--final-steps`` on the same training images) from ``--final-seeds``
   seeds and scored on the val split, which the search never saw.
5. The plot the NAS issue asks for, ``nas-<tag>-measured.png``: proxy top-1 against latency
   measured whole, side by side, for both searches' fronts and chosen networks, the base at
   ``--widths`` and the ``--families`` (MobileNetV2, ShuffleNetV2) width-scaled, scored by the
   same proxy; ``nas-<tag>.png`` is the same against predicted latency, every candidate.

Proxy trainings run with OMP_WAIT_POLICY=PASSIVE unless it is set (see ``lightnets --help``:
spinning OpenMP workers collapse training on a busy machine); it changes nothing at 1 thread,
where latency is measured. Writes ``benchmarks/results/nas-<tag>-<cpu>.json``, ``.txt`` by
redirection, and ``.png``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: read once, by OpenMP's start-up

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from _results import result_path, write_results  # noqa: E402

from lightnets.models import build, create_model  # noqa: E402
from lightnets.report import format_table, machine_info  # noqa: E402
from lightnets.search import (  # noqa: E402
    CALIBRATION_SAMPLES,
    W_MOBILENET_V3_SMALL,
    LatencyTable,
    ProxyEvaluator,
    SearchSpace,
    evaluate_widths,
    measure_fronts,
    plot_search,
    reward,
    search,
    validate,
)
from lightnets.train import digits, fit  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="mobilenet_v3_small")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--target-model", default="mobilenet_v3_small_075",
                        help="TAR: this registered network measured whole")
    target.add_argument("--target-ratio", type=float, help="TAR as a share of the base's predicted latency")
    parser.add_argument("--budget", type=int, default=50, help="completed trials per search")
    parser.add_argument("--proxy-steps", type=int, default=60)
    parser.add_argument("--resolution", type=int, default=32, help="proxy training's input size")
    parser.add_argument("--latency-resolution", type=int, default=224, help="input size of every latency")
    parser.add_argument("--train-fraction", type=float, default=0.3)
    reward_kind = parser.add_mutually_exclusive_group()
    reward_kind.add_argument("--w", type=float, default=W_MOBILENET_V3_SMALL)
    reward_kind.add_argument("--hard", action="store_true")
    parser.add_argument("--backend", default="eager")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=45, help="timed runs per site and network")
    parser.add_argument("--rounds", type=int, default=9,
                        help="interleaved rounds of the calibration, the target and the side-by-side measurement")
    parser.add_argument("--widths", default="0.5,0.75,1.0", help="width multipliers of the base: calibration, plot")
    parser.add_argument("--calibration-samples", type=int, default=CALIBRATION_SAMPLES,
                        help="random candidates of the space the table is calibrated on too")
    parser.add_argument("--families", default="mobilenet_v2:0.35,0.5;shufflenet_v2:0.5,1.0",
                        help="other width-scaled networks on the measured plot, NAME:W1,W2;... ('' for none)")
    parser.add_argument("--measure-top", type=int, default=8,
                        help="candidates tied with each search's best measured beside it and the target")
    parser.add_argument("--measure-fresh", action=argparse.BooleanOptionalAction, default=True,
                        help="measure each search's finalists in a new process (default; --no-measure-fresh: in this "
                             "one)")
    parser.add_argument("--select", choices=["budget", "reward"], default="budget",
                        help="of the measured finalists still tied: the slowest within the target, or the best reward")
    parser.add_argument("--final-steps", type=int, default=600, help="the final comparison's training budget")
    parser.add_argument("--final-seeds", type=int, default=3, help="seeds of each final training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise-seeds", type=int, default=2, help="the best network trained from other seeds too")
    parser.add_argument("--tag", default=None, help="results name (default digits-<base>)")
    args = parser.parse_args()
    if args.target_ratio is not None:
        args.target_model = None
    families = parse_families(args.families)
    tag = args.tag or f"digits-{args.base}"
    started = time.perf_counter()
    # the proxy scores on the training images the fraction leaves out; the val split is kept for the final comparison
    proxy_data = digits(resolution=args.resolution, train_fraction=args.train_fraction, val_from_train=True)
    data = digits(resolution=args.resolution, train_fraction=args.train_fraction)
    table = LatencyTable.new(args.backend, threads=args.threads, runs=args.runs)
    evaluator = ProxyEvaluator(proxy_data, table, input_size=args.resolution, steps=args.proxy_steps, seed=args.seed,
                               latency_size=args.latency_resolution)
    space = SearchSpace.around(args.base, num_classes=len(data[0].classes))
    widths = [float(x) for x in args.widths.split(",") if x.strip()]
    scaled = {w: create_model(args.base, width_mult=w, num_classes=evaluator.num_classes).spec for w in widths}
    # the networks a search asks about are not its base's width multiples: calibrate on some of the space's too
    sampled = space.sample(args.calibration_samples, seed=args.seed)
    table.calibrate([*scaled.values(), *sampled], args.latency_resolution, rounds=args.rounds)
    print(f"latency table: {table.backend}, {table.threads} thread(s), {args.latency_resolution}x"
          f"{args.latency_resolution}: {table.overhead_ms:.3f} ms + {table.scale:.3f} x summed sites (fitted on "
          f"{args.base} x{', x'.join(f'{w:g}' for w in widths)} and {len(sampled)} random candidates of the space, "
          f"measured whole)", flush=True)
    target_spec = None
    if args.target_model:
        # predicted, as every candidate is: the same entries and fit on both sides of LAT / TAR
        target_spec = evaluator.named_spec(args.target_model)
        target = evaluator.latency_ms(target_spec)
        origin = f"{args.target_model} predicted"
    else:
        target = args.target_ratio * evaluator.latency_ms(space.base_network())
        origin = f"{args.target_ratio:g} x the base's predicted latency"
    w = None if args.hard else args.w
    print(f"{space.size():,} networks around {args.base}; target {target:.3f} ms ({origin})", flush=True)
    results, seconds = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for sampler in ("tpe", "random"):
            start = time.perf_counter()
            results[sampler] = search(
                space, evaluator, budget=args.budget, target_ms=None if target_spec else target,
                target_spec=target_spec, w=w, hard=args.hard, sampler=sampler, study_name=f"nas-{sampler}",
                storage=f"sqlite:///{tmp}/nas.db", seed=args.seed, calibrate=False, measure_top=args.measure_top,
                measure_rounds=args.rounds, measure_fresh=args.measure_fresh, select=args.select,
                noise_seeds=args.noise_seeds,
                log=lambda m: print(m, flush=True),
            )
            seconds[sampler] = time.perf_counter() - start
    baseline = evaluate_widths(args.base, widths, evaluator)
    for row in baseline:
        row["reward_value"] = reward(row["accuracy"], row["latency_ms"], target, w, args.hard)
    others = {family: evaluate_widths(family, family_widths, evaluator) for family, family_widths in families}
    measured_plot = measure_fronts(results, {args.base: baseline, **others}, evaluator, target_spec, args.rounds,
                                   fresh_process=True)
    print(f"measured for the plot: {measured_plot['networks']} networks side by side, {args.rounds} rounds, "
          f"{measured_plot['seconds']:.0f} s", flush=True)

    # the final comparison: measured side by side, trained alike
    finalists = {f"{s} best (trial {r.best['number']})": r.best_spec for s, r in results.items()}
    if args.target_model:
        finalists[args.target_model] = evaluator.named_spec(args.target_model)
    start = time.perf_counter()
    side_by_side = {r["model"]: r for r in validate(table, finalists, args.latency_resolution, rounds=args.rounds,
                                                    show_progress=False)}
    # of the target measured in the same rounds: the machine's drift over the run cancels
    beside = side_by_side[args.target_model]["measured_ms"] if args.target_model else target
    # and again in a new process, away from what an hour of trainings left in this one
    fresh = dict(zip(finalists, evaluator.measure_side_by_side(list(finalists.values()), args.rounds,
                                                               fresh_process=True), strict=True))
    fresh_target = fresh[args.target_model] if args.target_model else target
    final = []
    for name, spec in finalists.items():
        accs = []
        for k in range(args.final_seeds):
            model = build(spec)
            trained = fit(model, data, "small-data", run_dir=None, max_steps=args.final_steps, seed=args.seed + k,
                          show_progress=False, log=lambda _m: None)
            accs.append(float(trained.final["val_top1"]))
            print(f"final: {name}, seed {args.seed + k}: top-1 {100 * accs[-1]:.2f}%", flush=True)
        measured = side_by_side[name]
        final.append({
            "network": name, "spec": str(spec), "predicted_ms": measured["predicted_ms"],
            "measured_ms": measured["measured_ms"], "of_target": measured["measured_ms"] / beside,
            "fresh_ms": fresh[name], "fresh_of_target": fresh[name] / fresh_target,
            "top1_mean": statistics.mean(accs), "top1_min": min(accs), "top1_max": max(accs), "top1": accs,
            "params": sum(p.numel() for p in build(spec).parameters()),
        })
    final_seconds = time.perf_counter() - start
    machine = machine_info()
    kind = "hard constraint (alpha 0, beta -1)" if args.hard else f"w = {args.w:g}"
    title = (
        f"architecture search on digits (train fraction {args.train_fraction:g}, {args.resolution}x"
        f"{args.resolution}), around {args.base}; latency {args.backend}, {table.threads} thread(s), "
        f"{args.latency_resolution}x{args.latency_resolution}; reward {kind}, target {target:.3f} ms ({origin}); "
        f"{args.budget} trials per sampler, proxy {args.proxy_steps} steps; {machine['cpu']}, torch {machine['torch']}"
    )
    print(f"\n{title}")
    rows = []
    for sampler, result in results.items():
        spread = result.spread
        noise = (f"; its best network over {len(spread['seed_accuracies'])} seeds: stdev "
                 f"{100 * spread['seed_stdev']:.2f} points" if "seed_stdev" in spread else "")
        print(f"{sampler}: {seconds[sampler]:.0f} s; proxy top-1 over the first {spread['count']} candidates "
              f"{100 * spread['min']:.2f}-{100 * spread['max']:.2f}% (median {100 * spread['median']:.2f}%, stdev "
              f"{100 * spread['stdev']:.2f} points, {100 * spread['within_half_point']:.0f}% within half a point of "
              f"the median){noise}")
        best = result.best
        sel = result.selection
        print(f"{sampler}: chose trial {best['number']} ({sel['rule']}) of the measured finalists "
              f"{sel['contenders']} (best reward: trial {sel['best_reward']}; tie band {sel['band']:.4f})")
        rows.append({"network": f"{sampler} best (trial {best['number']})", "latency_ms": best["latency_ms"],
                     "measured_ms": best.get("measured_ms"), "of_target": best.get("of_target"),
                     "accuracy": best["accuracy"], "reward": best["reward"], "front": len(result.front)})
    rows += [{"network": f"{args.base} {r['label']}", "latency_ms": r["latency_ms"], "measured_ms": None,
              "accuracy": r["accuracy"], "reward": r["reward_value"], "front": ""} for r in baseline]
    print("\nthe searches (proxy accuracy, predicted latency; measured beside the target at each search's end):")
    print(format_table(
        rows,
        [("network", "network"), ("latency_ms", "predicted ms"), ("measured_ms", "measured ms"),
         ("of_target", "of target"), ("accuracy", "proxy top-1"), ("reward", "reward"), ("front", "front size")],
        formats={"latency_ms": "{:.3f}", "measured_ms": lambda v: "" if v is None else f"{v:.3f}",
                 "of_target": lambda v: "" if v is None else f"{v:.1%}",
                 "accuracy": lambda v: f"{100 * v:.2f}%", "reward": "{:.4f}"},
    ))
    print(f"\nthe final comparison ({final_seconds:.0f} s): measured side by side ({args.rounds} interleaved rounds, "
          f"ms at the table's reference speed; in this process, then in a new one), each trained "
          f"{args.final_steps} steps of small-data on the same images from {args.final_seeds} seeds, top-1 on the "
          f"val split the search never saw")
    print(format_table(
        final,
        [("network", "network"), ("params", "params"), ("predicted_ms", "predicted ms"),
         ("measured_ms", "measured ms"), ("of_target", "of target"), ("fresh_ms", "new process ms"),
         ("fresh_of_target", "of target"), ("top1_mean", "top-1 mean"), ("top1_min", "min"), ("top1_max", "max")],
        formats={"params": "{:,}", "predicted_ms": "{:.3f}", "measured_ms": "{:.3f}", "of_target": "{:.1%}",
                 "fresh_ms": "{:.3f}", "fresh_of_target": "{:.1%}",
                 "top1_mean": lambda v: f"{100 * v:.2f}%", "top1_min": lambda v: f"{100 * v:.2f}%",
                 "top1_max": lambda v: f"{100 * v:.2f}%"},
    ))
    total = time.perf_counter() - started
    print(f"whole demonstration: {total / 60:.1f} min")
    plot = result_path(f"nas-{tag}", ".png")
    plot_title = (f"search around {args.base}, digits x{args.train_fraction:g} {args.resolution}px; latency "
                  f"{args.backend} {args.latency_resolution}px")
    plot_search({s: r.rows for s, r in results.items()}, str(plot), plot_title, target_ms=target, baseline=baseline)
    measured_png = result_path(f"nas-{tag}-measured", ".png")
    plot_search(measured_plot["fronts"], str(measured_png), plot_title + ", measured",
                target_ms=measured_plot["target_ms"], latency="measured_ms",
                baseline={f"{name} (width-scaled)": rows for name, rows in measured_plot["baselines"].items()})
    out = write_results(f"nas-{tag}", {
        "settings": vars(args), "title": title, "target_ms": target, "target": origin, "space_size": space.size(),
        "target_measured_beside_finalists_ms": beside, "target_measured_new_process_ms": fresh_target,
        "seconds": seconds, "final_seconds": final_seconds, "total_seconds": total,
        "calibration": {"overhead_ms": table.overhead_ms, "scale": table.scale},
        "results": {s: r.to_dict() for s, r in results.items()}, "widths": baseline, "final": final,
        "measured_plot": measured_plot,
    })
    print(f"wrote {out}, {plot} and {measured_png}")


def parse_families(text: str) -> list[tuple[str, list[float]]]:
    """``mobilenet_v2:0.35,0.5;shufflenet_v2:0.5,1.0`` -> [(name, widths), ...]."""
    families = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, widths = part.partition(":")
        if not widths:
            raise SystemExit(f"--families: {part!r} is not NAME:W1,W2")
        families.append((name.strip(), [float(x) for x in widths.split(",") if x.strip()]))
    return families


if __name__ == "__main__":
    main()
