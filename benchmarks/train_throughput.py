"""Benchmark: training throughput of our mobilenet_v2 against timm's mobilenetv2_100.

    python benchmarks/train_throughput.py [--steps 10] [--batch 32] [--threads N]

Same architecture, optimizer (SGD, momentum 0.9), batch (32 at 224x224), threads and
random data; rounds alternate between the two models so drift on a shared machine hits both.
Prints each model's median images/s over the rounds and the ratio (target: ours >= 0.95x);
writes ``benchmarks/results/train-throughput-<cpu>.json``. Needs timm (the test extra).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _results import write_results
from torch import nn

import lightnets
from lightnets.analysis import machine_info


def images_per_s(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                 steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return steps * x.shape[0] / (time.perf_counter() - start)


def main() -> None:
    import timm

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="steps per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.resolution, args.resolution)
    y = torch.randint(0, 1000, (args.batch,))
    models = {"lightnets mobilenet_v2": lightnets.create_model("mobilenet_v2"),
              "timm mobilenetv2_100": timm.create_model("mobilenetv2_100")}
    optimizers = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for k, m in models.items()}
    for k, m in models.items():  # warm-up
        m.train()
        images_per_s(m, optimizers[k], x, y, 2)
    rates: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(args.rounds):
        for k, m in models.items():
            rates[k].append(images_per_s(m, optimizers[k], x, y, args.steps))
    medians = {k: statistics.median(v) for k, v in rates.items()}
    ratio = medians["lightnets mobilenet_v2"] / medians["timm mobilenetv2_100"]
    machine = machine_info()
    print(f"training throughput, batch {args.batch} at {args.resolution}x{args.resolution}, SGD, "
          f"{torch.get_num_threads()} threads, "
          f"{machine['cpu']}, torch {machine['torch']}; median of {args.rounds} rounds x {args.steps} steps")
    for k, v in medians.items():
        print(f"  {k:24s} {v:6.1f} images/s   (rounds: {', '.join(f'{r:.1f}' for r in rates[k])})")
    print(f"  ratio ours / timm: {ratio:.3f}x (target >= 0.95x)")
    out = write_results("train-throughput",
                        {"settings": vars(args), "rates": rates, "medians": medians, "ratio": ratio})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
