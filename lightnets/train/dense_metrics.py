"""Detection and segmentation metrics, and the evaluation of dense models on a split.

Detection: COCO's box mAP computed by pycocotools' own ``COCOeval`` (Lin et al., 2014,
"Microsoft COCO", and https://cocodataset.org/#detection-eval): AP averaged over IoU thresholds
0.50:0.05:0.95 and over categories, 101-point interpolated precision, at most 100 detections
per image. The ground truth and detections are built in memory; boxes go from ``x1, y1, x2, y2``
to COCO's ``x, y, width, height``. Following COCO, a category without ground truth is left out of
the mean, so false positives of a class that no image contains do not lower mAP.

Segmentation: the confusion matrix over pixels and the intersection over union per class,
``TP / (TP + FP + FN)`` (the PASCAL VOC measure, Everingham et al., 2010, section 4.2), averaged
over the classes with a nonzero denominator, i.e. present in the ground truth or the
prediction; the background is a class like the others, as in VOC.
"""

from __future__ import annotations

import contextlib
import io

import torch
from torch import nn

from ..models.targets import check_detection_targets, check_segmentation_targets
from .data import DataSplit

# ---- detection --------------------------------------------------------------------------


def _coco():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise ValueError('COCO mAP needs pycocotools: pip install "lightnets[detection]"') from None
    return COCO, COCOeval


def check_detection_extra() -> None:
    """Raise a ValueError naming the extra unless a detector can be scored here: its NMS needs
    torchvision, the mAP pycocotools. Training calls it before the first step, not after an epoch."""
    _coco()
    try:
        import torchvision.ops  # noqa: F401
    except ImportError:
        raise ValueError('a detector\'s detections need torchvision (its NMS): pip install "lightnets[detection]"') \
            from None


def _check_predictions(predictions: object, count: int) -> None:
    if not isinstance(predictions, list | tuple) or len(predictions) != count:
        got = f"{len(predictions)} predictions" if isinstance(predictions, list | tuple) else type(predictions).__name__
        raise ValueError(f"detection predictions must be a list of dicts, one per image ({count}), got {got}")
    for i, p in enumerate(predictions):
        where = f"detection prediction {i}"
        if not isinstance(p, dict) or not {"boxes", "scores", "labels"} <= set(p):
            got = sorted(p) if isinstance(p, dict) else type(p).__name__
            raise ValueError(f"{where} must be a dict with 'boxes', 'scores' and 'labels', got {got}")
        boxes, scores, labels = p["boxes"], p["scores"], p["labels"]
        if not all(isinstance(t, torch.Tensor) for t in (boxes, scores, labels)):
            raise ValueError(f"{where}: boxes, scores and labels must be tensors")
        k = len(boxes)
        if boxes.shape != (k, 4) or scores.shape != (k,) or labels.shape != (k,):
            raise ValueError(f"{where}: boxes must be (k, 4), scores and labels (k,); got {tuple(boxes.shape)}, "
                             f"{tuple(scores.shape)}, {tuple(labels.shape)}")
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"{where}: labels must be an integer tensor, got {labels.dtype}")
        if not (torch.isfinite(boxes).all() and torch.isfinite(scores).all()):
            raise ValueError(f"{where}: boxes and scores must be finite")
        if ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any():
            raise ValueError(f"{where}: a box has x2 < x1 or y2 < y1 (boxes are x1, y1, x2, y2)")


