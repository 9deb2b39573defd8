"""Benchmark: every family trained from scratch on the built-in digits with the small-data recipe.

    python benchmarks/train_digits.py [--epochs 15] [--resolution 32] [--threads N]

Trains mobilenet_v1, mobilenet_v2, mobilenet_v3_large, mobilenet_v3_small, shufflenet_v1
(g = 3) and shufflenet_v2 (x1.0) at their default widths, one after another, prints a table
(model, epochs, wall time, images/s, final and best val top-1) and writes
``benchmarks/results/train-digits-<cpu>.json``. Target: >= 97% val top-1 for every family.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from _results import write_results

import lightnets
from lightnets.analysis import machine_info
from lightnets.report import format_table
from lightnets.train import fit

MODELS = ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "shufflenet_v1_g3_x1_0",
          "shufflenet_v2_x1_0"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            torch.manual_seed(0)
            model = lightnets.create_model(name, num_classes=10)
            start = time.perf_counter()
            result = fit(model, "digits", "small-data", run_dir=f"{tmp}/{name}", epochs=args.epochs,
                         resolution=args.resolution, show_progress=False, log=lambda m: None)
            wall = time.perf_counter() - start
            seconds = sum(r["seconds"] for r in result.history)
            ips = sum(r["images_per_s"] * r["seconds"] for r in result.history) / seconds
            rows.append({
                "model": name, "epochs": result.epochs, "wall_s": wall, "images_per_s": ips,
                "final_top1": result.final["val_top1"], "best_top1": result.best_top1,
            })
            print(f"{name}: final val top-1 {100 * result.final['val_top1']:.2f}% in {wall:.0f} s", flush=True)
    machine = machine_info()
    total = sum(r["wall_s"] for r in rows)
    print(f"\ndigits ({args.resolution}x{args.resolution}, 1,438 train / 359 val), small-data recipe, "
          f"{torch.get_num_threads()} threads, {machine['cpu']}, torch {machine['torch']}; total {total / 60:.1f} min")
    print(format_table(rows,
                       [("model", "model"), ("epochs", "epochs"), ("wall_s", "wall s"), ("images_per_s", "train img/s"),
                              ("final_top1", "final top-1"), ("best_top1", "best top-1")],
                       formats={"wall_s": "{:.0f}", "images_per_s": "{:.0f}", "final_top1": lambda v: f"{100 * v:.2f}%",
                                "best_top1": lambda v: f"{100 * v:.2f}%"}))
    passed = all(r["final_top1"] >= 0.97 for r in rows)
    print(f"every family >= 97% final val top-1: {'yes' if passed else 'NO'}")
    out = write_results("train-digits", {"settings": vars(args), "total_s": total, "models": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
