"""NetAdapt's proposals: which channel groups to shrink, and by how much, to save a latency step.

MobileNetV3 section 4.2 (NetAdapt, Yang et al. 2018, with MobileNetV3's changes): at each
step, every proposal must cut the measured latency by at least ``delta`` (0.01 |L| of the
seed's latency L); MobileNetV3 uses two kinds of proposal, "reduce the size of any expansion
layer" and "reduce bottleneck in all blocks that share the same bottleneck size - to
maintain residual connections". Here an expansion is a ``blocks.i.j.mid`` channel group and a
shared bottleneck is a residual chain group (one width written by several blocks), both from
:func:`~lightnets.models.channel_groups`; latencies come from a :class:`LatencyTable`, whose
missing entries are measured, never guessed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

from ..cost import measure_latency
from ..formats import fault_point, load_checkpoint, save_checkpoint
from ..models import ChannelGroup, ConvNet, NetSpec, build, channel_groups, inherit_weights, resize_group
from ..train import DataSplit, evaluate, fit
from .lut import LatencyTable

KINDS = ("expansion", "bottleneck")


def proposal_kind(group: ChannelGroup) -> str | None:
    """``expansion``, ``bottleneck`` or None (a group NetAdapt's MobileNetV3 proposals do not shrink)."""
    if not group.prunable:
        return None
    if group.name.endswith(".mid"):
        return "expansion"
    if sum(field == "out_chs" for _, field in group.fields) > 1:
        return "bottleneck"  # a residual chain: every block on it writes the same width
    return None


@dataclass(frozen=True)
class Proposal:
    """One candidate of a NetAdapt step: ``group`` shrunk to ``width`` channels."""

    kind: str
    group: str
    width_before: int
    width: int
    spec: NetSpec
    predicted_ms: float


def shrink_to_save(
    table: LatencyTable,
    spec: NetSpec,
    group: ChannelGroup,
    delta_ms: float,
    input_size: int = 224,
    step: int = 8,
) -> Proposal | None:
    """The widest shrink of ``group`` (in multiples of ``step``) that saves at least ``delta_ms``.

    Widths are tried from the current one downwards, each predicted from measured entries (a
    width the table lacks is measured); None when even ``step`` channels do not save enough.
    NetAdapt's "choose the number of filters": the fewest removed that meet the constraint.
    """
    if delta_ms <= 0:
        raise ValueError(f"delta_ms must be > 0, got {delta_ms!r}")
    kind = proposal_kind(group)
    if kind is None:
        raise ValueError(f"channel group {group.name} is not an expansion or a shared bottleneck NetAdapt shrinks")
    before = table.predict(spec, input_size).total_ms
    multiple = max(step, group.multiple)
    width = (group.width - 1) // multiple * multiple
    while width >= multiple:
        child = resize_group(spec, group.name, width)
        predicted = table.predict(child, input_size).total_ms
        if before - predicted >= delta_ms:
            return Proposal(kind, group.name, group.width, width, child, predicted)
        width -= multiple
    return None


def proposals(
    table: LatencyTable,
    spec: NetSpec,
    delta_ms: float,
    input_size: int = 224,
    kinds: tuple[str, ...] = KINDS,
    step: int = 8,
) -> list[Proposal]:
    """Every proposal of one NetAdapt step: for each expansion and shared bottleneck, its widest
    shrink that saves ``delta_ms`` (groups that cannot save it are left out)."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown proposal kinds {sorted(unknown)}; allowed: {', '.join(KINDS)}")
    found = []
    for group in channel_groups(spec):
        if proposal_kind(group) in kinds:
            proposal = shrink_to_save(table, spec, group, delta_ms, input_size, step)
            if proposal is not None:
                found.append(proposal)
    return found


SELECT = ("ratio", "accuracy")
STATE_FILE = "netadapt.safetensors"


@dataclass
class NetAdaptResult:
    """The adapted network and how it got there (``history``: one row per step)."""

    model: ConvNet
    spec: NetSpec
    top1: float
    seed_top1: float
    seed_ms: float  # predicted by the table, as every step's latency
    predicted_ms: float
    history: list[dict]
    measured_seed_ms: float | None = None  # measured whole, at the end (``measure=True``)
    measured_ms: float | None = None


def selection_score(row: dict, select: str, top1: float, latency_ms: float) -> float:
    """What a step maximises: dAcc / |dLatency| (``ratio``, MobileNetV3 section 4.2) or accuracy."""
    if select == "accuracy":
        return row["top1"]
    return (row["top1"] - top1) / (latency_ms - row["predicted_ms"])


def _finetune(model: ConvNet, data: tuple[DataSplit, DataSplit], steps: int, seed: int):
    """``steps`` optimizer steps of the ``finetune`` recipe, in memory (nothing written)."""
    return fit(
        model, data, "finetune", run_dir=None, max_steps=steps, seed=seed, show_progress=False, log=lambda _m: None
    )


def _atomic_json(path: str, payload: object) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf8") as fh:
        json.dump(payload, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def netadapt(
    model: ConvNet,
    data: tuple[DataSplit, DataSplit],
    table: LatencyTable,
    *,
    input_size: int,
    target_ms: float | None = None,
    target_ratio: float | None = None,
    steps: int = 1000,
    final_steps: int = 0,
    select: str = "ratio",
    kinds: tuple[str, ...] = KINDS,
    delta_ratio: float = 0.01,
    max_iterations: int | None = None,
    run_dir: str | None = None,
    seed: int = 0,
    measure: bool = True,
    log: Callable[[str], None] = print,
) -> NetAdaptResult:
    """Shrink a trained ``model`` until its latency (by ``table``) reaches the target.

    MobileNetV3 section 4.2 / NetAdapt: each step makes every :func:`proposals` (each saving at
    least ``delta_ratio`` of the seed's latency), fills each from the current weights
    (:func:`~lightnets.models.inherit_weights`, filters of largest L2 norm), fine-tunes each
    ``steps`` optimizer steps in memory (the ``finetune`` recipe) and keeps the one that
    maximises dAcc / |dLatency| (``select="ratio"``, MobileNetV3's rule) or accuracy
    (``"accuracy"``, NetAdapt's). It stops at ``target_ms`` (or ``target_ratio`` of the seed's
    latency), after ``max_iterations`` steps, or when no proposal saves delta; then fine-tunes
    ``final_steps`` more. With ``run_dir`` every step is written atomically
    (``netadapt.safetensors``: the network, its spec and the history; ``history.json``), and a
    call with the same settings continues from the last completed step.
    """
    if (target_ms is None) == (target_ratio is None):
        raise ValueError("give exactly one of target_ms and target_ratio")
    if select not in SELECT:
        raise ValueError(f"select must be one of {', '.join(SELECT)}, got {select!r}")
    for name, value in (("steps", steps), ("input_size", input_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    train_split, val_split = data
    settings = {
        "input_size": input_size,
        "target_ms": target_ms,
        "target_ratio": target_ratio,
        "steps": steps,
        "select": select,
        "kinds": list(kinds),
        "delta_ratio": delta_ratio,
        "seed": seed,
        "backend": table.backend,
        "threads": table.threads,
    }
    seed_spec = model.spec
    seed_ms = table.predict(seed_spec, input_size).total_ms
    target = target_ms if target_ms is not None else target_ratio * seed_ms
    delta = delta_ratio * seed_ms
    current, latency, history = model, seed_ms, []
    seed_top1 = top1 = evaluate(model, val_split).top1
    state = os.path.join(run_dir, STATE_FILE) if run_dir else None
    if state and os.path.exists(state):
        saved = load_checkpoint(state)
        if saved.config.get("netadapt") != settings:
            raise ValueError(
                f"{state} was started with other settings ({saved.config.get('netadapt')}); "
                f"use another run_dir or the same settings ({settings})"
            )
        current = build(saved.config["model"]["spec"])
        current.load_state_dict(saved.model)
        history, latency, top1 = saved.progress["history"], saved.progress["latency_ms"], saved.progress["top1"]
        log(f"netadapt: resumed {state} after step {len(history)} ({latency:.3f} ms predicted, top-1 {top1:.4f})")
    log(
        f"netadapt: seed {seed_ms:.3f} ms predicted at {input_size}x{input_size}, target {target:.3f} ms, "
        f"delta {delta:.3f} ms, top-1 {top1:.4f}"
    )
    while latency > target and (max_iterations is None or len(history) < max_iterations):
        candidates = proposals(table, current.spec, delta, input_size, kinds)
        if not candidates:
            log(f"netadapt: no proposal saves {delta:.3f} ms; stopping at {latency:.3f} ms")
            break
        rows, trained = [], []
        for i, proposal in enumerate(candidates, start=1):
            result = _finetune(inherit_weights(current, proposal.spec), data, steps, seed)
            accuracy = result.final["val_top1"]
            rows.append(
                {
                    "kind": proposal.kind,
                    "group": proposal.group,
                    "width_before": proposal.width_before,
                    "width": proposal.width,
                    "predicted_ms": proposal.predicted_ms,
                    "top1": accuracy,
                }
            )
            trained.append(result.model)
            log(
                f"  step {len(history) + 1}, proposal {i}/{len(candidates)}: {proposal.group} "
                f"{proposal.width_before}->{proposal.width}, {proposal.predicted_ms:.3f} ms, top-1 {accuracy:.4f}"
            )

        best = max(range(len(rows)), key=lambda k: selection_score(rows[k], select, top1, latency))
        current, latency, top1 = trained[best], rows[best]["predicted_ms"], rows[best]["top1"]
        history.append(
            {
                "step": len(history) + 1,
                "latency_ms": latency,
                "top1": top1,
                "chosen": rows[best],
                "proposals": rows,
                "spec": str(current.spec),
            }
        )
        log(
            f"netadapt: step {len(history)} keeps {rows[best]['group']} {rows[best]['width_before']}->"
            f"{rows[best]['width']}: {latency:.3f} ms predicted, top-1 {top1:.4f}"
        )
        if state:
            os.makedirs(run_dir, exist_ok=True)
            config = {
                "model": {"spec": str(current.spec)},
                "netadapt": settings,
                "classes": train_split.classes,
                "preprocessing": train_split.preprocessing.to_dict(),
            }
            save_checkpoint(
                state,
                current.state_dict(),
                config=config,
                progress={"history": history, "latency_ms": latency, "top1": top1},
            )
            _atomic_json(
                os.path.join(run_dir, "history.json"),
                {"settings": settings, "seed_ms": seed_ms, "seed_spec": str(seed_spec), "history": history},
            )
            fault_point("netadapt-step")
    if final_steps:
        result = _finetune(current, data, final_steps, seed)
        current, top1 = result.model, result.final["val_top1"]
        log(f"netadapt: final fine-tune of {final_steps} steps: top-1 {top1:.4f}")
    outcome = NetAdaptResult(current, current.spec, top1, seed_top1, seed_ms, latency, history)
    if measure:
        shape = (table.batch, seed_spec.settings.in_chans, input_size, input_size)
        outcome.measured_seed_ms = measure_latency(
            build(seed_spec), shape, threads=table.threads, runs=table.runs, backend=table.backend
        ).median_ms
        outcome.measured_ms = measure_latency(
            current, shape, threads=table.threads, runs=table.runs, backend=table.backend
        ).median_ms
        log(
            f"netadapt: measured {outcome.measured_seed_ms:.3f} ms -> {outcome.measured_ms:.3f} ms "
            f"({outcome.measured_ms / outcome.measured_seed_ms:.1%})"
        )
    return outcome
