"""Benchmark: every family trained on an ImageFolder tree of real digits, through the PNG path.

    python benchmarks/train_imagefolder_digits.py [--epochs 15] [--resolution 32] [--models ...]

Writes the shipped digits (1,797 real 8x8 grayscale scans, scikit-learn's copy of the UCI set)
as PNG files into a temporary ImageFolder tree (``train/<digit>/``, ``val/<digit>/``, the
built-in fixed stratified split: 1,438 / 359), then trains each family from scratch with the
small-data recipe through ``lightnets train --data TREE`` (``fit`` on the path, so the
ImageFolder loader and its augmentation choice are what run), plus one run with ImageNet's
crop-and-flip augmentation forced, for contrast. Prints a table (model, augmentation, wall
time, final and best validation top-1) and writes ``benchmarks/results/train-imagefolder-digits-<cpu>.json``.
Target (the small-ImageFolder issue): every family >= 97% validation top-1 with the default.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
from _results import write_results

import lightnets
from lightnets.report import format_table, machine_info
from lightnets.train import fit
from lightnets.train.data import load_digits, stratified_split

MODELS = [
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "shufflenet_v1_g3_x1_0",
    "shufflenet_v2_x1_0",
]


def write_tree(root: str) -> None:
    from PIL import Image

    images, labels = load_digits()
    train, val = stratified_split(labels)
    for split, indices in (("train", train), ("val", val)):
        for i in indices.tolist():
            folder = os.path.join(root, split, str(int(labels[i])))
            os.makedirs(folder, exist_ok=True)
            pixels = (images[i].float() * (255 / 16)).round().to(torch.uint8).numpy()
            Image.fromarray(pixels, mode="L").save(os.path.join(folder, f"{i:04d}.png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--contrast", default="mobilenet_v1", help="also train this one with --augment imagenet")
    args = parser.parse_args()
    runs = [(name, "auto") for name in args.models.split(",")] + (
        [(args.contrast, "imagenet")] if args.contrast else []
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tree = os.path.join(tmp, "digits-png")
        write_tree(tree)
        for name, augment in runs:
            torch.manual_seed(0)
            model = lightnets.create_model(name, num_classes=10)
            messages: list[str] = []
            start = time.perf_counter()
            result = fit(
                model,
                tree,
                "small-data",
                run_dir=os.path.join(tmp, f"{name}-{augment}"),
                epochs=args.epochs,
                resolution=args.resolution,
                augment=augment,
                show_progress=False,
                log=messages.append,
            )
            wall = time.perf_counter() - start
            augmentation = messages[0].split("augmentation ", 1)[1]
            rows.append(
                {
                    "model": name,
                    "augment": augment,
                    "augmentation": augmentation,
                    "wall_s": wall,
                    "final_top1": result.final["val_top1"],
                    "train_top1": result.final["train_top1"],
                    "best_top1": result.best_top1,
                }
            )
            print(
                f"{name} ({augment}): val top-1 {100 * result.final['val_top1']:.2f}% in {wall:.0f} s [{augmentation}]",
                flush=True,
            )
    machine = machine_info()
    print(
        f"\nImageFolder of the digits as 8x8 grayscale PNGs (1,438 train / 359 val), {args.resolution}x"
        f"{args.resolution}, small-data recipe, {args.epochs} epochs, {torch.get_num_threads()} threads, "
        f"{machine['cpu']}, torch {machine['torch']}"
    )
    print(
        format_table(
            rows,
            [
                ("model", "model"),
                ("augment", "--augment"),
                ("wall_s", "wall s"),
                ("train_top1", "train top-1"),
                ("final_top1", "val top-1"),
                ("best_top1", "best val top-1"),
            ],
            formats={
                "wall_s": "{:.0f}",
                "train_top1": lambda v: f"{100 * v:.2f}%",
                "final_top1": lambda v: f"{100 * v:.2f}%",
                "best_top1": lambda v: f"{100 * v:.2f}%",
            },
        )
    )
    default = [r for r in rows if r["augment"] == "auto"]
    passed = all(r["final_top1"] >= 0.97 for r in default)
    print(f"every family >= 97% final validation top-1 with the default augmentation: {'yes' if passed else 'NO'}")
    out = write_results("train-imagefolder-digits", {"settings": vars(args), "runs": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
