"""Feed every bad input of issue 18 and judge the answer: a clear error, silence, or a traceback.

Runs the probes of every ``benchmarks/bad_inputs_*.py`` module (each exposes ``PROBES``, see
``benchmarks/_probes.py``), each in its own scratch directory, prints a table and the line
"N bad inputs, N clear errors, N silent, N tracebacks", writes
benchmarks/results/bad-inputs-<cpu>.json, and exits 1 unless every probe was a clear error.

    nice -n 19 python benchmarks/bad_inputs.py [-k SUBSTRING]
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
from pathlib import Path

from _probes import Outcome, Probe
from _results import write_results

from lightnets.report import format_table, safe_text

HERE = Path(__file__).resolve().parent
MESSAGE_WIDTH = 90


def probe_modules() -> list[str]:
    return sorted(path.stem for path in HERE.glob("bad_inputs_*.py"))


def collect(selector: str | None) -> list[tuple[str, Probe]]:
    probes = []
    for name in probe_modules():
        module = importlib.import_module(name)
        for probe in module.PROBES:
            if selector is None or selector.lower() in f"{probe.item} {probe.name}".lower():
                probes.append((name, probe))
    return probes


def run(probe: Probe) -> tuple[Outcome, float]:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bad-input-") as scratch:
        try:
            outcome = probe.feed(Path(scratch))
        except Exception as err:  # noqa: BLE001 - a probe that breaks is reported, not fatal
            outcome = Outcome("traceback", f"the probe itself failed: {type(err).__name__}: {err}")
    return outcome, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", metavar="SUBSTRING", help="only the probes whose item or name contains this")
    args = parser.parse_args()
    probes = collect(args.k)
    if not probes:
        print(f"no probe matches {args.k!r}", file=sys.stderr)
        return 1
    rows = []
    for i, (module, probe) in enumerate(probes, start=1):
        print(f"[{i}/{len(probes)}] {probe.item} {probe.name} ...", end="", file=sys.stderr, flush=True)
        outcome, seconds = run(probe)
        print(f" {outcome.verdict} ({seconds:.1f} s)", file=sys.stderr, flush=True)
        rows.append({"module": module, "item": probe.item, "probe": probe.name, "verdict": outcome.verdict,
                     "message": outcome.message, "seconds": round(seconds, 2)})
    shown = [{**row, "message": safe_text(row["message"])[:MESSAGE_WIDTH]} for row in rows]
    print(format_table(shown, [("item", "item"), ("probe", "probe"), ("verdict", "verdict"),
                               ("message", "message")]))
    counts = {verdict: sum(row["verdict"] == verdict for row in rows) for verdict in ("clear", "silent", "traceback")}
    summary = (f"{len(rows)} bad inputs, {counts['clear']} clear errors, {counts['silent']} silent, "
               f"{counts['traceback']} tracebacks")
    print(summary)
    path = write_results("bad-inputs", {"selector": args.k, "modules": probe_modules(), "summary": summary,
                                        "counts": counts, "probes": rows})
    print(f"wrote {path}")
    return 0 if counts["clear"] == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
