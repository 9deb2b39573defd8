"""Benchmark: ONNX Runtime sessions kept open beside the one being timed, spinning or sleeping.

    python benchmarks/onnxruntime_spinning.py [--threads 2] [--repeats 30] [--passes 2]

The latency table's speed reference keeps three ONNX Runtime sessions open over a whole build
and reads them between the modules it times (``lightnets.export.onnxruntime_rounds``). After a
run, a session's worker threads spin for a while, waiting for the next; if they still spin when
the next session starts, they take its cores. This times a MobileNetV2 block (blocks 2-3 of
mobilenet_v2, 24 channels at 56x56) in a fresh session ``--repeats`` times, each right after
the reference's three sessions ran, with those sessions spinning (ONNX Runtime's default),
sleeping (``OnnxModel(spinning=False)``), and with no reference at all; ``--passes`` times over,
so that the machine's drift shows. Prints the block's median / p10 / p90 per setting and
writes ``benchmarks/results/onnxruntime-spinning-<cpu>.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

import torch
from _results import write_results

import lightnets
from lightnets.cost import REFERENCE_SHAPE, percentile, reference_module
from lightnets.export import OnnxModel, export_onnx, timed_runs
from lightnets.report import format_table


def timed_median(session: OnnxModel, x: torch.Tensor, warmup: int, runs: int) -> float:
    return statistics.median(timed_runs(session, x, warmup, runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30, help="fresh block sessions per setting and pass")
    parser.add_argument("--passes", type=int, default=2)
    args = parser.parse_args()
    block = torch.nn.Sequential(*list(lightnets.create_model("mobilenet_v2").blocks.children())[2:4]).eval()
    block_shape = (1, 24, 56, 56)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        block_path = export_onnx(block, os.path.join(tmp, "block.onnx"), resolution=block_shape[-2:],
                                 in_chans=block_shape[1], dynamic_batch=False, dynamic_size=False)
        reference_path = export_onnx(reference_module(), os.path.join(tmp, "reference.onnx"),
                                     resolution=REFERENCE_SHAPE[-2:], in_chans=REFERENCE_SHAPE[1],
                                     dynamic_batch=False, dynamic_size=False)
        x_block, x_reference = torch.randn(block_shape), torch.randn(REFERENCE_SHAPE)
        for p in range(args.passes):
            for setting in ("spinning", "sleeping", "none"):
                references = [] if setting == "none" else [
                    OnnxModel(reference_path, threads=args.threads, spinning=setting == "spinning") for _ in range(3)
                ]
                medians = []
                for _ in range(args.repeats):
                    for reference in references:  # a reading, as the table takes one
                        timed_median(reference, x_reference, 2, 6)
                    session = OnnxModel(block_path, threads=args.threads)  # the module timed: spins, as deployed
                    medians.append(timed_median(session, x_block, 5, 5))
                    del session
                del references
                ordered = sorted(medians)
                rows.append({"pass": p + 1, "reference sessions": setting, "median_ms": statistics.median(medians),
                             "p10_ms": percentile(ordered, 0.1), "p90_ms": percentile(ordered, 0.9)})
                print(f"pass {p + 1}, {setting}: median {rows[-1]['median_ms']:.3f} ms", flush=True)
    print(f"\nMobileNetV2 blocks 2-3 (24 channels, 56x56) in ONNX Runtime, {args.threads} threads, each of "
          f"{args.repeats} fresh sessions timed right after the speed reference's 3 open sessions ran")
    print(format_table(rows, [("pass", "pass"), ("reference sessions", "reference sessions"),
                              ("median_ms", "median ms"), ("p10_ms", "p10"), ("p90_ms", "p90")],
                       formats={"median_ms": "{:.3f}", "p10_ms": "{:.3f}", "p90_ms": "{:.3f}"}))
    out = write_results("onnxruntime-spinning", {"settings": vars(args), "rows": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
