"""Checks of detection and segmentation targets: one place for the datasets, the losses and the metrics.

Conventions (torchvision's detection models and COCO's): a detection target is one dict per
image, ``{"boxes": float (k, 4), "labels": int64 (k,)}``, boxes as ``x1, y1, x2, y2`` in pixel
edges of the input (a box may touch the image border, ``0 <= x1 < x2 <= width``), class 0 is the
background, so object labels are ``1 .. num_classes - 1``. A segmentation target is an integer
map ``(N, H, W)`` of class indices ``0 .. num_classes - 1`` at the images' size. Anything else
raises a ValueError naming the image and what is allowed, before a loss or metric turns it into
a silent NaN or a wrong number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def _size(image_size: object) -> tuple[int, int]:
    """``image_size`` as (height, width): an int (square) or a pair of positive ints."""
    pair = (image_size, image_size) if isinstance(image_size, int) else image_size
    ok = (
        isinstance(pair, Sequence) and len(pair) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair)
    )
    if not ok:
        raise ValueError(f"image_size must be a positive int or a (height, width) pair of them, got {image_size!r}")
    return int(pair[0]), int(pair[1])


def _num_classes(num_classes: object, least: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < least:
        raise ValueError(f"num_classes must be an integer >= {least} (background included), got {num_classes!r}")
    return num_classes


def check_detection_targets(targets: object, image_size: object, num_classes: int) -> None:
    """Raise a ValueError unless ``targets`` are valid detection targets for images of ``image_size``.

    ``targets``: a list with one dict per image, ``boxes`` a floating tensor (k, 4) of finite
    ``x1, y1, x2, y2`` with ``0 <= x1 < x2 <= width`` and ``0 <= y1 < y2 <= height``, ``labels``
    an integer tensor (k,) in ``1 .. num_classes - 1``, k >= 1. ``image_size`` is an int
    (square) or (height, width); None skips the bounds check (a metric sees boxes of images
    whose size it is not told). An image without boxes is refused: every training image of the
    built-in scenes has an object, and a metric over an image without ground truth counts only
    false positives, which COCO's protocol would not report per class.
    """
    height, width = (math.inf, math.inf) if image_size is None else _size(image_size)
    num_classes = _num_classes(num_classes, 2)
    if not isinstance(targets, list | tuple):
        raise ValueError(f"detection targets must be a list of dicts (one per image), got {type(targets).__name__}")
    for i, target in enumerate(targets):
        where = f"detection target {i}"
        if not isinstance(target, dict) or not {"boxes", "labels"} <= set(target):
            got = sorted(target) if isinstance(target, dict) else type(target).__name__
            raise ValueError(f"{where} must be a dict with 'boxes' and 'labels', got {got}")
        boxes, labels = target["boxes"], target["labels"]
        if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
            shape = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
            raise ValueError(f"{where}: boxes must be a tensor of shape (k, 4) as x1, y1, x2, y2, got {shape}")
        if not boxes.is_floating_point():
            raise ValueError(f"{where}: boxes must be a floating tensor (pixel coordinates), got {boxes.dtype}")
        if len(boxes) == 0:
            raise ValueError(f"{where}: an image without boxes: every image needs at least one object box")
        if not isinstance(labels, torch.Tensor) or labels.shape != (len(boxes),):
            shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise ValueError(f"{where}: labels must be a tensor of shape ({len(boxes)},), one per box, got {shape}")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ValueError(f"{where}: labels must be an integer tensor (int64 class indices), got {labels.dtype}")
        if not torch.isfinite(boxes).all():
            j = int((~torch.isfinite(boxes)).any(1).nonzero()[0])
            raise ValueError(f"{where}: box {j} is not finite: {boxes[j].tolist()}")
        x1, y1, x2, y2 = boxes.unbind(1)
        degenerate = (x2 <= x1) | (y2 <= y1)
        if degenerate.any():
            j = int(degenerate.nonzero()[0])
            raise ValueError(f"{where}: box {j} {boxes[j].tolist()} is degenerate: a box needs x2 > x1 and y2 > y1")
        outside = (x1 < 0) | (y1 < 0) | (x2 > width) | (y2 > height)
        if outside.any():
            j = int(outside.nonzero()[0])
            raise ValueError(f"{where}: box {j} {boxes[j].tolist()} is outside the {width}x{height} image "
                             f"(allowed: 0 <= x1 < x2 <= {width}, 0 <= y1 < y2 <= {height})")
        bad = (labels < 1) | (labels >= num_classes)
        if bad.any():
            j = int(bad.nonzero()[0])
            raise ValueError(f"{where}: box {j} has label {int(labels[j])}; allowed 1..{num_classes - 1} "
                             f"(0 is the background, which boxes do not take)")


def check_segmentation_targets(masks: object, images_or_shape: object, num_classes: int) -> None:
    """Raise a ValueError unless ``masks`` are valid segmentation targets for the images.

    ``masks``: an integer tensor (N, H, W) of class indices in ``0 .. num_classes - 1`` (0 the
    background). ``images_or_shape``: the images (N, C, H, W), or their shape, or the expected
    mask shape (N, H, W). There is no ignore index: the built-in scenes label every pixel.
    """
    num_classes = _num_classes(num_classes, 2)
    if isinstance(images_or_shape, torch.Tensor):
        shape = tuple(images_or_shape.shape)
    elif isinstance(images_or_shape, Sequence) and all(isinstance(v, int) for v in images_or_shape):
        shape = tuple(images_or_shape)
    else:
        raise ValueError(f"images_or_shape must be the images (N, C, H, W) or a shape, got {images_or_shape!r}")
    if len(shape) == 4:
        expected = (shape[0], shape[2], shape[3])
    elif len(shape) == 3:
        expected = shape
    else:
        raise ValueError(f"images_or_shape must be (N, C, H, W) images or an (N, H, W) mask shape, got {shape}")
    if not isinstance(masks, torch.Tensor):
        raise ValueError(f"segmentation masks must be a tensor (N, H, W) of class indices, got {type(masks).__name__}")
    if tuple(masks.shape) != expected:
        raise ValueError(f"segmentation masks have shape {tuple(masks.shape)}; the images need {expected} (N, H, W): "
                         "one class index per pixel")
    if masks.is_floating_point() or masks.is_complex() or masks.dtype == torch.bool:
        raise ValueError(f"segmentation masks must be an integer tensor (int64 class indices), got {masks.dtype}")
    if masks.numel():
        low, high = int(masks.min()), int(masks.max())
        if low < 0 or high >= num_classes:
            value = low if low < 0 else high
            i = int(((masks == value).flatten(1).any(1)).nonzero()[0])
            raise ValueError(f"segmentation mask {i} has class {value}; allowed 0..{num_classes - 1} "
                             f"(0 the background, {num_classes} classes)")

