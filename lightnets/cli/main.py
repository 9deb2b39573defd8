"""``lightnets`` command-line entry point. Each subcommand is one call into the Python API."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from .. import __version__
from ..catalog import ENTRIES, FAMILY_NAMES, PAPERS, SCENE_CANVAS, SCENE_DATA, TASKS, model_names, task_of
from ..report import format_table, safe_text
from . import options as opt

# The optional modules behind each extra (pyproject.toml), for a one-line error when one is missing.
EXTRAS = {
    "h5py": "keras", "onnx": "deploy", "onnxruntime": "deploy", "onnxscript": "deploy", "matplotlib": "plot",
    "PIL": "images",
}


def cmd_models(args: argparse.Namespace) -> int:
    rows = [
        {"name": name, "family": family, "fixes": ", ".join(f"{k}={v}" for k, v in fixed.items()) or "-",
         "paper": PAPERS[family]}
        for name, family, fixed in ENTRIES if args.family in (None, family)
    ]
    columns = [("name", "model"), ("family", "family"), ("fixes", "fixes")]
    formats = {}
    if args.counts:
        # building all 63 networks took half a minute with no sign of progress: only when asked, with a bar
        from .zoo_table import model_counts

        counts = model_counts([row["name"] for row in rows], resolution=args.resolution)
        for row in rows:
            row.update(counts[row["name"]])
        columns += [("params", "params"), ("madds", f"MAdds@{args.resolution}")]
        formats = {"params": "{:,}", "madds": lambda v: f"{v / 1e6:,.1f} M"}
    print(format_table(rows, columns=columns, formats=formats))
    print(f"\n{len(rows)} models. Papers:")
    for family in dict.fromkeys(row["family"] for row in rows):
        print(f"  {family}: {PAPERS[family]}")
    if args.counts:
        print(f"MAdds: multiply-adds of convolutions and linear layers at 1x3x{args.resolution}x{args.resolution}, "
              "the papers' convention.")
    else:
        print("Params and MAdds: add --counts (builds and counts every network listed, which takes a while).")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"resolution": args.resolution if args.counts else None, "models": rows}, fh, indent=2)
        print(f"wrote {args.json}")
    return 0


def _build_from_args(args: argparse.Namespace):
    options = {}
    if args.width_mult is not None:
        options["width_mult"] = args.width_mult
    if args.groups is not None:
        options["groups"] = args.groups
    if args.minimal:
        options["minimal"] = True
    return _model(args.name, options)


def _refuse_dense(name: str | None, why: str) -> None:
    """Commands that work on a classifier's spec or its logits (spec, lut, netadapt, search) say so for a
    segmentation or detection model, and ``why`` it cannot take one."""
    if name in model_names() and task_of(name) != "classification":
        raise ValueError(
            f"{name} is a {task_of(name)} model; this command handles classifiers: {why} (profile, zoo, export, "
            f"eval and predict take dense models)"
        )


def _model(name: str, options: dict):
    """A registered model, or the network a spec (file or string, see ``lightnets spec``) describes."""
    from ..models import build, create_model, list_models, read_spec

    if name in list_models():
        return create_model(name, **options)
    if not (name.lstrip().startswith(("stem", "{")) or os.path.isfile(name)):
        raise ValueError(
            f"unknown model {name!r}: give a registered name (see 'lightnets models'), a spec file or a spec string"
        )
    if options:
        raise ValueError(f"a network spec states every width; options {sorted(options)} do not apply to it")
    return build(read_spec(name))


def cmd_spec(args: argparse.Namespace) -> int:
    from ..models import channel_groups, walk

    _refuse_dense(args.name, "it prints a classifier's spec (a dense model's backbone is one: "
                             "lightnets.create_model(NAME).backbone.spec)")
    model = _build_from_args(args)
    spec = model.spec
    print("\n".join(spec.lines()))
    if args.walk:
        sites = walk(spec, args.walk)
        rows = [
            {"site": s.name, "spec": str(s.spec), "in": s.in_chs, "out": s.out_chs,
             "size": f"{s.in_size[0]}x{s.in_size[1]} -> {s.out_size[0]}x{s.out_size[1]}"}
            for s in sites
        ]
        print(f"\nsites at {args.walk}x{args.walk}")
        print(format_table(rows, [("site", "site"), ("spec", "spec"), ("in", "in"), ("out", "out"), ("size", "size")]))
    if args.channel_groups:
        groups = channel_groups(spec)
        rows = [
            {"group": g.name, "width": g.width, "members": len(g.members),
             "prunable": "yes" if g.prunable else f"no: {g.note.split(';')[0]}"}
            for g in groups
        ]
        print(f"\n{len(groups)} channel groups")
        columns = [("group", "group"), ("width", "channels"), ("members", "layers"), ("prunable", "prunable")]
        print(format_table(rows, columns))
    if args.json:
        with open(args.json, "w", encoding="utf8") as fh:
            fh.write(spec.to_json(indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def configuration(name: str, options: dict) -> str:
    """A registered model with the width, groups and variant it builds: ``shufflenet_v1 (g=8, width 0.5)``.

    The options given, else what the name fixes, else the family's defaults; a spec is named as given.
    """
    import inspect

    from ..models import get_entry, list_models

    if name not in list_models():
        return name
    entry = get_entry(name)
    defaults = {k: p.default for k, p in inspect.signature(entry.builder).parameters.items()}
    chosen = {**defaults, **entry.fixed, **options}
    parts = []
    if "groups" in chosen:
        parts.append(f"g={chosen['groups']}")
    parts.append(f"width {chosen['width_mult']:g}")
    if chosen.get("minimal"):
        parts.append("minimal")
    if chosen.get("official"):
        parts.append("official")
    return f"{name} ({', '.join(parts)})"


def cmd_profile(args: argparse.Namespace) -> int:
    from ..cost import profile
    from ..models.memory import check_request, spec_of
    from .reports import profile_report

    model = _build_from_args(args)
    size = (1, 3, args.resolution, args.resolution)
    check_request(spec_of(model), f"profiling at {args.resolution}x{args.resolution}", args.resolution)
    load = _start_load_watch() if args.latency else None
    prof = profile(model, size, latency=args.latency, runs=args.runs, threads=args.threads)
    title = f"{configuration(args.name, _model_options(args))} at {args.resolution}x{args.resolution}, batch 1"
    title = "\n".join([title, *(_load_lines(*load) if load else [])])
    print(profile_report(prof, title))
    if prof.latency is not None and prof.latency.unstable:
        print(f"UNSTABLE: the end-to-end spread is {100 * prof.latency.spread:.0f}% after "
              f"{prof.latency.attempts} attempts; rerun on an idle machine before quoting it")
    if args.json:
        prof.write_json(args.json)
        print(f"wrote {args.json}")
    if args.csv:
        prof.write_csv(args.csv)
        print(f"wrote {args.csv}")
    return 0


def _lut_networks(models: list[str] | None) -> dict:
    """Named networks for the latency table: the given registered names or spec files, or every
    distinct network of the zoo (one per distinct spec)."""
    from ..analysis import distinct_models

    names = models or list(distinct_models(task="classification"))
    networks, seen = {}, set()
    for name in names:
        _refuse_dense(name, "a latency table times the sites of classifiers' specs")
        spec = _model(name, {}).spec
        if str(spec) not in seen:
            seen.add(str(spec))
            networks[name] = spec
    return networks


def _start_load_watch():
    """The machine's load now (half a second) and a watch over what follows: for the measuring
    commands' output, which must say when other work ran beside them."""
    from ..cost.load import LoadWatch, machine_load

    return machine_load(), LoadWatch().start()


def _load_lines(before, watch) -> list[str]:
    from ..cost.load import load_lines

    return load_lines(before, watch.reading())


def _speed_line(table, when: str) -> str:
    """What a table's speed reference saw (or that it has none), for the lut commands' output."""
    from ..cost import speed_summary

    if not table.reference:
        return "no speed reference: entries and measurements in the ms of the moments they were measured"
    seen = speed_summary([t / table.reference_ms for t in table.reference_readings]) if table.reference_ms else None
    line = f"speed reference {table.reference_ms:.3f} ms nominal" if table.reference_ms else "speed reference"
    if seen:
        line += (f"; during {when} the machine ran at {seen['min']:.2f}-{seen['max']:.2f}x that time (median "
                 f"{seen['median']:.2f}x, {len(table.reference_readings)} readings); times are at the nominal speed")
    return line


