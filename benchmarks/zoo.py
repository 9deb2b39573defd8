"""Benchmark: the zoo table on this machine, written to benchmarks/results/.

    python benchmarks/zoo.py [--resolution 224] [--threads N] [--runs 30]

Prints the table (sorted by median latency) and writes
``benchmarks/results/zoo-<cpu>.json`` and ``zoo-<cpu>.png`` (latency against MAdds).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from lightnets.analysis import machine_info, run_zoo
from lightnets.analysis.plots import plot_zoo
from lightnets.cli.main import zoo_title
from lightnets.cli.reports import zoo_report

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()

    rows = run_zoo(args.resolution, threads=args.threads, runs=args.runs, warmup=args.warmup)
    machine = machine_info()
    title = zoo_title(args.resolution, rows[0].latency.threads, machine["cpu"], machine["torch"])
    print(zoo_report(rows, title))

    slug = re.sub(r"[^a-z0-9]+", "-", machine["cpu"].lower()).strip("-") or machine["hostname"]
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"zoo-{slug}-{args.resolution}"
    plot_zoo(rows, str(stem.with_suffix(".png")), title)
    payload = {"title": title, "machine": machine, "settings": vars(args), "models": [r.to_dict() for r in rows]}
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=2))
    print(f"\nwrote {stem.with_suffix('.json')} and {stem.with_suffix('.png')}")


if __name__ == "__main__":
    main()
