"""Tables and plots for the lab's results."""

from __future__ import annotations

from ..cost.load import BUSY_CORES, MachineLoad, load_lines
from ..report import format_table, pyplot
from . import paper
from .experiments import ExperimentResult


def conditions_line(result: ExperimentResult) -> str:
    c = result.conditions
    threads = c["threads"]
    return (
        f"here: {c['device']}, {threads} thread{'s' if threads != 1 else ''}, batch {c['batch']}, "
        f"{c['map_size']}x{c['map_size']} maps, torch {c['torch']}, denormals {c['denormals']}, "
        f"{c['rounds']} interleaved rounds; paper: {c['paper_setting']}"
    )


def load_and_stability_lines(result: ExperimentResult) -> list[str]:
    """The machine's load before and during the experiment, and a warning when it was busy."""
    c = result.conditions
    lines = []
    if "load_before" in c and "load_during" in c:
        before, during = (MachineLoad(**{k: v for k, v in c[key].items() if k != "busy"})
                          for key in ("load_before", "load_during"))
        lines = load_lines(before, during)
    unstable = sum(cell.unstable for cell in result.cells)
    if unstable:
        lines.append(f"{unstable} of {len(result.cells)} networks UNSTABLE after {c['retries'] + 1} attempts: "
                     f"spread (p90 - p10) / median over {100 * c['spread_limit']:.0f}%, or timed while other "
                     f"processes used {BUSY_CORES} cores or more")
    return lines


def result_table(result: ExperimentResult) -> str:
    unit = "batches/s" if result.conditions["batch"] > 1 else "images/s"
    rows = []
    for column in result.columns:
        for variant in result.variants:
            cell = result.cell(variant, column)
            rows.append(
                {
                    "column": column,
                    "variant": variant,
                    "config": cell.config,
                    "madds": cell.madds / 1e6,
                    "paper": cell.paper,
                    "paper_norm": result.normalised(variant, column, "paper"),
                    "here": cell.throughput,
                    "here_norm": result.normalised(variant, column),
                    "ms": cell.median_ms,
                    "range": f"{cell.p10_ms:.2f}-{cell.p90_ms:.2f}",
                    "spread": f"{100 * cell.spread:.0f}%",
                    "flag": "UNSTABLE" if cell.unstable else "",
                }
            )
    columns = [
        ("column", "column"), ("variant", "variant"), ("config", "network"), ("madds", "MAdds (M)"),
        ("paper", f"paper {paper.UNITS[result.setting]}"), ("paper_norm", "paper (norm)"),
        ("here", f"here {unit}"), ("here_norm", "here (norm)"), ("ms", "median ms"), ("range", "p10-p90 ms"),
        ("spread", "spread"), ("flag", "flag"),
    ]
    if all(r["paper"] is None for r in rows):
        columns = [c for c in columns if not c[0].startswith("paper")]
    return format_table(
        rows, columns,
        formats={"madds": "{:.1f}", "paper": "{:g}", "paper_norm": "{:.2f}", "here": "{:.1f}", "here_norm": "{:.2f}",
                 "ms": "{:.2f}"},
    )


def depthwise_table(result: ExperimentResult) -> str:
    rows = [
        {
            "config": f"C={g['channels']}, {g['size']}x{g['size']}",
            "madds_ratio": g["madds_ratio"],
            "time_ratio": g["time_ratio"],
            "std": g["gflops"]["standard 3x3"],
            "dw": g["gflops"]["depthwise 3x3"],
            "pw": g["gflops"]["pointwise 1x1"],
            "sep": g["gflops"]["depthwise separable"],
            "flag": ("UNSTABLE: " + ", ".join(g["unstable"])) if g.get("unstable") else "",
        }
        for g in result.extra["grid"]
    ]
    return format_table(
        rows,
        [
            ("config", "layer"), ("madds_ratio", "MAdds ratio (1/N+1/9)"), ("time_ratio", "time ratio"),
            ("std", "standard GFLOP/s"), ("sep", "separable GFLOP/s"), ("dw", "depthwise GFLOP/s"),
            ("pw", "pointwise GFLOP/s"), ("flag", "flag"),
        ],
        formats={"madds_ratio": "{:.3f}", "time_ratio": "{:.3f}", "std": "{:.1f}", "sep": "{:.1f}", "dw": "{:.1f}",
                 "pw": "{:.1f}"},
    )


