"""Training curves and the confusion matrix as PNGs (matplotlib: ``pip install "lightnets[plot]"``)."""

from __future__ import annotations

import json

from ..report import pyplot
from .metrics import EvalResult


def read_metrics(path: str) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def plot_curves(rows: list[dict], path: str, title: str) -> None:
    if not rows:
        raise ValueError("no metrics to plot")
    plt = pyplot()
    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc, ax_lr) = plt.subplots(1, 3, figsize=(15, 4.5), dpi=100)
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], "-o", ms=3, label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in rows], "-o", ms=3, label="validation")
    ax_loss.set_ylabel("cross-entropy loss")
    ax_acc.plot(epochs, [100 * r["train_top1"] for r in rows], "-o", ms=3, label="train top-1")
    ax_acc.plot(epochs, [100 * r["val_top1"] for r in rows], "-o", ms=3, label="validation top-1")
    ax_acc.plot(epochs, [100 * r["val_top5"] for r in rows], "--", label="validation top-5")
    ax_acc.set_ylabel("accuracy (%)")
    ax_lr.plot(epochs, [r["lr"] for r in rows], "-o", ms=3)
    ax_lr.set_ylabel("learning rate (end of epoch)")
    for ax in (ax_loss, ax_acc, ax_lr):
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
    ax_loss.legend()
    ax_acc.legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_confusion(result: EvalResult, path: str, title: str) -> None:
    plt = pyplot()
    n = len(result.classes)
    size = min(14, 3 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(size, size * 0.9), dpi=100)
    matrix = result.confusion.float()
    shares = matrix / matrix.sum(1, keepdim=True).clamp(min=1)
    image = ax.imshow(shares.tolist(), cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if matrix[i, j] > 0:
                    ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if shares[i, j] > 0.5 else "black")
        ax.set_xticks(range(n), result.classes, rotation=90 if n > 10 else 0, fontsize=7)
        ax.set_yticks(range(n), result.classes, fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    scores = f"top-1 {100 * result.top1:.2f}%, top-5 {100 * result.top5:.2f}%, {result.count} images"
    ax.set_title(f"{title}\n{scores}", fontsize=9)
    fig.colorbar(image, ax=ax, label="share of the true class")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