def cmd_lut_build(args: argparse.Namespace) -> int:
    from ..search import LatencyTable

    networks = _lut_networks(args.models)
    load = _start_load_watch()
    if os.path.exists(args.output):
        table = LatencyTable.load(args.output)
        table.check_device()
        print(f"extending {args.output}: {len(table.entries)} entries measured on this device")
        for flag, wanted, built in (("--input-layouts", args.input_layouts, table.input_layouts),
                                    ("--fold-residuals", args.fold_residuals, table.fold_residuals)):
            if wanted != built:
                raise ValueError(f"{args.output} was built {'with' if built else 'without'} {flag}: "
                                 f"extend it the same way, or write a new table")
        if args.no_reference and table.reference:
            raise ValueError(f"{args.output} has a speed reference: extend it with one, or write a new table for "
                             f"--no-reference")
    else:
        table = LatencyTable.new(args.backend, threads=args.threads, runs=args.runs, warmup=args.warmup,
                                 reference=not args.no_reference, input_layouts=args.input_layouts,
                                 fold_residuals=args.fold_residuals)
    measured = table.measure_sites(
        networks.values(), args.resolution, rounds=args.rounds, show_progress=not args.no_progress
    )
    print(f"measured {measured} new entries for {len(networks)} networks at {args.resolution}x{args.resolution} "
          f"({table.backend}, {table.threads} threads, median of {table.runs}); {len(table.entries)} entries")
    calibration = list(networks.values())[:: args.calibrate_every] if args.calibrate_every else []
    if calibration:
        overhead, scale = table.calibrate(calibration, args.resolution)
        print(f"calibrated on {len(calibration)} of {len(networks)} networks measured whole: "
              f"latency = {overhead:.3f} ms + {scale:.4f} x summed sites")
    print(_speed_line(table, "this build"))
    print("\n".join(_load_lines(*load)))
    table.save(args.output)
    print(f"wrote {args.output}")
    return 0


def cmd_lut_validate(args: argparse.Namespace) -> int:
    from ..search import LatencyTable, plot_validation, refit, summarize, summary_lines, validate, validation_table

    table = LatencyTable.load(args.table)
    entries_before = len(table.entries)
    load = _start_load_watch()
    rows = validate(table, _lut_networks(args.models), args.resolution, show_progress=not args.no_progress)
    print(f"latency table {args.table}: {table.backend}, {table.threads} threads, batch {table.batch}, "
          f"{args.resolution}x{args.resolution}; latency = {table.overhead_ms:.3f} ms + {table.scale:.4f} x summed "
          f"sites (fitted on {len(table.calibration)} networks{'' if args.refit_every else ', marked *'})")
    if args.refit_every:
        rows, overhead, scale = refit(rows, args.refit_every)
        print(f"refitted on 1 in {args.refit_every} of the networks measured now (marked *): latency = "
              f"{overhead:.3f} ms + {scale:.4f} x summed sites; the machine runs at {scale / table.scale:.2f}x the "
              f"table's fitted scale now ('as built': the table's own fit)")
    print(_speed_line(table, "this validation"))
    print("\n".join(_load_lines(*load)))
    print(validation_table(rows))
    print()
    print("\n".join(summary_lines(summarize(rows))))
    if len(table.entries) > entries_before:
        table.save(args.table)
        print(f"kept {len(table.entries) - entries_before} entries measured on demand in {args.table}")
    if args.plot:
        title = f"lookup table vs measured, {table.backend}, {args.resolution}x{args.resolution}"
        plot_validation(rows, args.plot, title)
        print(f"wrote {args.plot}")
    if args.json:
        with open(args.json, "w", encoding="utf8") as fh:
            json.dump({"table": args.table, "resolution": args.resolution, "rows": rows}, fh, indent=2)
        print(f"wrote {args.json}")
    return 0


