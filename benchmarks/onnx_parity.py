"""Check: ONNX Runtime output parity with PyTorch for every registered model.

    python benchmarks/onnx_parity.py [--models a,b]

Exports each registered model (random weights, randomised BN statistics, BN folded, dynamic
batch and size) and compares ONNX Runtime with PyTorch at batch 1 and 4, at 224 and 160
pixels; prints the largest absolute difference per model (target: <= 1e-4) and writes
``benchmarks/results/onnx-parity-<cpu>.json``. About 10 s per model (the exporter).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from _results import write_results

import lightnets
from lightnets.export.onnx import OnnxModel, export_onnx
from lightnets.report import format_table
from lightnets.testing import randomize_for_parity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(lightnets.list_models(task="classification")))
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            torch.manual_seed(0)
            model = randomize_for_parity(lightnets.create_model(name))
            start = time.perf_counter()
            session = OnnxModel(export_onnx(model, f"{tmp}/{name}.onnx", resolution=64))
            diffs = {}
            for batch, size in ((1, 224), (4, 224), (1, 160), (4, 160)):
                x = torch.randn(batch, 3, size, size)
                with torch.no_grad():
                    diffs[f"b{batch}@{size}"] = (session(x) - model(x)).abs().max().item()
            rows.append({"model": name, **diffs, "max": max(diffs.values()), "seconds": time.perf_counter() - start})
            print(f"{name}: max |ORT - PyTorch| = {rows[-1]['max']:.2e}", flush=True)
    columns = [("model", "model")] + [(k, k) for k in ("b1@224", "b4@224", "b1@160", "b4@160", "max")]
    print(format_table(rows, columns, formats={k: "{:.1e}" for k, _ in columns[1:]}))
    print(f"every model within 1e-4: {'yes' if all(r['max'] <= 1e-4 for r in rows) else 'NO'} ({len(rows)} models)")
    print(f"wrote {write_results('onnx-parity', {'models': rows})}")


if __name__ == "__main__":
    main()
