"""Benchmark: int8 post-training quantization accuracy on digits, every family.

    python benchmarks/int8_digits.py [--epochs 15]

Trains each family on digits with the small-data recipe (as benchmarks/train_digits.py),
exports it to ONNX (BN folded) and quantizes it to int8 with ONNX Runtime (QDQ, per-channel
weights, 10 calibration batches of 32 training images), then evaluates fp32 ONNX and int8
ONNX on the 359 val digits. Prints the table (fp32 top-1, int8 top-1, drop, sizes) and
writes ``benchmarks/results/int8-digits-<cpu>.json``. Target: drop <= 1 point per family.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch
from _results import write_results
from torch import nn

import lightnets
from lightnets.analysis import machine_info
from lightnets.export.onnx import OnnxModel, export_onnx
from lightnets.export.quantize import quantize_int8
from lightnets.report import format_table
from lightnets.train import digits, evaluate, fit

MODELS = ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "shufflenet_v1_g3_x1_0",
          "shufflenet_v2_x1_0"]


class _Session(nn.Module):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.session = OnnxModel(path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.session(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    train, val = digits(args.resolution, augment=False)
    calibration = [b.images for b in train.batches(32, shuffle=True, seed=1)][:10]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            torch.manual_seed(0)
            model = lightnets.create_model(name, num_classes=10)
            fit(model, "digits", "small-data", run_dir=f"{tmp}/{name}", epochs=args.epochs, resolution=args.resolution,
                show_progress=False, log=lambda m: None)
            fp32 = export_onnx(model, f"{tmp}/{name}.onnx", resolution=args.resolution)
            int8 = quantize_int8(model, f"{tmp}/{name}-int8.onnx", calibration, resolution=args.resolution)
            top_fp32 = evaluate(_Session(fp32), val).top1
            top_int8 = evaluate(_Session(int8), val).top1
            rows.append({
                "model": name, "torch_top1": evaluate(model, val).top1, "fp32_top1": top_fp32, "int8_top1": top_int8,
                "drop_points": 100 * (top_fp32 - top_int8), "fp32_kb": os.path.getsize(fp32) / 1024,
                "int8_kb": os.path.getsize(int8) / 1024,
            })
            print(f"{name}: fp32 {100 * top_fp32:.2f}%, int8 {100 * top_int8:.2f}%", flush=True)
    machine = machine_info()

    def pct(v: float) -> str:
        return f"{100 * v:.2f}%"

    print(f"\nint8 PTQ on digits ({args.resolution}x{args.resolution}, 359 val images), ONNX Runtime QDQ, "
          f"per-channel weights; {machine['cpu']}, torch {machine['torch']}")
    print(format_table(rows, [("model", "model"), ("torch_top1", "PyTorch"), ("fp32_top1", "ONNX fp32"),
                              ("int8_top1", "ONNX int8"), ("drop_points", "drop (points)"), ("fp32_kb", "fp32 KB"),
                              ("int8_kb", "int8 KB")],
                       formats={"torch_top1": pct, "fp32_top1": pct, "int8_top1": pct, "drop_points": "{:.2f}",
                                "fp32_kb": "{:,.0f}", "int8_kb": "{:,.0f}"}))
    print(f"every family within 1 point: {'yes' if all(r['drop_points'] <= 1.0 for r in rows) else 'NO'}")
    out = write_results("int8-digits", {"settings": vars(args), "models": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
