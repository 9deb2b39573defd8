"""Plots (matplotlib, from the ``plot`` extra: ``pip install "lightnets[plot]"``)."""

from __future__ import annotations

from collections.abc import Sequence

from ..catalog import PAPERS
from ..report import pyplot
from .zoo import ZooRow

FAMILY_COLOURS = {
    "mobilenet_v1": "#1f77b4",
    "mobilenet_v2": "#ff7f0e",
    "mobilenet_v3_large": "#2ca02c",
    "mobilenet_v3_small": "#17becf",
    "shufflenet_v1": "#9467bd",
    "shufflenet_v2": "#d62728",
}
#: A dense model takes its backbone's colour and its task's marker.
TASK_MARKERS = {"classification": "o", "detection": "s", "segmentation": "^"}


def _colour(family: str) -> str:
    for prefix in ("ssdlite_", "lraspp_"):
        family = family.removeprefix(prefix)
    return FAMILY_COLOURS.get(family, "black")


def plot_zoo(rows: Sequence[ZooRow], path: str, title: str) -> None:
    """Scatter median latency against MAdds, one labelled point per model, p10-p90 bars.

    Unstable rows (spread over the limit after their retries) are hollow markers, in the
    legend as such. Colour is the backbone's family, the marker the task: circles classifiers,
    squares detectors (SSDLite), triangles segmenters (LR-ASPP).
    """
    if not rows:
        raise ValueError("nothing to plot: no rows")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(13, 9), dpi=110)
    order = list(PAPERS)  # the legend lists families in the catalog's order, whatever the rows' order
    for family in sorted({r.family for r in rows}, key=lambda f: order.index(f) if f in order else len(order)):
        fam = [r for r in rows if r.family == family]
        colour, marker = _colour(family), TASK_MARKERS.get(fam[0].task, "o")
        for unstable in (False, True):
            part = [r for r in fam if r.latency.unstable == unstable]
            if not part:
                continue
            xs = [r.madds / 1e6 for r in part]
            ys = [r.latency.median_ms for r in part]
            lo = [r.latency.median_ms - r.latency.p10_ms for r in part]
            hi = [r.latency.p90_ms - r.latency.median_ms for r in part]
            # hollow: an unstable row's figure includes the machine's interference
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt=marker, color=colour, ms=5, capsize=2, lw=0.8,
                        mfc="none" if unstable else colour, label=f"{family} (UNSTABLE)" if unstable else family)
    ax.set_xscale("log")
    ax.set_yscale("log")
    _label_points(fig, ax, rows)
    ax.set_xlabel("multiply-adds per image (millions, MAdds; log scale)")
    ax.set_ylabel("median latency per image (ms, batch 1, log scale; bars: p10-p90)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    from matplotlib.ticker import ScalarFormatter

    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(ScalarFormatter())
    ax.tick_params(which="minor", labelsize=7)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _label_points(fig, ax, rows: Sequence[ZooRow], fontsize: float = 6.5) -> None:
    """Label every point, placing each label where it overlaps the fewest earlier labels and points.

    A greedy search over eight offsets around each point, in display pixels; good enough to
    keep 50 labels legible without another dependency.
    """
    fig.canvas.draw()  # fixes the axes transform
    to_px = ax.transData.transform
    points = [tuple(to_px((r.madds / 1e6, r.latency.median_ms))) for r in rows]
    char_w, text_h = fontsize * 0.62 * fig.dpi / 72, fontsize * 1.3 * fig.dpi / 72
    candidates = [(6, 3), (6, -text_h - 3), (-6, 3), (-6, -text_h - 3),
                  (0, 8), (0, -text_h - 8), (10, -text_h / 2), (-10, -text_h / 2)]
    placed: list[tuple[float, float, float, float]] = []

    def overlap(a, b) -> float:
        dx = min(a[2], b[2]) - max(a[0], b[0])
        dy = min(a[3], b[3]) - max(a[1], b[1])
        return dx * dy if dx > 0 and dy > 0 else 0.0

    order = sorted(range(len(rows)), key=lambda i: points[i])
    for i in order:
        row, (px, py) = rows[i], points[i]
        width = char_w * len(row.name)
        best, best_cost = None, None
        for dx, dy in candidates:
            x0 = px + dx if dx > 0 else px + dx - width if dx < 0 else px - width / 2
            box = (x0, py + dy, x0 + width, py + dy + text_h)
            cost = sum(overlap(box, other) for other in placed)
            cost += sum(overlap(box, (qx - 4, qy - 4, qx + 4, qy + 4)) for qx, qy in points)
            if best_cost is None or cost < best_cost:
                best, best_cost = box, cost
        placed.append(best)
        x, y = ax.transData.inverted().transform((best[0], best[1]))
        colour = _colour(row.family)
        ax.annotate(
            row.name, (row.madds / 1e6, row.latency.median_ms), xytext=(x, y), textcoords="data",
            fontsize=fontsize, ha="left", va="bottom", color=colour, annotation_clip=False,
            arrowprops={"arrowstyle": "-", "lw": 0.4, "color": colour, "alpha": 0.6, "shrinkA": 0, "shrinkB": 3},
        )