def report(result: ExperimentResult) -> str:
    body = depthwise_table(result) if result.name == "depthwise" else result_table(result)
    lines = [f"== {result.title}", conditions_line(result), *load_and_stability_lines(result), "", body, "",
             result.verdict_line()]
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)


def plot(result: ExperimentResult, path: str) -> None:
    plt = pyplot()
    if result.name == "depthwise":
        _plot_depthwise(plt, result, path)
        return
    fig, ax = plt.subplots(figsize=(10, 6), dpi=110)
    xs = list(range(len(result.variants)))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    flagged = False
    for i, column in enumerate(result.columns):
        colour = colours[i % len(colours)]
        here = [result.normalised(v, column) for v in result.variants]
        ax.plot(xs, here, "-o", color=colour, label=f"{column}: this machine")
        shaky = [i for i, v in enumerate(result.variants) if result.cell(v, column).unstable]
        if shaky:  # hollow white centres: measured, but unstable
            ax.plot(shaky, [here[i] for i in shaky], "o", color="white", ms=3.5,
                    label=None if flagged else "hollow: UNSTABLE measurement")
            flagged = True
        theirs = [result.normalised(v, column, "paper") for v in result.variants]
        if all(t is not None for t in theirs):
            ax.plot(xs, theirs, "--s", color=colour, alpha=0.6, label=f"{column}: paper ({result.setting.upper()})")
    ax.set_xticks(xs)
    ax.set_xticklabels(result.variants, rotation=15)
    ax.axhline(1.0, color="grey", lw=0.6)
    ax.set_ylabel("throughput relative to the first variant (higher is faster)")
    ax.set_xlabel("variant (equal multiply-adds within a column)")
    ax.set_title(f"{result.title}\n{conditions_line(result)}\n{result.verdict_line()}", fontsize=8)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_depthwise(plt, result: ExperimentResult, path: str) -> None:
    grid = result.extra["grid"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 6), dpi=110)
    sizes = sorted({g["size"] for g in grid}, reverse=True)
    for marker, size in zip("osD^v", sizes, strict=False):
        pts = sorted((g for g in grid if g["size"] == size), key=lambda g: g["channels"])
        left.plot([g["channels"] for g in pts], [g["time_ratio"] / g["madds_ratio"] for g in pts], "-" + marker,
                  label=f"{size}x{size} maps")
    left.axhline(1.0, color="grey", lw=0.8, ls="--", label="time falls as far as MAdds (1/N + 1/9)")
    left.set_xscale("log", base=2)
    left.set_xticks(sorted({g["channels"] for g in grid}))
    left.set_xticklabels([str(c) for c in sorted({g["channels"] for g in grid})])
    left.set_xlabel("channels N (input = output)")
    left.set_ylabel("(separable / standard time) / (separable / standard MAdds)")
    left.set_title("how many times slower than its MAdds promise (1 = as promised)", fontsize=9)
    left.grid(True, alpha=0.3)
    left.legend(fontsize=8)
    labels = [f"C={g['channels']}\n{g['size']}²" for g in grid]
    xs = range(len(grid))
    width = 0.27
    for k, key in enumerate(("standard 3x3", "depthwise 3x3", "pointwise 1x1")):
        right.bar([x + (k - 1) * width for x in xs], [g["gflops"][key] for g in grid], width, label=key)
    right.set_xticks(list(xs))
    right.set_xticklabels(labels, fontsize=7)
    right.set_ylabel("achieved GFLOP/s (2 x MAdds / time)")
    right.set_title("arithmetic throughput of each convolution", fontsize=9)
    right.grid(True, axis="y", alpha=0.3)
    right.legend(fontsize=8)
    fig.suptitle(f"{result.title}\n{conditions_line(result)}\n{result.verdict_line()}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