def cmd_netadapt(args: argparse.Namespace) -> int:
    import time

    from ..formats import load_model, save_checkpoint
    from ..search import LatencyTable, free_cores, netadapt, plot_netadapt, width_baseline
    from ..train import checkpoint_preprocessing, load_data

    if args.baseline and not args.plot:
        raise SystemExit("lightnets netadapt: --baseline draws on the --plot; give --plot PNG too")
    widths = args.baseline or []
    if widths and args.name == "spec":
        raise SystemExit("lightnets netadapt: --baseline needs a registered network NAME whose width multipliers "
                         "to train, not 'spec'")
    if args.plot:
        from ..report import pyplot

        pyplot()  # fail before the search if matplotlib is missing
    _refuse_dense(args.name, "NetAdapt shrinks a classifier's spec and fine-tunes it on classification data")
    loaded = load_model(args.checkpoint, args.name)
    config = loaded.config
    data = args.data or config.get("data", "digits")
    resolution = loaded.preprocessing.resolution
    pre = checkpoint_preprocessing(data, loaded.preprocessing)
    splits = load_data(data, resolution, augment=config.get("augment", "auto"), preprocessing=pre,
                       flip=config.get("flip"))
    if args.table and os.path.exists(args.table):
        table = LatencyTable.load(args.table)
    else:
        table = LatencyTable.new(args.backend, threads=args.threads, runs=args.runs)
    run_dir = args.out or os.path.join("runs", f"netadapt-{loaded.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    kinds = tuple(args.kinds)
    result = netadapt(
        loaded.model, splits, table, input_size=resolution, target_ms=args.target_ms, target_ratio=args.target_ratio,
        steps=args.steps, final_steps=args.final_steps, select=args.select, kinds=kinds,
        max_iterations=args.max_iterations, run_dir=run_dir, delta_ratio=args.delta_ratio,
        workers=free_cores() if args.workers == "auto" else args.workers,
    )
    if args.table:
        table.save(args.table)
    final = os.path.join(run_dir, "final.safetensors")
    save_checkpoint(final, result.model.state_dict(), config={
        "model": {"spec": str(result.spec)}, "classes": loaded.class_names, "data": data,
        "preprocessing": loaded.preprocessing.to_dict(), "netadapt": {"seed": args.checkpoint},
    }, progress={}, keep_previous=False)
    with open(os.path.join(run_dir, "spec.txt"), "w", encoding="utf8") as fh:
        fh.write("\n".join(result.spec.lines()) + "\n")
    print(f"{len(result.history)} steps: predicted {result.seed_ms:.3f} -> {result.predicted_ms:.3f} ms, measured "
          f"{result.measured_seed_ms:.3f} -> {result.measured_ms:.3f} ms; top-1 {100 * result.seed_top1:.2f}% -> "
          f"{100 * result.top1:.2f}%")
    print(f"wrote {final} (lightnets eval spec --checkpoint {final}), {run_dir}/spec.txt, {run_dir}/history.json")
    if args.plot:
        baseline = []
        if widths:
            budget = args.baseline_steps or (
                loaded.progress.get("global_step", 0) + args.steps * len(result.history) + args.final_steps
            )
            baseline = width_baseline(args.name, widths, splits, table, input_size=resolution, steps=budget)
        plot_netadapt(result, args.plot, f"NetAdapt, {loaded.name}, {resolution}x{resolution}, {table.backend}",
                      baseline)
        print(f"wrote {args.plot}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from ..search import (
        LatencyTable,
        ProxyEvaluator,
        SearchSpace,
        evaluate_widths,
        measure_fronts,
        plot_search,
        search,
        write_result,
    )
    from ..train import digits, load_data

    for name in (args.base, args.target_model):
        _refuse_dense(name, "the search space is a classifier's stages, scored by classification accuracy")
    widths = args.widths or []
    if widths and not (args.plot or args.plot_measured):
        raise SystemExit("lightnets search: --widths draws on the --plot; give --plot PNG or --plot-measured PNG too")
    if args.families and not args.plot_measured:
        raise SystemExit("lightnets search: --families draws on the measured plot; give --plot-measured PNG too")
    for name, _ in args.families or []:
        _refuse_dense(name, "the baselines are scored by classification accuracy")
    if args.target_ms is None and args.target_model is None and not (args.pareto or args.print_space):
        raise SystemExit("lightnets search: give --target-ms MS or --target-model NAME (the reward's TAR), or "
                         "--pareto for the front alone")
    if args.plot or args.plot_measured:
        from ..report import pyplot

        pyplot()  # fail before the search if matplotlib is missing
    resolution = args.resolution or (32 if args.data == "digits" else 224)
    if args.data == "digits":
        splits = digits(resolution, train_fraction=args.train_fraction, val_from_train=args.val_from_train)
    elif args.train_fraction != 1.0 or args.val_from_train:
        raise SystemExit("lightnets search: --train-fraction and --val-from-train apply to the built-in digits")
    else:
        splits = load_data(args.data, resolution)
    space = SearchSpace.around(args.base, num_classes=len(splits[0].classes))
    if args.print_space:
        print(space.describe())
        return 0
    if args.table and os.path.exists(args.table):
        table = LatencyTable.load(args.table)
    else:
        table = LatencyTable.new(args.backend, threads=args.threads, runs=args.runs)
    evaluator = ProxyEvaluator(splits, table, input_size=resolution, steps=args.proxy_steps, recipe=args.recipe,
                               seed=args.seed, threads=args.train_threads, latency_size=args.latency_resolution)
    base_label = args.base if isinstance(args.base, str) and "/" not in args.base else "spec"
    out = args.out or os.path.join("runs", f"search-{base_label}-{args.study}")
    target_spec = None
    if args.target_model is not None:
        target_spec = evaluator.named_spec(args.target_model)
        print(f"search: the target is {args.target_model}: its predicted latency during the search "
              f"({evaluator.latency_size}x{evaluator.latency_size}, {table.backend}, {table.threads} thread(s)), "
              f"measured beside the finalists at the end")
    common = dict(budget=args.budget, target_ms=args.target_ms, target_spec=target_spec, w=args.w, hard=args.hard,
                  pareto=args.pareto, storage=args.storage, run_dir=out, seed=args.seed, measure_top=args.measure_top,
                  measure_rounds=args.measure_rounds, measure_fresh=args.measure_fresh, select=args.select,
                  noise_seeds=args.noise_seeds, stale_after=args.stale_after)
    print(f"search: {space.size():,} networks around {args.base}; {args.budget} trials, {args.sampler} sampler, "
          f"proxy {args.proxy_steps} steps at {resolution}x{resolution}; results in {out}")
    result = search(space, evaluator, sampler=args.sampler, study_name=args.study, **common)
    results = {args.sampler: result}
    if args.compare_random:
        # the same table and calibration as the search it is compared with
        results["random"] = search(space, evaluator, sampler="random", study_name=f"{args.study}-random",
                                   calibrate=False, **common)
    if args.table:
        table.save(args.table)
    paths = write_result(result, out)
    best = result.best
    print("best network:")
    print("\n".join(f"  {line}" for line in result.best_spec.lines()))
    measured = f", measured whole {best['measured_ms']:.3f} ms" if "measured_ms" in best else ""
    if "of_target" in best:
        measured += f" ({best['of_target']:.1%} of the target measured beside it)"
    score = f", reward {best['reward']:.4f}" if best.get("reward") is not None else ""
    print(f"trial {best['number']}: predicted {best['latency_ms']:.3f} ms{measured}, proxy top-1 "
          f"{100 * best['accuracy']:.2f}%{score}; Pareto front of {len(result.front)} of {len(result.rows)} networks")
    print(f"wrote {', '.join(paths)}")
    print(f"  train it: lightnets train --spec {paths[0]} --out RUN; then shrink it to the target with NetAdapt: "
          f"lightnets netadapt spec --checkpoint RUN/last.safetensors --target-ms MS")
    rows = evaluate_widths(args.base, widths, evaluator) if widths else []
    title = f"search around {args.base}, {resolution}x{resolution}, {table.backend}"
    if args.plot:
        plot_search({k: r.rows for k, r in results.items()}, args.plot, title, target_ms=result.target_ms,
                    baseline=rows)
        print(f"wrote {args.plot}")
    if args.plot_measured:
        baselines = {args.base: rows} if rows else {}
        for name, family_widths in args.families or []:
            baselines[name] = evaluate_widths(name, family_widths, evaluator)
        measured = measure_fronts(results, baselines, evaluator, target_spec, args.measure_rounds, args.measure_fresh)
        plot_search(measured["fronts"], args.plot_measured, title + ", measured", latency="measured_ms",
                    target_ms=measured["target_ms"] if target_spec is not None else args.target_ms,
                    baseline={f"{name} (width-scaled)": r for name, r in measured["baselines"].items()})
        print(f"wrote {args.plot_measured} ({measured['networks']} networks measured side by side, "
              f"{measured['seconds']:.0f} s)")
    return 0


def cmd_zoo(args: argparse.Namespace) -> int:
    from ..analysis import machine_info, run_zoo
    from .reports import zoo_report

    models = args.models
    if args.plot:
        from ..report import pyplot

        pyplot()  # fail before measuring if matplotlib is missing
    run = run_zoo(
        args.resolution, threads=args.threads, runs=args.runs, warmup=args.warmup, rounds=args.rounds,
        spread_limit=args.spread_limit, retries=args.retries, models=models, backend=args.backend, task=args.task,
    )
    machine = machine_info()
    title = run.title(machine["cpu"], machine["torch"])
    print(zoo_report(run, title))
    if args.plot:
        from ..analysis.plots import plot_zoo

        plot_zoo(run.rows, args.plot, title)
        print(f"wrote {args.plot}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"title": title, "machine": machine, **run.to_dict()}, fh, indent=2)
        print(f"wrote {args.json}")
    return 0


def cmd_lab(args: argparse.Namespace) -> int:
    import os

    from ..lab import EXPERIMENTS, LabConfig, run_lab
    from ..lab.report import plot, report

    names = list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]
    config = LabConfig(device=args.device, threads=args.threads, batch=args.batch, seconds_per_network=args.seconds,
                       rounds=args.rounds, spread_limit=args.spread_limit, retries=args.retries)
    if args.plot_dir:
        from ..report import pyplot

        pyplot()  # fail before measuring if matplotlib is missing
        os.makedirs(args.plot_dir, exist_ok=True)
    show = sys.stderr.isatty()
    results = run_lab(names, config, progress=(lambda msg: print(f"  {msg}", file=sys.stderr)) if show else None)
    for result in results:
        print(report(result))
        if args.plot_dir:
            path = os.path.join(args.plot_dir, f"lab-{result.name}.png")
            plot(result, path)
            print(f"wrote {path}")
        print()
    print("verdicts:")
    for result in results:
        print(f"  {result.verdict_line()}")
    unstable = sum(cell.unstable for result in results for cell in result.cells)
    cells = sum(len(result.cells) for result in results)
    print(f"{unstable} of {cells} networks UNSTABLE" if unstable else f"all {cells} networks stable")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"results": [r.to_dict() for r in results]}, fh, indent=2)
        print(f"wrote {args.json}")
    return 0


def _model_options(args: argparse.Namespace) -> dict:
    options = {}
    for key in ("width_mult", "groups", "dropout"):
        value = getattr(args, key, None)
        if value is not None:
            options[key] = value
    if getattr(args, "minimal", False):
        options["minimal"] = True
    return options


def _spec_model(path: str, options: dict, num_classes: int):
    """The network a spec file (or string) states, for training: it must have the data's classes."""
    from ..models import build, read_spec

    # the spec states its dropout too; a recipe's default dropout does not override it
    if extra := sorted(set(options) - {"num_classes", "dropout"}):
        raise ValueError(f"a network spec states every width; options {extra} do not apply to it")
    spec = read_spec(path)
    if spec.head.num_classes != num_classes:
        raise ValueError(f"the spec's classifier has {spec.head.num_classes} classes, the data {num_classes}")
    return build(spec)


def _train_data(args: argparse.Namespace) -> None:
    """``--task`` names the built-in scenes a dense model trains on; a dense model given no data takes its own."""
    if args.task:
        if args.data and args.data != args.task:
            raise ValueError(f"--task {args.task} trains on its built-in scenes; --data {args.data!r} names other data")
        args.data = args.task
    if args.resume or args.spec:
        return
    task = task_of(args.name)
    if task == "classification":
        if args.data in SCENE_DATA:
            wanted = SCENE_DATA[args.data]
            raise ValueError(f"{args.name} is a classifier; {args.data} trains {wanted} models "
                             f"({', '.join(model_names(task=wanted))})")
        return
    args.data = args.data or f"digit-{task}"
    if SCENE_DATA.get(args.data) != task:
        raise ValueError(f"{args.name} is a {task} model: it trains on the built-in scenes (--task digit-{task}), "
                         f"not on {args.data!r}")


