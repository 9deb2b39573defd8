"""Benchmark: prune a digits-trained network by channel groups and keep its weights.

    python benchmarks/prune_digits.py [--model mobilenet_v2] [--epochs 15] [--keep 0.5] [--finetune-steps 200]

Trains the parent from scratch on the built-in digits (small-data recipe, 32x32), then builds
three children from its spec with ``resize_group``: the widest expansion (``blocks.i.j.mid``)
cut to ``--keep`` of its width (one NetAdapt-sized step), every prunable expansion cut so, and
every prunable group (expansions, SE bottlenecks, residual chains, the head conv) cut the same
way (widths rounded to multiples of 8). Each child is
filled three ways: ``inherit_weights`` with NetAdapt's rule (largest filter L2 norm), the same
widths with a seeded random choice of channels, and a fresh initialisation. For each it
reports parameters, MAdds and measured latency at 224x224 (batch 1, median of 30), and val
top-1 before fine-tuning, with only the BatchNorm statistics re-estimated on 20 training
batches, and after ``--finetune-steps`` steps of the ``finetune`` recipe
(in memory, nothing written). Writes ``benchmarks/results/prune-digits-<cpu>.json``.
"""

from __future__ import annotations

import argparse
import random
import time

import torch
from _results import write_results

import lightnets
from lightnets.analysis import machine_info
from lightnets.cost import count_madds, count_params, measure_latency
from lightnets.layers import make_divisible
from lightnets.models import build, channel_groups, inherit_weights, resize_group
from lightnets.report import format_table
from lightnets.train import digits, evaluate, fit


def pruned_spec(spec, keep: float, which: str):
    """``which``: ``one`` (the widest expansion only: one NetAdapt-sized step), ``expansions`` or ``all``."""
    groups = [g for g in channel_groups(spec) if g.prunable]
    if which == "one":
        groups = [max((g for g in groups if g.name.endswith(".mid")), key=lambda g: g.width)]
    elif which == "expansions":
        groups = [g for g in groups if g.name.endswith(".mid")]
    for group in groups:
        spec = resize_group(spec, group.name, make_divisible(group.width * keep, 8))
    return spec


def recalibrated(model, train, batches: int = 20):
    """A copy with BatchNorm statistics re-estimated on training batches (no weight changes).

    Pruning changes what each BN downstream of a cut sees; its running mean and variance are
    the parent's. Re-estimating them (cumulative average over ``batches`` batches) separates
    that mismatch from lost filters.
    """
    import copy

    model = copy.deepcopy(model).train()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    with torch.no_grad():
        for i, batch in enumerate(train.batches(64, shuffle=True, seed=1)):
            if i == batches:
                break
            model(batch.images)
    return model.eval()


def random_rule(seed: int):
    rng = random.Random(seed)

    def keep(group, parent, width):
        return sorted(rng.sample(range(group.width), width))

    return keep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--keep", type=float, default=0.5, help="fraction of each group's channels kept")
    parser.add_argument("--finetune-steps", type=int, default=200)
    parser.add_argument("--runs", type=int, default=30, help="timed runs per network at 224x224")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    quiet = {"show_progress": False, "log": lambda m: None}
    train, val = digits(resolution=args.resolution)

    torch.manual_seed(args.seed)
    parent = lightnets.create_model(args.model, num_classes=10)
    start = time.perf_counter()
    fit(parent, (train, val), "small-data", run_dir=None, epochs=args.epochs, seed=args.seed, **quiet)
    train_s = time.perf_counter() - start
    parent.eval()

    def measure(model) -> dict:
        model.eval()
        return {
            "params": count_params(model),
            "madds_224": count_madds(model, (1, 3, 224, 224)),
            "latency_ms": measure_latency(model, (1, 3, 224, 224), runs=args.runs, warmup=5).median_ms,
            "top1": evaluate(model, val).top1,
        }

    rows = [{"network": args.model, "weights": "trained", **measure(parent), "recal_top1": None,
             "finetuned_top1": None, "spec": str(parent.spec)}]
    print(f"parent {args.model}: val top-1 {100 * rows[0]['top1']:.2f}% after {args.epochs} epochs ({train_s:.0f} s)")
    plans = (("widest expansion", "one"), ("every expansion", "expansions"), ("every group", "all"))
    for label, which in plans:
        spec = pruned_spec(parent.spec, args.keep, which)
        for weights in ("L2 (NetAdapt)", "random channels", "fresh init"):
            torch.manual_seed(args.seed)
            if weights == "fresh init":
                child = build(spec)
            else:
                rule = {} if weights.startswith("L2") else {"keep": random_rule(args.seed)}
                child = inherit_weights(parent, spec, **rule)
            row = {"network": label, "weights": weights, **measure(child), "spec": str(spec)}
            row["recal_top1"] = evaluate(recalibrated(child, train), val).top1
            if args.finetune_steps:
                result = fit(child, (train, val), "finetune", run_dir=None, max_steps=args.finetune_steps,
                             seed=args.seed, **quiet)
                row["finetuned_top1"] = result.final["val_top1"]
            rows.append(row)
            print(f"{label}, {weights}: top-1 {100 * row['top1']:.2f}% before fine-tuning, "
                  f"{100 * row['recal_top1']:.2f}% with BN re-estimated, "
                  f"{100 * row.get('finetuned_top1', float('nan')):.2f}% after", flush=True)

    machine = machine_info()
    print(f"\n{args.model} on digits ({args.resolution}x{args.resolution}; 1,438 train / 359 val), "
          f"children keep {args.keep} of each group's channels; fine-tune: {args.finetune_steps} steps of "
          f"'finetune'; latency at 224x224, batch 1, median of {args.runs}, {torch.get_num_threads()} threads, "
          f"{machine['cpu']}, torch {machine['torch']}")

    def pct(v):
        return "-" if v is None else f"{100 * v:.2f}%"

    print(format_table(
        rows,
        [("network", "network"), ("weights", "weights"), ("params", "params"), ("madds_224", "MAdds@224"),
         ("latency_ms", "ms@224"), ("top1", "top-1 before FT"), ("recal_top1", "BN re-estimated"),
         ("finetuned_top1", "after FT")],
        formats={"params": "{:,}", "madds_224": lambda v: f"{v / 1e6:.1f} M", "latency_ms": "{:.2f}",
                 "top1": pct, "recal_top1": pct, "finetuned_top1": pct},
    ))
    out = write_results("prune-digits", {"settings": vars(args), "parent_train_s": train_s, "rows": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
