"""What ``fit`` trains for: each task's training loss and the validation score that picks the best epoch.

A model states its task with a ``task`` attribute (``"detection"`` for SSDLite,
``"segmentation"`` for LR-ASPP); a model without one is a classifier. The loop itself
(schedule, checkpoints, resuming, divergence checks) is the same for all three.

- Classification: cross-entropy with the recipe's label smoothing; best epoch by top-1.
- Segmentation: per-pixel cross-entropy on logits at the input size, as torchvision's
  reference scripts train LR-ASPP; best epoch by mean IoU.
- Detection: the model's own loss (SSD's, ``model.loss``); best epoch by COCO mAP@[.5:.95],
  the COCO challenge's primary metric (mAP@0.5 is logged beside it).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .data import DataSplit
from .metrics import topk_correct

TASKS = ("classification", "detection", "segmentation")


class Task:
    name = "classification"
    metric = "top1"  # the key of evaluate()'s result that chooses the best epoch
    metric_label = "top-1"

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    def check_model(self, model: nn.Module, world: int) -> None:
        pass

    def count(self, targets) -> int:
        return len(targets)

    def to_device(self, targets, device):
        return targets.to(device, non_blocking=True)

    def loss(self, net: nn.Module, model: nn.Module, x: torch.Tensor, targets) -> tuple[torch.Tensor, list[float]]:
        """The step's loss and the running statistics it adds (top-1 and top-5 hits here)."""
        logits = net(x)
        loss = F.cross_entropy(logits.float(), targets, label_smoothing=self.label_smoothing)
        with torch.no_grad():
            return loss, topk_correct(logits.detach().float(), targets)

    def evaluate(self, model: nn.Module, split: DataSplit, **kwargs) -> dict:
        from .loop import evaluate

        result = evaluate(model, split, batch_size=256, **kwargs)
        return {"loss": result.loss, "top1": result.top1, "top5": result.top5, "count": result.count,
                "skipped": result.skipped}

    def describe(self, row: dict) -> str:
        return (f"train top-1 {100 * row['train_top1']:.2f}%, val top-1 {100 * row['val_top1']:.2f}% "
                f"top-5 {100 * row['val_top5']:.2f}%")


class _DenseTask(Task):
    def check_model(self, model: nn.Module, world: int) -> None:
        if world > 1:
            raise ValueError(f"{self.name} training runs in one process for now; run it without torchrun")

    def describe(self, row: dict) -> str:
        return ", ".join(f"val {key[4:]} {100 * value:.2f}%" for key, value in row.items()
                         if key.startswith("val_") and key[4:] in self.logged)


class Segmentation(_DenseTask):
    name, metric, metric_label = "segmentation", "miou", "mean IoU"
    logged = ("miou", "pixel_acc")

    def loss(self, net, model, x, targets):
        logits = net(x)
        if logits.shape[-2:] != targets.shape[-2:]:
            raise ValueError(
                f"the model's logits are {tuple(logits.shape[-2:])}, the masks {tuple(targets.shape[-2:])}: a "
                "segmentation model returns logits at its input's size"
            )
        return F.cross_entropy(logits.float(), targets), [0, 0]

    def evaluate(self, model, split, **kwargs):
        from .dense_metrics import evaluate_segmentation

        return evaluate_segmentation(model, split, device=kwargs.get("device", "cpu"))


class Detection(_DenseTask):
    name, metric, metric_label = "detection", "map", "mAP@[.5:.95]"
    logged = ("map", "map50")

    def check_model(self, model: nn.Module, world: int) -> None:
        from .dense_metrics import check_detection_extra

        super().check_model(model, world)
        check_detection_extra()  # before training: the first evaluation would need them
        for method in ("loss", "detect"):
            if not callable(getattr(model, method, None)):
                raise ValueError(f"a detection model needs a {method}() method; {type(model).__name__} has none")

    def to_device(self, targets, device):
        return [{k: v.to(device) for k, v in t.items()} for t in targets]

    def loss(self, net, model, x, targets):
        losses = model.loss(net(x), targets, tuple(x.shape[-2:]))
        return sum(losses.values()), [0, 0]

    def evaluate(self, model, split, **kwargs):
        from .dense_metrics import evaluate_detection

        result = evaluate_detection(model, split, device=kwargs.get("device", "cpu"))
        result.pop("score_thresh")  # a setting, not a score: kept out of the metrics lines
        return {**result, "count": result["images"]}


_BY_NAME: dict[str, Callable[..., Task]] = {"classification": Task, "segmentation": Segmentation,
                                            "detection": Detection}


def task_of(model: nn.Module) -> str:
    task = getattr(model, "task", "classification")
    if task not in _BY_NAME:
        raise ValueError(f"{type(model).__name__}.task is {task!r}; fit trains {', '.join(TASKS)}")
    return task


def get_task(model: nn.Module, label_smoothing: float = 0.0) -> Task:
    """The :class:`Task` that trains ``model``, from its ``task`` attribute."""
    return _BY_NAME[task_of(model)](label_smoothing)
