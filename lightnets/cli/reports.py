"""Text reports for ``lightnets profile`` and ``lightnets zoo``."""

from __future__ import annotations

from collections.abc import Sequence

from ..analysis.zoo import ZooRow, ZooRun
from ..cost import LatencyResult, Profile
from ..report import format_table


def _shape(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def profile_report(prof: Profile, title: str) -> str:
    timed = prof.total.time_ms is not None
    total_time = prof.total.time_ms or 0.0
    rows = [
        {
            "i": r.index,
            "name": r.name,
            "kind": r.kind,
            "shape": f"{_shape(r.input_shape)} -> {_shape(r.output_shape)}",
            "params": r.params,
            "madds": r.madds,
            "ops": r.elementwise_ops,
            "mac": r.mac,
            "intensity": r.intensity,
            "time": r.time_ms,
            "time_share": (r.time_ms / total_time) if timed and total_time else None,
        }
        for r in prof.rows
    ]
    columns = [
        ("i", "#"), ("name", "layer"), ("kind", "kind"), ("shape", "input -> output"), ("params", "params"),
        ("madds", "MAdds"), ("ops", "elem ops"), ("mac", "MAC (elems)"), ("intensity", "FLOP/B"),
    ]
    if timed:
        columns += [("time", "ms"), ("time_share", "% time")]
    parts = [
        title,
        "",
        format_table(
            rows,
            columns,
            formats={
                "params": "{:,}", "madds": "{:,}", "ops": "{:,}", "mac": "{:,}", "intensity": "{:.2f}",
                "time": "{:.3f}", "time_share": _pct,
            },
        ),
    ]
    t = prof.total
    parts += [
        "",
        f"total: {t.params:,} params, {t.madds / 1e6:,.1f} M MAdds, {t.elementwise_ops / 1e6:,.2f} M element-wise ops, "
        f"MAC {t.mac / 1e6:,.2f} M elements = {t.mac_bytes / 2**20:,.1f} MiB ({prof.dtype}), "
        f"{t.flops / t.mac_bytes if t.mac_bytes else 0:.2f} FLOP/byte"
        + (f", {t.time_ms:.2f} ms summed over operators" if timed else ""),
    ]
    if prof.latency:
        parts.append(f"end to end: {prof.latency}")
    parts += ["", "by kind: share of MAdds vs share of MAC" + (" vs share of time" if timed else "")]
    kind_cols = [
        ("kind", "kind"), ("count", "layers"), ("madds", "MAdds"), ("madds_share", "% MAdds"), ("mac", "MAC (elems)"),
        ("mac_share", "% MAC"),
    ]
    if timed:
        kind_cols += [("time_ms", "ms"), ("time_share", "% time")]
    parts.append(
        format_table(
            prof.by_kind(),
            kind_cols,
            formats={
                "madds": "{:,}", "mac": "{:,}", "madds_share": _pct, "mac_share": _pct, "time_ms": "{:.3f}",
                "time_share": _pct,
            },
        )
    )
    parts += [f"note: {n}" for n in prof.notes]
    return "\n".join(parts)


def _flag(latency: LatencyResult) -> str:
    """UNSTABLE and why, short: "busy" (others used the CPU while it was timed) or "spread"."""
    if not latency.unstable:
        return ""
    return "UNSTABLE: busy" if latency.flag_reason.startswith("other processes") else "UNSTABLE: spread"


def zoo_report(run: ZooRun, title: str) -> str:
    """The zoo's header (rounds, load), its stable rows by latency, then its unstable rows apart."""

    def table(rows: Sequence[ZooRow]) -> str:
        return format_table(
            [
                {
                    "name": r.name,
                    "task": r.task,
                    "params": r.params,
                    "madds": r.madds / 1e6,
                    "mac": r.mac / 1e6,
                    "median": r.latency.median_ms,
                    "range": f"{r.latency.p10_ms:.2f}-{r.latency.p90_ms:.2f}",
                    "spread": r.latency.stability_spread,
                    "drift": r.latency.drift,
                    "madds_per_ms": r.madds_per_ms,
                    "flag": _flag(r.latency),
                }
                for r in rows
            ],
            [
                ("name", "model"), ("task", "task"), ("params", "params"), ("madds", "MAdds (M)"),
                ("mac", "MAC (M elems)"),
                ("median", "median ms"), ("range", "p10-p90 ms"), ("spread", "spread"), ("drift", "drift"),
                ("madds_per_ms", "MAdds/ms (M)"), ("flag", "flag"),
            ],
            formats={"params": "{:,}", "madds": "{:.1f}", "mac": "{:.1f}", "median": "{:.2f}",
                     "spread": _pct, "drift": _pct, "madds_per_ms": "{:.1f}"},
        )

    stable = [r for r in run.rows if not r.latency.unstable]
    parts = [title, *run.header(), ""]
    if stable:
        parts.append(table(stable))
    if run.unstable:
        parts += ["", f"UNSTABLE rows, after {run.retries + 1} attempts: not ranked with the rows above, their "
                      "figures include the machine's interference", "", table(run.unstable)]
    parts += ["", run.summary()]
    return "\n".join(parts)
