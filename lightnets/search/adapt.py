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
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.multiprocessing as mp

from ..formats import atomic_write, fault_point, load_checkpoint, save_checkpoint
from ..models import (
    ChannelGroup,
    ConvNet,
    NetSpec,
    build,
    channel_groups,
    create_model,
    get_entry,
    inherit_weights,
    resize_group,
)
from ..report import pyplot
from ..train import DataSplit, TrainingDiverged, evaluate, fit
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

    NetAdapt's "choose the number of filters": the fewest channels removed that meet the
    constraint, each width's latency predicted from measured entries (a width the table lacks
    is measured, never interpolated). Widths are bisected, which assumes latency does not rise
    as a group narrows (true of every table measured here but noise); the width returned has
    its own saving checked. None when even ``step`` channels left do not save enough.
    """
    if delta_ms <= 0:
        raise ValueError(f"delta_ms must be > 0, got {delta_ms!r}")
    kind = proposal_kind(group)
    if kind is None:
        raise ValueError(f"channel group {group.name} is not an expansion or a shared bottleneck NetAdapt shrinks")
    before = table.predict(spec, input_size).total_ms
    multiple = max(step, group.multiple)
    widths = list(range(multiple, group.width, multiple))  # narrower than now, ascending
    predicted: dict[int, tuple[NetSpec, float]] = {}

    def saves(k: int) -> bool:
        width = widths[k]
        if width not in predicted:
            child = resize_group(spec, group.name, width)
            predicted[width] = (child, table.predict(child, input_size).total_ms)
        return before - predicted[width][1] >= delta_ms

    if not widths or not saves(0):
        return None
    low, high = 0, len(widths) - 1  # invariant: widths[low] saves delta
    while low < high:
        middle = (low + high + 1) // 2
        if saves(middle):
            low = middle
        else:
            high = middle - 1
    child, latency = predicted[widths[low]]
    return Proposal(kind, group.name, group.width, widths[low], child, latency)


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


def measure_whole(table: LatencyTable, network: ConvNet, shape: tuple[int, ...], rounds: int = 3) -> float:
    """A whole network's latency as :func:`~lightnets.search.validate` measures it: the median of
    ``rounds`` per-round medians (ONNX Runtime: fresh sessions), with the table's settings, at the
    table's reference speed (as its predictions are)."""
    return table.measure_networks([network], [shape], rounds)[0]["measured_ms"]


def selection_score(row: dict, select: str, top1: float, latency_ms: float) -> tuple[float, float]:
    """What a step maximises: dAcc / |dLatency| (``ratio``, MobileNetV3 section 4.2) or accuracy,
    then the latency saved: proposals that all keep the accuracy (dAcc = 0, common on an easy
    task) are told apart by how far they go, not by the order of the groups."""
    saved = latency_ms - row["predicted_ms"]
    if select == "accuracy":
        return row["top1"], saved
    return (row["top1"] - top1) / saved, saved


def _finetune(model: ConvNet, data: tuple[DataSplit, DataSplit], steps: int, seed: int, threads: int | None = None):
    """``steps`` optimizer steps of the ``finetune`` recipe, in memory (nothing written)."""
    return fit(
        model, data, "finetune", run_dir=None, max_steps=steps, seed=seed, threads=threads, show_progress=False,
        log=lambda _m: None,
    )


_WORKER_DATA: tuple[DataSplit, DataSplit] | None = None


def _worker_start(data: tuple[DataSplit, DataSplit]) -> None:
    global _WORKER_DATA
    _WORKER_DATA = data  # sent once per worker, not once per proposal


def _proposal_finetune(model: ConvNet, data: tuple[DataSplit, DataSplit], steps: int, seed: int,
                       threads: int | None = None) -> tuple[ConvNet, float]:
    """A proposal fine-tuned and its top-1; one whose fine-tune diverges keeps its inherited
    weights and scores 0, so that it is never selected (it would have scored chance before the
    divergence stopped training)."""
    try:
        result = _finetune(model, data, steps, seed, threads=threads)
    except TrainingDiverged:
        return model, 0.0
    return result.model, result.final["val_top1"]


def _worker_finetune(job: tuple[str, dict, int, int]) -> tuple[dict, float]:
    spec, state, steps, seed = job
    model = build(spec)
    model.load_state_dict(state)
    tuned, top1 = _proposal_finetune(model, _WORKER_DATA, steps, seed, threads=1)
    return tuned.state_dict(), top1


