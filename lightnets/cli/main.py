"""``lightnets`` command-line entry point. Each subcommand is one call into the Python API."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .. import __version__
from ..models import FAMILIES
from .tables import format_table


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def cmd_models(args: argparse.Namespace) -> int:
    from .zoo_table import model_rows

    rows = model_rows(family=args.family, resolution=args.resolution)
    print(
        format_table(
            rows,
            columns=[("name", "model"), ("family", "family"), ("params", "params"), ("madds", f"MAdds@{args.resolution}")],
            formats={"params": "{:,}", "madds": lambda v: f"{v / 1e6:,.1f} M"},
        )
    )
    print(f"\n{len(rows)} models. MAdds: multiply-adds of convolutions and linear layers at "
          f"1x3x{args.resolution}x{args.resolution}, the papers' convention.")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"resolution": args.resolution, "models": rows}, fh, indent=2)
        print(f"wrote {args.json}")
    return 0


def _build_from_args(args: argparse.Namespace):
    from ..models import create_model

    options = {}
    if args.width_mult is not None:
        options["width_mult"] = args.width_mult
    if args.groups is not None:
        options["groups"] = args.groups
    if args.minimal:
        options["minimal"] = True
    return create_model(args.name, **options)


def cmd_profile(args: argparse.Namespace) -> int:
    from ..cost import profile
    from .reports import profile_report

    model = _build_from_args(args)
    size = (1, 3, args.resolution, args.resolution)
    prof = profile(model, size, latency=args.latency, runs=args.runs, threads=args.threads)
    print(profile_report(prof, f"{args.name} at {args.resolution}x{args.resolution}, batch 1"))
    if args.json:
        prof.write_json(args.json)
        print(f"wrote {args.json}")
    if args.csv:
        prof.write_csv(args.csv)
        print(f"wrote {args.csv}")
    return 0


def zoo_title(resolution: int, threads: int, cpu: str, torch_version: str) -> str:
    return (
        f"lightnets zoo: {resolution}x{resolution}, batch 1, {threads} thread{'s' if threads != 1 else ''}, "
        f"eager CPU ({cpu}), torch {torch_version}, denormals flushed"
    )


def cmd_zoo(args: argparse.Namespace) -> int:
    from ..analysis import machine_info, run_zoo
    from .reports import zoo_report

    models = [m.strip() for m in args.models.split(",")] if args.models else None
    if args.plot:
        from ..analysis.plots import _pyplot

        _pyplot()  # fail before measuring if matplotlib is missing
    rows = run_zoo(args.resolution, threads=args.threads, runs=args.runs, warmup=args.warmup, models=models)
    machine = machine_info()
    title = zoo_title(args.resolution, rows[0].latency.threads, machine["cpu"], machine["torch"])
    print(zoo_report(rows, title))
    if args.plot:
        from ..analysis.plots import plot_zoo

        plot_zoo(rows, args.plot, title)
        print(f"wrote {args.plot}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {"title": title, "machine": machine, "resolution": args.resolution, "models": [r.to_dict() for r in rows]},
                fh,
                indent=2,
            )
        print(f"wrote {args.json}")
    return 0


def cmd_lab(args: argparse.Namespace) -> int:
    import os

    from ..lab import EXPERIMENTS, LabConfig, run_lab
    from ..lab.report import plot, report

    names = list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]
    config = LabConfig(device=args.device, threads=args.threads, batch=args.batch, seconds_per_network=args.seconds)
    if args.plot_dir:
        from ..analysis.plots import _pyplot

        _pyplot()
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
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"results": [r.to_dict() for r in results]}, fh, indent=2)
        print(f"wrote {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightnets",
        description="MobileNet V1-V3 and ShuffleNet V1-V2: models, costs, and measured speed.",
    )
    parser.add_argument("--version", action="version", version=f"lightnets {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    models = sub.add_parser("models", help="list the registered models with params and MAdds")
    models.add_argument("--family", choices=list(FAMILIES), help="only this family")
    models.add_argument("--resolution", type=_positive_int, default=224, help="input size (default 224)")
    models.add_argument("--json", metavar="FILE", help="also write the table as JSON")
    models.set_defaults(func=cmd_models)

    prof = sub.add_parser("profile", help="per-layer params, MAdds, MAC and (with --latency) time")
    prof.add_argument("name", help="a registered model (see 'lightnets models')")
    prof.add_argument("--width-mult", type=float, help="width multiplier alpha")
    prof.add_argument("--resolution", type=_positive_int, default=224, help="input size (default 224)")
    prof.add_argument("--groups", type=int, help="ShuffleNetV1 groups")
    prof.add_argument("--minimal", action="store_true", help="MobileNetV3 minimalistic variant")
    prof.add_argument("--latency", action="store_true", help="also time every layer and the whole forward pass")
    prof.add_argument("--runs", type=_positive_int, default=20, help="timed passes with --latency (default 20)")
    prof.add_argument("--threads", type=_positive_int, help="intra-op threads (default: torch's current count)")
    prof.add_argument("--json", metavar="FILE", help="write the profile as JSON")
    prof.add_argument("--csv", metavar="FILE", help="write the per-layer rows as CSV")
    prof.set_defaults(func=cmd_profile)

    zoo = sub.add_parser("zoo", help="every distinct model: params, MAdds, MAC and measured latency")
    zoo.add_argument("--resolution", type=_positive_int, default=224, help="input size (default 224)")
    zoo.add_argument("--threads", type=_positive_int, help="intra-op threads (default: torch's current count)")
    zoo.add_argument("--runs", type=_positive_int, default=30, help="timed runs per model (default 30)")
    zoo.add_argument("--warmup", type=int, default=5, help="untimed runs per model first (default 5)")
    zoo.add_argument("--models", help="comma-separated model names (default: all distinct registered models)")
    zoo.add_argument("--plot", metavar="FILE.png", help="write the latency-vs-MAdds scatter plot")
    zoo.add_argument("--json", metavar="FILE", help="write the table as JSON")
    zoo.set_defaults(func=cmd_zoo)

    lab = sub.add_parser("lab", help="rerun ShuffleNetV2's G1-G4 experiments and the depthwise study here")
    lab.add_argument("experiment", choices=["g1", "g2", "g3", "g4", "depthwise", "all"])
    lab.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    lab.add_argument("--threads", type=_positive_int, help="intra-op threads (default 1 on the CPU, as the paper's ARM)")
    lab.add_argument("--batch", type=_positive_int, help="batch size (default 1 on the CPU, 8 on the GPU)")
    lab.add_argument("--seconds", type=float, default=1.0, help="timing budget per network (default 1 s)")
    lab.add_argument("--plot-dir", metavar="DIR", help="write one PNG per experiment here")
    lab.add_argument("--json", metavar="FILE", help="write all results as JSON")
    lab.set_defaults(func=cmd_lab)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:
        print(f"lightnets: error: {err}", file=sys.stderr)
        return 2
