"""Benchmark: the zoo table on this machine, written to benchmarks/results/.

    python benchmarks/zoo.py [--resolution 224] [--threads N] [--runs 30]

Prints the table (sorted by median latency) and writes
``benchmarks/results/zoo-<cpu>.json`` and ``zoo-<cpu>.png`` (latency against MAdds).
"""

from __future__ import annotations

import argparse

from _results import result_path, write_results

from lightnets.analysis import machine_info, run_zoo
from lightnets.analysis.plots import plot_zoo
from lightnets.cli.reports import zoo_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()

    run = run_zoo(args.resolution, threads=args.threads, runs=args.runs, warmup=args.warmup)
    machine = machine_info()
    title = run.title(machine["cpu"], machine["torch"])
    print(zoo_report(run, title))

    png = result_path(f"zoo-{args.resolution}", ".png")
    plot_zoo(run.rows, str(png), title)
    out = write_results(f"zoo-{args.resolution}", {"title": title, "settings": vars(args), **run.to_dict()})
    print(f"\nwrote {out} and {png}")


if __name__ == "__main__":
    main()