def cmd_train(args: argparse.Namespace) -> int:
    import time

    from ..models import create_model
    from ..train import fit, get_recipe, load_data, resume

    run_options = dict(
        checkpoint_every=args.checkpoint_every, device=args.device, amp=args.amp, channels_last=args.channels_last,
        sync_bn=args.sync_bn, deterministic=args.deterministic, threads=args.threads, max_steps=args.max_steps,
        workers=args.workers, bad_images=args.bad_images, show_progress=not args.no_progress,
    )
    if args.spec and args.resume:
        raise SystemExit("lightnets train: --resume continues the network its run stored; --spec starts a new run")
    if args.spec:
        if args.name not in (None, "spec"):
            raise SystemExit(f"lightnets train: give a registered NAME or --spec FILE, not both ({args.name!r})")
        args.name = "spec"
    elif args.name is None and not args.resume:
        raise SystemExit("lightnets train: give a registered model NAME or --spec FILE")
    _train_data(args)
    if args.resume:
        if args.force:
            raise ValueError("--force starts a new run in an existing directory; --resume continues the run there")
        if args.out and os.path.abspath(args.out) != os.path.abspath(args.resume):
            raise ValueError(f"--resume continues the run in {args.resume!r}, in place; --out {args.out!r} names "
                             "another directory")
        # Options a new run takes: stated with --resume, each must be the run's own (resume() says which is not).
        given = {"recipe": args.recipe, "lr": args.lr, "batch_size": args.batch_size, "resolution": args.resolution,
                 "seed": args.seed, "data": args.data, "augment": args.augment, "flip": False if args.no_flip else None,
                 **_model_options(args)}
        result = resume(args.resume, args.name, checkpoint=args.checkpoint, epochs=args.epochs,
                        expect={k: v for k, v in given.items() if v is not None}, **run_options)
    else:
        args.recipe, args.data, args.seed = args.recipe or "small-data", args.data or "digits", args.seed or 0
        data_options = {"augment": args.augment or "auto", "flip": False if args.no_flip else None}
        recipe = get_recipe(args.recipe)
        if args.dropout is None and recipe.dropout is not None:
            args.dropout = recipe.dropout
        resolution = args.resolution or (32 if args.data == "digits" else SCENE_CANVAS if args.data in SCENE_DATA
                                         else 224)
        run_dir = args.out or os.path.join("runs", f"{args.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        # Fail early on bad data, learn the classes.
        train_split, _ = load_data(args.data, resolution, args.bad_images, **data_options)
        options = {**_model_options(args), "num_classes": len(train_split.classes)}
        import torch

        torch.manual_seed(args.seed)  # the initial weights depend on the seed too
        if args.spec:
            model, model_config = _spec_model(args.spec, options, len(train_split.classes)), None
        else:
            model, model_config = create_model(args.name, **options), {"name": args.name, "options": options}
        result = fit(
            model, args.data, recipe, run_dir=run_dir, epochs=args.epochs,
            batch_size=args.batch_size, lr=args.lr, resolution=resolution, seed=args.seed,
            model_config=model_config, overwrite=args.force, **data_options, **run_options,
        )
    if int(os.environ.get("RANK", "0")) == 0:
        label = {"top1": "top-1", "miou": "mean IoU", "map": "mAP@[.5:.95]"}[result.metric]
        print(f"best validation {label} {100 * result.best_score:.2f}% at epoch {result.best_epoch}; "
              f"run directory {result.run_dir}")
        if args.plot:
            from ..train.plots import plot_curves, read_metrics

            path = os.path.join(result.run_dir, "curves.png")
            title = f"{args.name}: {args.resume}" if args.resume else f"{args.name} on {args.data}"
            plot_curves(read_metrics(os.path.join(result.run_dir, "metrics.jsonl")), path, title)
            print(f"wrote {path}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ..formats import load_model
    from ..train import check_classes, checkpoint_preprocessing, evaluate, load_data

    loaded = load_model(args.checkpoint, args.name, device=args.device)
    task = getattr(loaded.model, "task", "classification")
    if task != "classification" and args.plot:
        raise ValueError(f"--plot draws a classifier's confusion matrix; {args.checkpoint!r} holds a {task} model "
                         "(its figures are printed, and written with --json)")
    resolution = args.resolution or loaded.preprocessing.resolution
    data = args.data or loaded.config.get("data", "digits")
    pre = checkpoint_preprocessing(data, loaded.preprocessing)
    _, val = load_data(data, resolution, args.bad_images, augment=False, preprocessing=pre)
    check_classes(val, loaded.class_names)
    if task != "classification":
        return _eval_dense(args, loaded.model, val, task, data, resolution)
    result = evaluate(loaded.model, val, batch_size=args.batch_size, device=args.device)
    print(f"{args.name} on {safe_text(data)} ({val.name}, {result.count} images, {resolution}x{resolution}): "
          f"top-1 {100 * result.top1:.2f}%, top-5 {100 * result.top5:.2f}%, loss {result.loss:.4f}"
          + (f"; {result.skipped} unreadable images skipped" if result.skipped else ""))
    print()
    per_class = zip(result.classes, result.per_class, result.confusion.sum(1), strict=True)
    print(
        format_table(
            [{"class": c, "acc": a, "n": int(n)} for c, a, n in per_class],
            [("class", "class"), ("n", "images"), ("acc", "accuracy")],
            formats={"acc": lambda v: f"{100 * v:.1f}%"},
        )
    )
    if len(result.classes) <= 20:
        print("\nconfusion matrix (rows: true class, columns: predicted)")
        rows = [{"true": c, **{p: int(v) for p, v in zip(result.classes, row, strict=True)}}
                for c, row in zip(result.classes, result.confusion.tolist(), strict=True)]
        print(format_table(rows, [("true", "true")] + [(c, c) for c in result.classes]))
    if args.plot:
        from ..train.plots import plot_confusion

        plot_confusion(result, args.plot, f"{args.name}: {args.checkpoint}")
        print(f"wrote {args.plot}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result.to_dict(), fh, indent=2)
        print(f"wrote {args.json}")
    return 0


def _eval_dense(args: argparse.Namespace, model, val, task: str, data: str, resolution: int) -> int:
    """``lightnets eval`` of a detection (COCO mAP) or segmentation (mean IoU) checkpoint."""
    from ..train import evaluate_detection, evaluate_segmentation

    where = f"{args.name} on {safe_text(data)} ({val.name}, {val.size} images, {resolution}x{resolution})"
    if task == "detection":
        result = evaluate_detection(model, val, batch_size=args.batch_size, device=args.device)
        print(f"{where}: mAP@[.5:.95] {100 * result['map']:.2f}%, mAP@0.5 {100 * result['map50']:.2f}%, "
              f"mAP@0.75 {100 * result['map75']:.2f}%, recall@100 {100 * result['mar100']:.2f}% "
              f"({result['detections']} detections scoring >= {result['score_thresh']:g}; COCO's evaluation, "
              f"pycocotools)")
        rows = [{"class": val.classes[label], "ap": ap} for label, ap in result["per_class"].items()]
        columns, figure = [("class", "class"), ("ap", "AP@[.5:.95]")], "ap"
        result = {**result, "per_class": {val.classes[k]: v for k, v in result["per_class"].items()}}
    else:
        result = evaluate_segmentation(model, val, batch_size=args.batch_size, device=args.device)
        print(f"{where}: mean IoU {100 * result['miou']:.2f}%, pixel accuracy {100 * result['pixel_acc']:.2f}%")
        pixels = [sum(row) for row in result["confusion"]]
        rows = [{"class": c, "iou": iou, "n": n}
                for c, iou, n in zip(result["classes"], result["per_class"], pixels, strict=True)]
        columns, figure = [("class", "class"), ("n", "pixels"), ("iou", "IoU")], "iou"
    print()
    print(format_table(rows, columns, formats={figure: lambda v: "-" if v is None else f"{100 * v:.1f}%"}))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"task": task, **result}, fh, indent=2)
        print(f"wrote {args.json}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from ..export import predict
    from ..formats import load_model

    # a dense checkpoint's task decides the output: classes, or boxes and masks drawn into --out
    loaded = load_model(args.checkpoint, args.name)  # read once, predicted with below
    task = getattr(loaded.model, "task", "classification")
    if task != "classification":
        return _predict_dense(args, task, loaded)
    if args.out is not None:
        raise ValueError(f"--out is where a detection or segmentation checkpoint's drawings go; {args.checkpoint!r} "
                         "holds a classifier, whose classes are printed")
    predictions = predict(args.name, loaded, args.images, top=args.top, bad_images=args.bad_images)
    for prediction in predictions:
        if prediction.error is None:
            print(safe_text(prediction.path))
            for rank, (label, prob) in enumerate(prediction.top, start=1):
                print(f"  {rank}. {safe_text(label):<20} {100 * prob:6.2f}%")
        else:
            print(f"lightnets: skipped: {safe_text(prediction.error)}", file=sys.stderr)
    return _unread_status(predictions)


def _unread_status(predictions: list) -> int:
    """Like training's --bad-images skip: the others are predicted, the skipped are counted; the
    exit status says not every image was."""
    unread = sum(p.error is not None for p in predictions)
    if unread:
        print(f"lightnets: error: {unread} of {len(predictions)} images could not be read (see above)",
              file=sys.stderr)
        return 2
    return 0


def _predict_dense(args: argparse.Namespace, task: str, loaded) -> int:
    from ..export import predict_dense

    if args.out is None:
        raise ValueError(f"{args.checkpoint!r} holds a {task} model: give --out DIR, where the images are drawn with "
                         f"their {'boxes' if task == 'detection' else 'masks'} (one PNG each)")
    predictions = predict_dense(args.name, loaded, args.images, args.out, score_thresh=args.score_thresh,
                                bad_images=args.bad_images)
    for prediction in predictions:
        if prediction.error is not None:
            print(f"lightnets: skipped: {safe_text(prediction.error)}", file=sys.stderr)
            continue
        if task == "detection":
            print(f"{safe_text(prediction.path)}: {len(prediction.detections)} detections scoring >= "
                  f"{args.score_thresh:g}")
            for label, score, (x1, y1, x2, y2) in prediction.detections:
                print(f"  {safe_text(label):<20} {100 * score:6.2f}%  box {x1:.1f},{y1:.1f},{x2:.1f},{y2:.1f}")
        else:
            print(f"{safe_text(prediction.path)}: {sum(prediction.pixels.values())} pixels not background, at the "
                  "model's input size")
            for label, count in sorted(prediction.pixels.items(), key=lambda item: -item[1]):
                print(f"  {safe_text(label):<20} {count} pixels")
        print(f"  drawn: {safe_text(prediction.drawn)}")
    return _unread_status(predictions)


def _refuse_existing(output: str, force: bool) -> None:
    """``-o FILE`` must not replace a file (a run's ``last.safetensors``, an earlier export) unless ``--force``."""
    if os.path.exists(output) and not force:
        raise ValueError(f"{output!r} already exists; give another -o FILE, or --force to replace it")


def cmd_export(args: argparse.Namespace) -> int:
    from ..export import export_onnx, export_pt2, quantize_int8
    from ..formats import check_output_file, load_model

    if args.int8 and (args.format != "onnx" or not args.calibration):
        raise ValueError("--int8 needs --format onnx and --calibration DATA ('digits' or an ImageFolder PATH)")
    check_output_file(args.output, "export's output")
    _refuse_existing(args.output, args.force)
    options = _model_options(args)
    if args.checkpoint:
        # the checkpoint fixes the network: options that differ from the stored ones are refused
        loaded = load_model(args.checkpoint, args.name, options=options)
        model, preprocessing = loaded.model, loaded.preprocessing
        resolution = args.resolution or preprocessing.resolution
    else:
        model, preprocessing = _model(args.name, options).eval(), None
        resolution = args.resolution or 224
    task = getattr(model, "task", "classification")
    if args.int8 and task != "classification":
        raise ValueError(f"--int8 quantizes classifiers (calibrated on classification images); this is a {task} "
                         "model: export it in float (--format onnx or pt2, without --int8)")
    if args.int8:
        from ..train import calibration_batches

        batches = calibration_batches(
            args.calibration, resolution, preprocessing=preprocessing, batches=args.calibration_batches,
            report=lambda message: print(safe_text(message), file=sys.stderr),
        )
        quantize_int8(model, args.output, batches, resolution=resolution)
    elif args.format == "onnx":
        # a detector's anchors fix its input size: exported at exactly the size asked for
        size = resolution if task == "detection" else max(resolution, 32)
        export_onnx(model, args.output, resolution=size, fuse_bn=not args.no_fuse)
    else:
        export_pt2(model, args.output, resolution=resolution, fuse_bn=not args.no_fuse)
    print(f"wrote {args.output} ({os.path.getsize(args.output) / 1024:.0f} KB)")
    for line in _dense_outputs(task, args.format, resolution):
        print(f"  {line}")
    return 0


def _dense_outputs(task: str, file_format: str, resolution: int) -> list[str]:
    """What a dense model's exported file computes, and what stays in Python (lightnets.export.export_onnx)."""
    batch = "N (any batch)"
    if task == "detection":
        outputs = "outputs boxes, scores" if file_format == "onnx" else "returns (boxes, scores)"
        return [
            f"input: {batch} x 3 x {resolution} x {resolution}, fixed size (the anchors are constants of it); "
            f"{outputs}",
            "boxes (N, anchors, 4): xyxy in input pixels, clipped to the image; scores (N, anchors, classes): "
            "softmax, column 0 the background",
            "not in the file: the score threshold, per-class NMS and top-k; run them in Python after boxes/scores "
            "(model.detect does: torchvision.ops.batched_nms per class)",
        ]
    if task == "segmentation":
        size = "H x W, any size >= 32" if file_format == "onnx" else f"{resolution} x {resolution}, fixed size"
        return [f"input: {batch} x 3 x {size}; output logits (N, classes, H, W) at the input size; the mask is "
                "their argmax over classes"]
    return []


def cmd_convert(args: argparse.Namespace) -> int:
    from ..convert import convert_checkpoint
    from ..formats import check_output_file

    check_output_file(args.output, "converted checkpoint")
    _refuse_existing(args.output, args.force)
    classes = None
    if args.classes:
        with open(args.classes, encoding="utf8") as fh:
            classes = [line.strip() for line in fh if line.strip()]
    config = convert_checkpoint(
        args.source, args.name, args.file, args.output, width_mult=args.width_mult, minimal=args.minimal,
        classes=classes, resolution=args.resolution,
    )
    model = config["model"]
    options = ", ".join(f"{k}={v!r}" for k, v in model["options"].items())
    print(f"wrote {args.output}: lightnets {model['name']} ({options}) from {args.source} {args.name}")
    print(f"  try: lightnets predict {model['name']} --checkpoint {args.output} IMAGE...")
    return 0


def _add_table_options(parser: argparse.ArgumentParser) -> None:
    """The latency-table options netadapt and search share."""
    parser.add_argument("--table", metavar="FILE", help="a latency table to use and extend (default: a new one)")
    parser.add_argument("--backend", choices=["eager", "compile", "onnxruntime", "onnxruntime-int8"],
                        default="eager", help="with a new table: what runs the sites (default eager)")
    parser.add_argument("--threads", type=opt.positive_int,
                        help="with a new table: intra-op threads (default: torch's)")
    parser.add_argument("--runs", type=opt.positive_int, default=30,
                        help="with a new table: timed runs per site (default 30)")


def _add_stability_options(parser: argparse.ArgumentParser, what: str) -> None:
    """The options of measurement in rounds with unstable rows flagged, shared by zoo and lab."""
    parser.add_argument("--rounds", type=opt.positive_int, default=5,
                        help=f"interleaved rounds: every {what} once per round, so drift hits all alike (default 5)")
    parser.add_argument("--spread-limit", type=opt.positive_finite_float, default=0.5,
                        help=f"a {what} whose (p90 - p10) / median exceeds this, or timed while other processes used "
                             "a quarter core or more, is measured again, then marked UNSTABLE (default 0.5)")
    parser.add_argument("--retries", type=opt.nonnegative_int, default=2,
                        help=f"remeasurements of an unstable {what} (default 2)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightnets",
        description="MobileNet V1-V3 and ShuffleNet V1-V2: models, costs, and measured speed.",
        epilog="threads: train, eval, predict, export, convert and spec run OpenMP with OMP_WAIT_POLICY=PASSIVE "
        "unless OMP_WAIT_POLICY is already set: idle worker threads sleep instead of spinning (spinning made 2-thread "
        "training 1.9x slower on a 2-core machine with one core busy). Commands that time networks (zoo, lab, "
        "profile, lut, netadapt, search) keep OpenMP's own policy: passive waits made idle batch-1 latencies 1.5x "
        "slower. Commands that compute take --threads N (default: torch's, one per core).",
    )
    parser.add_argument("--version", action="version", version=f"lightnets {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    models = sub.add_parser("models", help="list the registered models, their families and papers")
    models.add_argument("--family", choices=FAMILY_NAMES, help="only this family (default: all)")
    models.add_argument("--counts", action="store_true",
                        help="also count params and MAdds (builds every network listed, with a progress bar)")
    models.add_argument("--resolution", type=opt.resolution, default=224,
                        help="input size of the MAdds with --counts (default 224)")
    models.add_argument("--json", metavar="FILE", help="also write the table as JSON")
    models.set_defaults(func=cmd_models)

    spec = sub.add_parser("spec", help="a model as a network spec: every width stated; sites and channel groups")
    spec.add_argument("name", help="a registered model, a spec file (JSON or text) or a spec string")
    spec.add_argument("--width-mult", type=opt.positive_finite_float,
                      help="width multiplier alpha (default: the model's)")
    spec.add_argument("--groups", type=opt.positive_int, help="ShuffleNetV1 groups (default: the model's)")
    spec.add_argument("--minimal", action="store_true", help="MobileNetV3 minimalistic variant")
    spec.add_argument("--walk", type=opt.resolution, metavar="RES", help="also list every site at RES x RES input")
    spec.add_argument("--channel-groups", action="store_true", help="also list the channels pruned together")
    spec.add_argument("--json", metavar="FILE", help="write the spec as JSON (lightnets profile FILE reads it)")
    spec.set_defaults(func=cmd_spec)

    lut = sub.add_parser("lut", help="latency lookup tables: every distinct site timed once on this device")
    lut_sub = lut.add_subparsers(dest="lut_command", metavar="ACTION")
    lut_sub.required = True
    lut_build = lut_sub.add_parser("build", help="measure every site of the given networks (default: the zoo)")
    lut_build.add_argument("--models", type=opt.nonempty_list,
                           help="comma-separated names or spec files (default: every distinct zoo model)")
    lut_build.add_argument("--resolution", type=opt.resolution, default=224, help="input size (default 224)")
    lut_build.add_argument("--backend", choices=["eager", "compile", "onnxruntime", "onnxruntime-int8"],
                           default="eager", help="what runs the sites (default eager)")
    lut_build.add_argument("--threads", type=opt.positive_int, help="intra-op threads (default: torch's current count)")
    lut_build.add_argument("--runs", type=opt.positive_int, default=30, help="timed runs per site (default 30)")
    lut_build.add_argument("--warmup", type=opt.nonnegative_int, default=5,
                           help="untimed runs per site first (default 5)")
    lut_build.add_argument("--rounds", type=opt.positive_int, default=3,
                           help="rounds the runs are split into, every site once per round (ONNX Runtime: a fresh "
                                "session each time; default 3)")
    lut_build.add_argument("--calibrate-every", type=opt.nonnegative_int, default=2, metavar="K",
                           help="measure every K-th network whole to fit the per-network overhead and scale; the "
                           "others are left for 'lut validate' to test on (default 2; 0: no calibration)")
    lut_build.add_argument("--no-reference", action="store_true",
                           help="no speed reference: entries in the ms of the moment they were measured (default: a "
                                "fixed block timed every few sites, every time divided by the machine's speed then)")
    lut_build.add_argument("--input-layouts", action="store_true",
                           help="onnxruntime backends: time each site with its input in the layout the site before "
                                "it leaves (NCHWc or plain), an entry per layout (default: blocked; see the README)")
    lut_build.add_argument("--fold-residuals", action="store_true",
                           help="onnxruntime backends: time a site whose input arrives blocked with its residual Add "
                                "folded into the convolution and written in place, as inside a network (an "
                                "experiment; see the README)")
    lut_build.add_argument("--no-progress", action="store_true", help="no progress bar (default: one on a terminal)")
    lut_build.add_argument("-o", "--output", required=True, help="the table (JSON); an existing one is extended")
    lut_build.set_defaults(func=cmd_lut_build)
    lut_val = lut_sub.add_parser("validate", help="predicted against measured latency of whole networks")
    lut_val.add_argument("table", help="a table written by 'lightnets lut build'")
    lut_val.add_argument("--models", type=opt.nonempty_list,
                         help="comma-separated names or spec files (default: every distinct zoo model)")
    lut_val.add_argument("--resolution", type=opt.resolution, default=224, help="input size (default 224)")
    lut_val.add_argument("--refit-every", type=opt.nonnegative_int, default=0,
                         help="also fit the overhead and scale again on every N-th network of this validation's own "
                              "measurements, so that a drift of the machine's speed since the build does not count "
                              "as the table's error (default 0: the table's stored fit only)")
    lut_val.add_argument("--plot", metavar="FILE.png", help="scatter plot of predicted against measured")
    lut_val.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    lut_val.add_argument("--no-progress", action="store_true", help="no progress bar (default: one on a terminal)")
    lut_val.set_defaults(func=cmd_lut_validate)

    na = sub.add_parser("netadapt", help="shrink a trained network to a latency target measured on this device")
    na.add_argument("name", help="the network the checkpoint holds ('spec' for one stored as its spec)")
    na.add_argument("--checkpoint", required=True, help="the trained seed network (lightnets train)")
    target = na.add_mutually_exclusive_group(required=True)
    target.add_argument("--target-ms", type=opt.positive_finite_float, help="stop at this predicted latency (ms)")
    target.add_argument("--target-ratio", type=opt.fraction, help="stop at this fraction of the seed's latency")
    na.add_argument("--data", help="'digits' or PATH (default: the data the checkpoint was trained on)")
    _add_table_options(na)
    na.add_argument("--steps", type=opt.positive_int, default=1000,
                    help="fine-tune steps per proposal, T (default 1000, MobileNetV3 section 4.2)")
    na.add_argument("--final-steps", type=opt.nonnegative_int, default=0,
                    help="fine-tune steps after the last step (default 0)")
    na.add_argument("--select", choices=["ratio", "accuracy"], default="ratio",
                    help="keep the best dAcc/|dLatency| (ratio, MobileNetV3) or the best accuracy (NetAdapt) "
                         "(default: ratio)")
    na.add_argument("--kinds", type=opt.nonempty_list, default="expansion,bottleneck",
                    help="comma-separated proposal kinds (default: expansion,bottleneck, both)")
    na.add_argument("--max-iterations", type=opt.positive_int, help="stop after this many steps")
    na.add_argument("--delta-ratio", type=opt.fraction, default=0.01,
                    help="latency each step must save, as a fraction of the seed's (default 0.01, NetAdapt)")
    na.add_argument("--workers", type=opt.workers, default="auto",
                    help="processes that fine-tune a step's proposals, one thread each (default 'auto': as many "
                         "as cores are idle by the 1-minute load average; 1 fine-tunes here)")
    na.add_argument("--plot", metavar="PNG", help="top-1 against measured latency per step (needs matplotlib)")
    na.add_argument("--baseline", type=opt.width_list, metavar="WIDTHS",
                    help="with --plot: also train these width multipliers of NAME from scratch (e.g. 0.5,0.75)")
    na.add_argument("--baseline-steps", type=opt.positive_int,
                    help="optimizer steps for each baseline network (default: the seed's training steps plus "
                         "the steps NetAdapt fine-tuned the kept networks)")
    na.add_argument("--out", metavar="RUN_DIR", help="run directory (an existing one resumes); default runs/...")
    na.set_defaults(func=cmd_netadapt)

    se = sub.add_parser("search", help="platform-aware architecture search (MnasNet reward, Optuna) under a "
                                       "latency target on this device")
    se.add_argument("--base", default="mobilenet_v3_small",
                    help="the network whose stages are searched: a registered name (default mobilenet_v3_small)")
    target = se.add_mutually_exclusive_group()
    target.add_argument("--target-ms", type=opt.positive_finite_float,
                        help="the latency target TAR of the reward (ms, this device)")
    target.add_argument("--target-model", metavar="NAME",
                        help="the latency target is this registered network (e.g. mobilenet_v3_small_075): "
                             "the table's prediction of it during the search, measured beside the finalists at "
                             "the end")
    se.add_argument("--budget", type=opt.positive_int, default=30, help="completed trials in all (default 30)")
    reward_kind = se.add_mutually_exclusive_group()
    reward_kind.add_argument("--w", type=opt.finite_float,
                             help="the reward's exponent (default -0.07, MnasNet; -0.15 for "
                                                     "MobileNetV3-Small)")
    reward_kind.add_argument("--hard", action="store_true", help="hard constraint: alpha = 0, beta = -1 (MnasNet)")
    reward_kind.add_argument("--pareto", action="store_true",
                             help="multi-objective: maximise accuracy, minimise latency, keep the Pareto front")
    se.add_argument("--sampler", choices=["tpe", "random", "nsga2"], default="tpe",
                    help="tpe (default: model-based), nsga2 (evolutionary), random (the baseline)")
    se.add_argument("--compare-random", action="store_true",
                    help="also run random search with the same budget (study NAME-random) for the plot")
    se.add_argument("--storage", metavar="URL",
                    help="a shared Optuna RDB storage (postgresql://user:pw@host/db) that several machines join "
                         "with the same --study; default: OUT/search.db (SQLite), resumed by rerunning")
    se.add_argument("--study", default="lightnets-search", help="the study's name (default lightnets-search)")
    se.add_argument("--stale-after", type=opt.positive_int, default=60,
                    help="with --storage: seconds without a heartbeat after which a trial is asked again "
                         "(default 60)")
    se.add_argument("--data", default="digits", help="'digits' (built in, default) or an ImageFolder PATH")
    se.add_argument("--train-fraction", type=opt.fraction, default=1.0,
                    help="digits: share of the training images (default 1.0)")
    se.add_argument("--resolution", type=opt.resolution, help="input size (default 32 for digits, 224 otherwise)")
    se.add_argument("--val-from-train", action="store_true",
                    help="digits: score the proxy on the training images --train-fraction leaves out, not on the "
                         "val split, which stays unseen by the search (as MnasNet reserved training images)")
    se.add_argument("--latency-resolution", type=opt.resolution,
                    help="input size at which latency is predicted and measured (default: --resolution); MnasNet "
                         "takes accuracy from a proxy task and latency at the deployed size")
    se.add_argument("--proxy-steps", type=opt.positive_int, default=200,
                    help="optimizer steps of the proxy training per candidate (default 200)")
    se.add_argument("--recipe", default="small-data", help="the proxy training's recipe (default small-data)")
    se.add_argument("--seed", type=opt.seed, default=0, help="initial weights, batches and sampler seed (default 0)")
    se.add_argument("--train-threads", type=opt.positive_int,
                    help="intra-op threads of the proxy training (default: torch's current count)")
    se.add_argument("--noise-seeds", type=opt.nonnegative_int, default=2,
                    help="train the best network from this many other seeds too, to compare the candidates' spread "
                         "of proxy accuracy with the training's own noise (default 2; 0: no)")
    _add_table_options(se)
    se.add_argument("--measure-top", type=opt.nonnegative_int, default=8,
                    help="measure whole, beside the best reward and the target network, up to this many candidates "
                         "tied with the best within the proxy's error, their latency taken 10%% lower (Pareto mode: "
                         "the front's most accurate) (default 8)")
    se.add_argument("--measure-rounds", type=opt.positive_int, default=3,
                    help="interleaved rounds of that measurement (default 3)")
    se.add_argument("--measure-fresh", action="store_true",
                    help="take those measurements (and --plot-measured's) in a new process, away from the state "
                         "the search's trainings leave in this one")
    se.add_argument("--select", choices=["budget", "reward"], default="budget",
                    help="budget (default): of the finalists still tied when measured, the slowest within the "
                         "target; reward: the highest measured reward")
    se.add_argument("--plot", metavar="PNG",
                    help="proxy top-1 against predicted latency, every candidate and the front(s) (needs matplotlib)")
    se.add_argument("--plot-measured", metavar="PNG",
                    help="proxy top-1 against latency measured whole, side by side: the front(s), the chosen "
                         "network, --widths and --families (needs matplotlib)")
    se.add_argument("--widths", type=opt.width_list, metavar="WIDTHS",
                    help="with --plot / --plot-measured: the base at these width multipliers too")
    se.add_argument("--families", type=opt.family_widths, nargs="+", metavar="NAME:WIDTHS",
                    help="with --plot-measured: other networks width-scaled, scored by the same proxy "
                         "(e.g. mobilenet_v2:0.35,0.5 shufflenet_v2:0.5,1.0)")
    se.add_argument("--print-space", action="store_true", help="print the search space and its size, and stop")
    se.add_argument("--out", metavar="DIR", help="results, and the default storage (default runs/search-BASE-STUDY)")
    se.set_defaults(func=cmd_search)

    prof = sub.add_parser("profile", help="per-layer params, MAdds, MAC and (with --latency) time")
    prof.add_argument("name", help="a registered model (see 'lightnets models'), a spec file or a spec string")
    prof.add_argument("--width-mult", type=opt.positive_finite_float,
                      help="width multiplier alpha (default: the model's)")
    prof.add_argument("--resolution", type=opt.resolution, default=224, help="input size (default 224)")
    prof.add_argument("--groups", type=opt.positive_int, help="ShuffleNetV1 groups (default: the model's)")
    prof.add_argument("--minimal", action="store_true", help="MobileNetV3 minimalistic variant")
    prof.add_argument("--latency", action="store_true", help="also time every layer and the whole forward pass")
    prof.add_argument("--runs", type=opt.positive_int, default=20, help="timed passes with --latency (default 20)")
    prof.add_argument("--threads", type=opt.positive_int, help="intra-op threads (default: torch's current count)")
    prof.add_argument("--json", metavar="FILE", help="write the profile as JSON")
    prof.add_argument("--csv", metavar="FILE", help="write the per-layer rows as CSV")
    prof.set_defaults(func=cmd_profile)

    zoo = sub.add_parser("zoo", help="every distinct model: params, MAdds, MAC and measured latency")
    zoo.add_argument("--resolution", type=opt.resolution, default=224, help="input size (default 224)")
    zoo.add_argument("--threads", type=opt.positive_int, help="intra-op threads (default: torch's current count)")
    zoo.add_argument("--runs", type=opt.positive_int, default=30, help="timed runs per model, all rounds (default 30)")
    zoo.add_argument("--warmup", type=opt.nonnegative_int, default=5, help="untimed runs per model first (default 5)")
    _add_stability_options(zoo, "model")
    zoo.add_argument("--models", type=opt.nonempty_list,
                     help="comma-separated model names (default: all distinct registered models)")
    zoo.add_argument("--task", choices=TASKS,
                     help="only the models of this task (default: all; detectors and segmenters are built with "
                          "their default classes, 91 and 21)")
    zoo.add_argument("--backend", choices=["eager", "compile", "onnxruntime", "onnxruntime-int8"], default="eager",
                     help="how to run the models (default: eager; onnxruntime exports each to ONNX first: "
                          "slower to start)")
    zoo.add_argument("--plot", metavar="FILE.png", help="write the latency-vs-MAdds scatter plot")
    zoo.add_argument("--json", metavar="FILE", help="write the table as JSON")
    zoo.set_defaults(func=cmd_zoo)

    lab = sub.add_parser("lab", help="rerun ShuffleNetV2's G1-G4 experiments and the depthwise study here")
    lab.add_argument("experiment", choices=["g1", "g2", "g3", "g4", "depthwise", "all"],
                     help="ShuffleNetV2's guideline G1-G4, the depthwise study, or all of them")
    lab.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to time (default: cpu)")
    lab.add_argument(
        "--threads", type=opt.positive_int, help="intra-op threads (default 1 on the CPU, as the paper's ARM)"
    )
    lab.add_argument("--batch", type=opt.positive_int, help="batch size (default 1 on the CPU, 8 on the GPU)")
    lab.add_argument("--seconds", type=opt.positive_finite_float, default=1.0,
                     help="timing budget per network (default 1 s)")
    _add_stability_options(lab, "network")
    lab.add_argument("--plot-dir", metavar="DIR", help="write one PNG per experiment here")
    lab.add_argument("--json", metavar="FILE", help="write all results as JSON")
    lab.set_defaults(func=cmd_lab)

    train = sub.add_parser("train", help="train a model (digits by default, or an ImageFolder tree)")
    train.add_argument("name", nargs="?", help="a registered model (or --spec FILE)")
    train.add_argument("--spec", metavar="FILE",
                       help="train the network a spec file states (lightnets spec --json, lightnets search)")
    train.add_argument(
        "--data",
        help="'digits' (built in), digit-detection or digit-segmentation (the built-in scenes, as --task), or PATH "
             "with train/ and val/ class folders (default: digits; a dense model's own scenes)"
    )
    train.add_argument(
        "--task", choices=list(SCENE_DATA),
        help="train a detection or segmentation model on the built-in digit scenes (1-4 real digits pasted on "
             f"{SCENE_CANVAS}x{SCENE_CANVAS} canvases; the default data of such a model)"
    )
    train.add_argument(
        "--recipe", help="small-data (default), mobilenet_v2, mobilenet_v3, shufflenet"
    )
    train.add_argument("--epochs", type=opt.positive_int,
                       help="passes over the training split (default: the recipe's: small-data 15, mobilenet_v2 and "
                            "mobilenet_v3 300, shufflenet 240, finetune 1)")
    train.add_argument("--batch-size", type=opt.positive_int,
                       help="images per step, per process (default: the recipe's: small-data and finetune 64, "
                            "mobilenet_v2 96, mobilenet_v3 and shufflenet 128)")
    train.add_argument("--lr", type=opt.positive_finite_float, help="peak learning rate (default: the recipe's)")
    train.add_argument("--resolution", type=opt.resolution,
                       help="input size: the resolution multiplier (default 32 for digits, 224 otherwise)")
    train.add_argument("--width-mult", type=opt.positive_finite_float,
                       help="width multiplier alpha (default: the model's, 1.0 for a family)")
    train.add_argument("--groups", type=opt.positive_int, help="ShuffleNetV1 groups (default: the model's)")
    train.add_argument("--minimal", action="store_true", help="MobileNetV3 minimalistic")
    train.add_argument("--dropout", type=opt.probability,
                       help="dropout before the classifier (default: the recipe's, else the model's)")
    train.add_argument("--out", help="run directory (default runs/NAME-TIME); one that holds a run is refused")
    train.add_argument("--force", action="store_true",
                       help="start the new run in --out even if it holds a run, removing that run's checkpoints, "
                            "config and metrics (default: refuse)")
    train.add_argument("--resume", metavar="RUN_DIR",
                       help="continue this run exactly where it stopped; --epochs N extends (or shortens) it, the "
                            "other training options must be the run's own or left out")
    train.add_argument("--checkpoint", default="last", help="with --resume: last (default), previous, best, or a file")
    train.add_argument("--checkpoint-every", type=opt.nonnegative_int, default=0, metavar="N",
                       help="also checkpoint every N steps (default 0: at the end of each epoch only)")
    train.add_argument("--seed", type=opt.seed,
                       help="seeds the initial weights, data order and augmentation (default 0)")
    train.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to train (default: cpu)")
    train.add_argument("--amp", action="store_true", help="mixed precision (fp16 on GPU, bf16 on CPU)")
    train.add_argument("--channels-last", action="store_true",
                       help="NHWC memory layout for the model and batches (default: off, NCHW)")
    train.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across GPU processes")
    train.add_argument("--deterministic", action="store_true", help="deterministic algorithms (exact reruns)")
    train.add_argument("--threads", type=opt.positive_int,
                       help="intra-op threads (default: torch's, one per core; see 'threads' in lightnets --help)")
    train.add_argument("--max-steps", type=opt.positive_int,
                       help="train for this many optimizer steps, the schedule ending there; with --epochs: stop early "
                            "(default: every step of the epochs)")
    train.add_argument("--workers", type=opt.nonnegative_int, default=0,
                       help="image-reading processes for ImageFolder data (default 0: read in the training process)")
    train.add_argument(
        "--bad-images", choices=["skip", "error"], default="skip",
        help="unreadable images: skip and count, or stop (default: skip)"
    )
    train.add_argument(
        "--augment", choices=["auto", "imagenet", "small", "none"],
        help="ImageFolder training augmentation: imagenet (random-resized crop), small (whole image, mild affine "
        "jitter), none; auto (default) picks small for images under 64 px, imagenet otherwise"
    )
    train.add_argument(
        "--no-flip", action="store_true", help="no random horizontal flips (default: flips with imagenet only)"
    )
    train.add_argument("--plot", action="store_true", help="write RUN_DIR/curves.png at the end")
    train.add_argument("--no-progress", action="store_true", help="no progress bar (default: one on a terminal)")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="top-1/top-5, per-class accuracy and confusion matrix of a checkpoint (a "
                                     "detector: COCO mAP; a segmenter: mean IoU)")
    ev.add_argument("name", help="the registered model the checkpoint holds, as given to 'lightnets train' "
                    "(see 'lightnets models'), or 'spec' for a network stored as its spec (pruned, NetAdapt)")
    ev.add_argument("--checkpoint", required=True, help="a .safetensors checkpoint written by lightnets train")
    ev.add_argument("--data", help="'digits' or PATH (default: the data the checkpoint was trained on)")
    ev.add_argument("--resolution", type=opt.resolution, help="default: the checkpoint's")
    ev.add_argument("--batch-size", type=opt.positive_int, default=256, help="images per forward pass (default 256)")
    ev.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to evaluate (default: cpu)")
    ev.add_argument("--bad-images", choices=["skip", "error"], default="skip",
                    help="unreadable images: skip and count, or stop (default: skip)")
    ev.add_argument("--plot", metavar="FILE.png", help="write the confusion matrix as a PNG")
    ev.add_argument("--json", metavar="FILE", help="write the accuracies and confusion matrix as JSON")
    ev.set_defaults(func=cmd_eval)

    pr = sub.add_parser("predict", help="top-5 classes of image files (or their boxes or masks, drawn), with a "
                                        "trained checkpoint")
    pr.add_argument("name", help="the registered model the checkpoint holds, as given to 'lightnets train' "
                    "(see 'lightnets models'), or 'spec' for a network stored as its spec (pruned, NetAdapt)")
    pr.add_argument("--checkpoint", required=True,
                    help="a .safetensors checkpoint written by lightnets train or convert")
    pr.add_argument("images", nargs="+", metavar="IMAGE", help="image files (needs Pillow, the images extra)")
    pr.add_argument("--top", type=opt.positive_int, default=5, help="classes shown per image (default 5)")
    pr.add_argument("--out", metavar="DIR",
                    help="detection and segmentation checkpoints (required for them): draw each image with its "
                         "boxes or mask into DIR/<image name>.png")
    pr.add_argument("--score-thresh", type=opt.probability, default=0.5,
                    help="detection: report and draw the boxes scoring at least this (default 0.5)")
    pr.add_argument("--bad-images", choices=["skip", "error"], default="skip",
                    help="unreadable images: skip, report and exit 2 after predicting the others, or stop at the "
                         "first before any prediction (default: skip)")
    pr.set_defaults(func=cmd_predict)

    ex = sub.add_parser("export", help="export a model to ONNX or torch.export (.pt2)")
    ex.add_argument("name", help="a registered model, a spec file or string; with --checkpoint the network it holds "
                    "('spec' for one stored as its spec)")
    ex.add_argument("--checkpoint", help="weights from lightnets train (default: random weights)")
    ex.add_argument("--format", choices=["onnx", "pt2"], default="onnx", help="the file format (default: onnx)")
    ex.add_argument("--resolution", type=opt.resolution, help="example input size (default: the checkpoint's, or 224)")
    ex.add_argument("--width-mult", type=opt.positive_finite_float,
                    help="width multiplier alpha (default: the model's)")
    ex.add_argument("--groups", type=opt.positive_int, help="ShuffleNetV1 groups (default: the model's)")
    ex.add_argument("--minimal", action="store_true", help="MobileNetV3 minimalistic variant")
    ex.add_argument("--no-fuse", action="store_true", help="keep BatchNorm layers (default: folded into the convs)")
    ex.add_argument("--int8", action="store_true", help="quantize to int8 (ONNX Runtime QDQ, per-channel weights)")
    ex.add_argument(
        "--calibration", metavar="DATA", help="with --int8: 'digits' or an ImageFolder PATH (its train split)"
    )
    ex.add_argument("--calibration-batches", type=opt.positive_int, default=10,
                    help="batches of 32 images (default 10)")
    ex.add_argument("-o", "--output", required=True, help="the file to write (.onnx or .pt2)")
    ex.add_argument("--force", action="store_true", help="replace the output file if it exists (default: refuse)")
    ex.set_defaults(func=cmd_export)

    cv = sub.add_parser(
        "convert", help="turn a torchvision, timm, Keras or Megvii weight file into a lightnets checkpoint"
    )
    cv.add_argument("source", choices=["torchvision", "timm", "keras", "megvii"], help="where the weight file is from")
    cv.add_argument(
        "name", help="the model's name there: mobilenet_v2, mobilenetv3_large_100, MobileNetV2, ShuffleNetV2_1.0x"
    )
    cv.add_argument("file", help=".pth/.pth.tar/.safetensors (torchvision, timm, megvii) or .h5/.weights.h5/.keras")
    cv.add_argument("-o", "--output", required=True, help="the lightnets checkpoint to write (.safetensors)")
    cv.add_argument("--force", action="store_true", help="replace the output file if it exists (default: refuse)")
    cv.add_argument("--width-mult", type=opt.positive_finite_float, default=1.0,
                    help="Keras only: the file's alpha (default 1.0)")
    cv.add_argument("--minimal", action="store_true", help="Keras only: MobileNetV3 minimalistic")
    cv.add_argument("--classes", help="text file with one class name per line (default: 0, 1, ...)")
    cv.add_argument("--resolution", type=opt.resolution, default=224,
                    help="input size stored for predict/export (default 224)")
    cv.set_defaults(func=cmd_convert)
    return parser


# Commands that time networks: they keep OpenMP's own wait policy. Sleeping workers must be woken
# at every parallel region, which on an idle 2-core machine made batch-1 latencies 1.5-1.7x
# slower (benchmarks/threads_under_load.py --idle: mobilenet_v3_small 7.49 -> 11.39 ms); a
# latency must be the one a deployment sees, not one our setting made.
MEASURING_COMMANDS = frozenset({"zoo", "lab", "profile", "lut", "netadapt", "search"})


def passive_openmp_waits(command: str | None = None) -> str:
    """Make OpenMP's idle threads sleep rather than spin, unless the user chose a wait policy or
    ``command`` times networks (:data:`MEASURING_COMMANDS`). Returns the policy in force.

    Spinning workers burn a core waiting at each barrier for a peer that a busy machine has
    descheduled: with one of 2 cores kept busy, 30 training steps of mobilenet_v3_small took
    21.3 s with 2 spinning threads, 11.5 s with 2 passive ones and 9.9 s with 1 thread; idle,
    7.1, 8.2 and 7.2 s (benchmarks/threads_under_load.py). libgomp reads the variable once, when
    it is loaded (``import torch``), so this runs before any command imports torch; it has no
    effect in a process that already has.
    """
    if command in MEASURING_COMMANDS:
        return os.environ.get("OMP_WAIT_POLICY", "OpenMP's default")
    return os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _missing_extra(err: ModuleNotFoundError) -> str | None:
    """The one-line message for an optional module that is not installed, or None for any other import error."""
    module = (err.name or "").split(".")[0]
    if module not in EXTRAS:
        return None
    return f'this needs {module}, which is not installed: pip install "lightnets[{EXTRAS[module]}]"'


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    passive_openmp_waits(args.command)
    try:
        return args.func(args)
    except (ValueError, OSError) as err:  # OSError: a full disk, a file not found or not writable
        print(f"lightnets: error: {safe_text(err, keep=chr(10))}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:  # not ImportError: an installed module too old to hold a name is no extra
        message = _missing_extra(err)
        if message is None:
            raise
        print(f"lightnets: error: {message}", file=sys.stderr)
        return 2
