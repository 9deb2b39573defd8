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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:
        print(f"lightnets: error: {err}", file=sys.stderr)
        return 2