def detection_map(predictions: list[dict], targets: list[dict], *, image_ids: list[int] | None = None) -> dict:
    """COCO box mAP of ``predictions`` against ``targets`` (one dict per image, in the same order).

    ``predictions``: ``{"boxes": (k, 4) x1, y1, x2, y2, "scores": (k,), "labels": (k,)}``;
    ``targets``: ``{"boxes", "labels"}`` as :func:`~lightnets.models.targets.check_detection_targets`
    accepts (every image has a box). ``image_ids`` (distinct ints) name the images, default 1..N.

    Returns ``map`` (AP at IoU 0.50:0.95), ``map50``, ``map75``, ``mar100`` (recall with 100
    detections per image), ``per_class`` (AP 0.50:0.95 of each label with ground truth), and
    the counts ``images`` and ``detections``; numbers are pycocotools' ``COCOeval.stats``.
    """
    COCO, COCOeval = _coco()
    check_detection_targets(targets, None, 2**31)
    _check_predictions(predictions, len(targets))
    if image_ids is None:
        image_ids = list(range(1, len(targets) + 1))
    ok = isinstance(image_ids, list | tuple) and len(image_ids) == len(targets) and len(set(image_ids)) == len(
        image_ids) and all(isinstance(i, int) and not isinstance(i, bool) for i in image_ids)
    if not ok:
        raise ValueError(f"image_ids must be {len(targets)} distinct integers, one per image, got {image_ids!r}")
    if not targets:
        raise ValueError("detection_map needs at least one image")

    annotations, detections = [], []
    for image_id, target, pred in zip(image_ids, targets, predictions, strict=True):
        for (x1, y1, x2, y2), label in zip(target["boxes"].tolist(), target["labels"].tolist(), strict=True):
            w, h = x2 - x1, y2 - y1
            # ids from 1: COCOeval marks a matched ground truth by its id, and 0 would read as unmatched
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label,
                                "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": 0})
        for (x1, y1, x2, y2), score, label in zip(pred["boxes"].tolist(), pred["scores"].tolist(),
                                                  pred["labels"].tolist(), strict=True):
            detections.append({"image_id": image_id, "category_id": label, "bbox": [x1, y1, x2 - x1, y2 - y1],
                               "score": score})
    categories = sorted({a["category_id"] for a in annotations} | {d["category_id"] for d in detections})
    result = {"map": 0.0, "map50": 0.0, "map75": 0.0, "mar100": 0.0,
              "per_class": {c: 0.0 for c in sorted({a["category_id"] for a in annotations})},
              "images": len(targets), "detections": len(detections)}
    if not detections:  # nothing found: every AP is 0 (pycocotools' loadRes cannot take an empty list)
        return result
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and its table
        gt = COCO()
        gt.dataset = {"images": [{"id": i} for i in image_ids], "annotations": annotations,
                      "categories": [{"id": c} for c in categories]}
        gt.createIndex()
        dt = gt.loadRes(detections)
        evaluation = COCOeval(gt, dt, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = evaluation.stats
    result.update(map=float(stats[0]), map50=float(stats[1]), map75=float(stats[2]), mar100=float(stats[8]))
    # precision: (IoU thresholds, recall points, categories, area ranges, max dets); -1 = no ground truth
    precision = torch.as_tensor(evaluation.eval["precision"])[:, :, :, 0, -1]
    for k, category in enumerate(evaluation.params.catIds):
        if category in result["per_class"]:
            p = precision[:, :, k]
            result["per_class"][category] = float(p[p > -1].mean()) if (p > -1).any() else 0.0
    return result


# ---- segmentation -----------------------------------------------------------------------


def segmentation_confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) int64 pixel counts, rows the true class, columns the predicted one."""
    check_segmentation_targets(target, tuple(target.shape) if isinstance(target, torch.Tensor) else (), num_classes)
    if not isinstance(pred, torch.Tensor) or pred.shape != target.shape:
        shape = tuple(pred.shape) if isinstance(pred, torch.Tensor) else type(pred).__name__
        raise ValueError(f"the predicted class map has shape {shape}, the target {tuple(target.shape)}: they must "
                         "match")
    if pred.is_floating_point() or pred.dtype == torch.bool:
        raise ValueError(f"the predicted class map must be integer class indices (argmax of the logits), got "
                         f"{pred.dtype}")
    if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= num_classes):
        raise ValueError(f"the predicted class map has classes {int(pred.min())}..{int(pred.max())}; allowed "
                         f"0..{num_classes - 1}")
    pairs = target.flatten().long() * num_classes + pred.flatten().long()
    return torch.bincount(pairs, minlength=num_classes**2).view(num_classes, num_classes)


def mean_iou(confusion: torch.Tensor) -> dict:
    """``miou``, ``per_class`` IoU (None for a class in neither target nor prediction) and ``pixel_acc``."""
    if not isinstance(confusion, torch.Tensor) or confusion.dim() != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError("confusion must be a square (C, C) tensor of pixel counts")
    c = confusion.double()
    if c.sum() <= 0 or (c < 0).any():
        raise ValueError("confusion must hold non-negative pixel counts and at least one pixel")
    tp = c.diag()
    denominator = c.sum(0) + c.sum(1) - tp  # TP + FP + FN
    present = denominator > 0
    iou = tp / denominator.clamp(min=1)
    return {
        "miou": float(iou[present].mean()),
        "per_class": [float(v) if p else None for v, p in zip(iou.tolist(), present.tolist(), strict=True)],
        "pixel_acc": float(tp.sum() / c.sum()),
    }


# ---- evaluation of models ---------------------------------------------------------------


def _check_split(split: DataSplit, task: str, batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if split.task != task:
        raise ValueError(f"evaluate_{task} needs a {task} split, the {split.name} split is a {split.task} task")


def _check_classes(model: nn.Module, split: DataSplit) -> None:
    stated = getattr(model, "num_classes", None)
    if isinstance(stated, int) and stated != len(split.classes):
        raise ValueError(f"the model has {stated} classes, the {split.name} split {len(split.classes)} (background "
                         f"included): build it with num_classes={len(split.classes)}")


@torch.no_grad()
def evaluate_detection(
    model: nn.Module, split: DataSplit, *, batch_size: int = 64, score_thresh: float = 0.001,
    device: str | torch.device = "cpu",
) -> dict:
    """COCO mAP (:func:`detection_map`) of ``model.detect(images)`` on a detection ``split``.

    ``model.detect`` returns one dict per image, ``boxes`` (x1, y1, x2, y2 in input pixels),
    ``scores`` and ``labels``; detections scoring below ``score_thresh`` are dropped (0.001 as in
    torchvision's COCO evaluation, low so that the precision-recall curve reaches far).
    """
    _check_split(split, "detection", batch_size)
    if not callable(getattr(model, "detect", None)):
        raise ValueError(f"evaluate_detection needs a detector with a detect(images) method, got "
                         f"{type(model).__name__}")
    if isinstance(score_thresh, bool) or not isinstance(score_thresh, int | float) or not 0 <= score_thresh < 1:
        raise ValueError(f"score_thresh must be a number in [0, 1), got {score_thresh!r}")
    _check_classes(model, split)
    was_training = model.training
    model.eval()
    predictions, targets = [], []
    try:
        for batch in split.batches(batch_size, shuffle=False):
            found = model.detect(batch.images.to(device))
            if isinstance(found, list | tuple):
                found = [{k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in p.items()}
                         if isinstance(p, dict) else p for p in found]
            _check_predictions(found, len(batch.labels))
            for p in found:
                keep = p["scores"] >= score_thresh
                predictions.append({k: p[k][keep] for k in ("boxes", "scores", "labels")})
            targets.extend(batch.labels)
    finally:
        model.train(was_training)
    return detection_map(predictions, targets) | {"score_thresh": float(score_thresh)}


@torch.no_grad()
def evaluate_segmentation(
    model: nn.Module, split: DataSplit, *, batch_size: int = 64, device: str | torch.device = "cpu",
) -> dict:
    """Mean IoU, per-class IoU and pixel accuracy (:func:`mean_iou`) of ``model`` on a segmentation ``split``.

    The model returns logits (N, classes, H, W) at the input size; the prediction is their argmax.
    """
    _check_split(split, "segmentation", batch_size)
    _check_classes(model, split)
    n_classes = len(split.classes)
    confusion = torch.zeros(n_classes, n_classes, dtype=torch.long)
    was_training = model.training
    model.eval()
    count = 0
    try:
        for batch in split.batches(batch_size, shuffle=False):
            logits = model(batch.images.to(device))
            n, _, h, w = batch.images.shape
            if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (n, n_classes, h, w):
                shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
                raise ValueError(f"the model returned {shape} for {n} images of {h}x{w}; a segmentation model "
                                 f"returns logits ({n}, {n_classes}, {h}, {w}): one per class and pixel")
            confusion += segmentation_confusion(logits.argmax(1).cpu(), batch.labels, n_classes)
            count += n
    finally:
        model.train(was_training)
    return mean_iou(confusion) | {"count": count, "classes": list(split.classes), "confusion": confusion.tolist()}