def free_cores() -> int:
    """Cores this process may use that the machine's other work does not (1-minute load average)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores - round(os.getloadavg()[0]))


def _fine_tuned(
    children: list[ConvNet], data: tuple[DataSplit, DataSplit], steps: int, seed: int, pool
) -> Iterator[tuple[ConvNet, float]]:
    """Each child fine-tuned, in order: here, or in ``pool``'s worker processes (one thread each)."""
    if pool is None:
        for child in children:
            yield _proposal_finetune(child, data, steps, seed)
        return
    jobs = [(str(child.spec), child.state_dict(), steps, seed) for child in children]
    for child, (state, accuracy) in zip(children, pool.imap(_worker_finetune, jobs), strict=True):
        child.load_state_dict(state)
        yield child, accuracy


def _atomic_json(path: str, payload: object) -> None:
    atomic_write(path, json.dumps(payload, indent=1))


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
    calibrate: bool = True,
    workers: int = 1,
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

    ``calibrate`` first fits the table's overhead to the seed measured whole
    (:meth:`LatencyTable.calibrate`), so that predictions, and ``target_ratio``, are in terms
    of the seed's measured latency. ``measure`` times each step's kept network whole (the
    history's ``measured_ms``) and the result. ``workers`` > 1 fine-tunes a step's proposals
    in that many processes of one thread each (:func:`free_cores` says how many are idle);
    measurements run while they wait.
    """
    if (target_ms is None) == (target_ratio is None):
        raise ValueError("give exactly one of target_ms and target_ratio")
    if select not in SELECT:
        raise ValueError(f"select must be one of {', '.join(SELECT)}, got {select!r}")
    for name, value in (("steps", steps), ("input_size", input_size), ("workers", workers)):
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
        "calibrate": calibrate,
    }
    seed_spec = model.spec
    shape = (table.batch, seed_spec.settings.in_chans, input_size, input_size)

    def measured(network: ConvNet) -> float | None:
        return measure_whole(table, network, shape) if measure else None

    seed_top1 = top1 = evaluate(model, val_split).top1
    current, history = model, []
    state = os.path.join(run_dir, STATE_FILE) if run_dir else None
    saved = load_checkpoint(state) if state and os.path.exists(state) else None
    if saved is not None:
        if saved.config.get("netadapt") != settings:
            raise ValueError(
                f"{state} was started with other settings ({saved.config.get('netadapt')}); "
                f"use another run_dir or the same settings ({settings})"
            )
        # the first run's calibration, so that every step is predicted alike
        table.overhead_ms, table.scale = saved.progress["overhead_ms"], saved.progress["scale"]
        current = build(saved.config["model"]["spec"])
        current.load_state_dict(saved.model)
        history, top1 = saved.progress["history"], saved.progress["top1"]
    elif calibrate:
        table.calibrate([seed_spec], input_size)
    seed_ms = table.predict(seed_spec, input_size).total_ms
    latency = table.predict(current.spec, input_size).total_ms
    target = target_ms if target_ms is not None else target_ratio * seed_ms
    delta = delta_ratio * seed_ms
    if saved is not None:
        log(f"netadapt: resumed {state} after step {len(history)} ({latency:.3f} ms predicted, top-1 {top1:.4f})")
    log(
        f"netadapt: seed {seed_ms:.3f} ms predicted at {input_size}x{input_size}, target {target:.3f} ms, "
        f"delta {delta:.3f} ms, top-1 {top1:.4f}"
    )
    pool = mp.get_context("spawn").Pool(workers, _worker_start, (data,)) if workers > 1 else None
    try:
        while latency > target and (max_iterations is None or len(history) < max_iterations):
            candidates = proposals(table, current.spec, delta, input_size, kinds)
            if not candidates:
                log(f"netadapt: no proposal saves {delta:.3f} ms; stopping at {latency:.3f} ms")
                break
            children = [inherit_weights(current, p.spec) for p in candidates]
            rows, trained = [], []
            tuned = _fine_tuned(children, data, steps, seed, pool)
            for i, (proposal, (child, accuracy)) in enumerate(zip(candidates, tuned, strict=True), start=1):
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
                trained.append(child)
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
                    "measured_ms": measured(current),
                    "top1": top1,
                    "chosen": rows[best],
                    "proposals": rows,
                    "spec": str(current.spec),
                }
            )
            shown = history[-1]["measured_ms"]
            log(
                f"netadapt: step {len(history)} keeps {rows[best]['group']} {rows[best]['width_before']}->"
                f"{rows[best]['width']}: {latency:.3f} ms predicted"
                + (f", {shown:.3f} ms measured" if shown is not None else "")
                + f", top-1 {top1:.4f}"
            )
            if state:
                _write_step(run_dir, state, current, settings, train_split, history, top1, table, seed_ms, seed_spec)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    if final_steps:
        result = _finetune(current, data, final_steps, seed)
        current, top1 = result.model, result.final["val_top1"]
        log(f"netadapt: final fine-tune of {final_steps} steps: top-1 {top1:.4f}")
    outcome = NetAdaptResult(current, current.spec, top1, seed_top1, seed_ms, latency, history)
    if measure:
        outcome.measured_seed_ms = measured(build(seed_spec))
        outcome.measured_ms = measured(current)
        log(
            f"netadapt: measured {outcome.measured_seed_ms:.3f} ms -> {outcome.measured_ms:.3f} ms "
            f"({outcome.measured_ms / outcome.measured_seed_ms:.1%})"
        )
    return outcome


def _write_step(run_dir, state, current, settings, train_split, history, top1, table, seed_ms, seed_spec) -> None:
    """One completed step, atomically: the network and history (resume), and history.json (reading)."""
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
        progress={"history": history, "top1": top1, "overhead_ms": table.overhead_ms, "scale": table.scale},
    )
    _atomic_json(
        os.path.join(run_dir, "history.json"),
        {"settings": settings, "seed_ms": seed_ms, "seed_spec": str(seed_spec), "history": history},
    )
    fault_point("netadapt-step")


def width_baseline(
    name: str,
    width_mults: list[float],
    data: tuple[DataSplit, DataSplit],
    table: LatencyTable,
    *,
    input_size: int,
    steps: int,
    recipe: str = "small-data",
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """NetAdapt's comparison (Yang et al. 2018, section 4): the family's own width multipliers,
    each trained from scratch for ``steps`` optimizer steps and measured whole as NetAdapt's
    networks are (``name`` may be a named variant: its family is trained at each width, with the
    variant's other options). Rows: ``width_mult``, ``measured_ms``, ``top1``."""
    train_split = data[0]
    entry = get_entry(name)  # a named variant's family, keeping what the name fixes besides its width
    fixed = {k: v for k, v in entry.fixed.items() if k != "width_mult"}
    rows = []
    for width in width_mults:
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        model = create_model(entry.family, **fixed, width_mult=width, num_classes=len(train_split.classes))
        torch.random.set_rng_state(generator_state)
        result = fit(model, data, recipe, run_dir=None, max_steps=steps, seed=seed, show_progress=False,
                     log=lambda _m: None)
        shape = (table.batch, model.spec.settings.in_chans, input_size, input_size)
        ms = measure_whole(table, result.model, shape)
        rows.append({"width_mult": width, "measured_ms": ms, "top1": result.final["val_top1"]})
        log(f"width baseline: {name} x{width} trained {steps} steps: {ms:.3f} ms, "
            f"top-1 {result.final['val_top1']:.4f}")
    return rows


def plot_netadapt(result: NetAdaptResult, path: str, title: str, baseline: list[dict] = ()) -> None:
    """Top-1 against measured latency: the seed, every NetAdapt step, the result after the final
    fine-tune, and the width-multiplier ``baseline`` rows on the same axes (needs matplotlib)."""
    steps = [r for r in result.history if r.get("measured_ms") is not None]
    if result.measured_seed_ms is None or len(steps) < len(result.history):
        raise ValueError("plot_netadapt needs measured latencies: run netadapt with measure=True")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    xs = [result.measured_seed_ms] + [r["measured_ms"] for r in steps]
    ys = [result.seed_top1] + [r["top1"] for r in steps]
    ax.plot(xs, [100 * y for y in ys], "o-", color="C0", ms=4, label="NetAdapt steps (short fine-tune)")
    ax.annotate("seed", (xs[0], 100 * ys[0]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.plot([result.measured_ms], [100 * result.top1], "*", color="C0", ms=12, label="NetAdapt result")
    if baseline:
        ordered = sorted(baseline, key=lambda r: r["measured_ms"])
        ax.plot([r["measured_ms"] for r in ordered], [100 * r["top1"] for r in ordered], "s--", color="C1",
                label="width multiplier, same budget")
        for r in ordered:
            ax.annotate(f"x{r['width_mult']:g}", (r["measured_ms"], 100 * r["top1"]), textcoords="offset points",
                        xytext=(4, -10), fontsize=8, color="C1")
    ax.set(xlabel="measured latency (ms)", ylabel="top-1 (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
