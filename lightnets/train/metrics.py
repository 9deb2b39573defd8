"""Accuracy, per-class accuracy and the confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """Number of samples whose label is among the top-k predictions, for each k (k capped at classes)."""
    maxk = min(max(ks), logits.shape[1])
    top = logits.topk(maxk, dim=1).indices
    hits = top.eq(labels.view(-1, 1))
    return [int(hits[:, : min(k, maxk)].any(dim=1).sum()) for k in ks]


@dataclass
class EvalResult:
    """Top-1 / top-5 accuracy (0-1), mean loss, per-class accuracy and the confusion matrix."""

    top1: float
    top5: float
    loss: float
    count: int
    classes: list[str]
    confusion: torch.Tensor = field(repr=False)  # rows: true class, columns: predicted
    skipped: int = 0  # unreadable images left out (bad_images="skip")

    @property
    def per_class(self) -> list[float]:
        totals = self.confusion.sum(1).clamp(min=1)
        return (self.confusion.diag().float() / totals.float()).tolist()

    def to_dict(self) -> dict:
        return {
            "top1": self.top1, "top5": self.top5, "loss": self.loss, "count": self.count, "skipped": self.skipped,
            "classes": self.classes,
            "per_class": dict(zip(self.classes, self.per_class, strict=True)), "confusion": self.confusion.tolist(),
        }
