"""Predict classes for image files with a trained checkpoint and its stored preprocessing."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..formats import LoadedModel, load_image, load_model

#: Images per forward pass: many files on the command line no longer make one huge batch.
BATCH = 32


def _loaded(name: str | None, checkpoint: str | LoadedModel) -> LoadedModel:
    """A checkpoint path is loaded; an already loaded one (the CLI reads it once to learn its task) is used as is."""
    return checkpoint if isinstance(checkpoint, LoadedModel) else load_model(checkpoint, name)


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]] = field(default_factory=list)  # (class, probability), best first
    error: str | None = None  # why the image could not be read (then ``top`` is empty)


@torch.no_grad()
def predict(
    name: str | None, checkpoint: str | LoadedModel, images: list[str], top: int = 5, bad_images: str = "skip"
) -> list[Prediction]:
    """Top-``top`` classes with probabilities for each image file.

    ``name`` is the network the caller expects the checkpoint to hold (None: whatever it holds);
    images are prepared as the checkpoint's training prepared them (:func:`load_image`). An image
    that cannot be read is handled as training handles one (``bad_images``): ``"skip"`` gives it a
    :class:`Prediction` with the reason in ``error`` and no classes, ``"error"`` raises a
    ValueError naming it before any prediction.
    """
    if not images:
        raise ValueError("no images given")
    if bad_images not in ("skip", "error"):
        raise ValueError(f"bad_images must be 'skip' or 'error', got {bad_images!r}")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be an integer >= 1, got {top!r}")
    loaded = _loaded(name, checkpoint)
    predictions, readable = [], []
    for path in images:
        try:
            readable.append((load_image(path, loaded.preprocessing), len(predictions)))
            predictions.append(Prediction(path))
        except ValueError as err:
            if bad_images == "error":
                raise ValueError(f"{err} (bad_images='skip' reports it and predicts the others)") from None
            predictions.append(Prediction(path, error=str(err)))
    classes = loaded.class_names
    for start in range(0, len(readable), BATCH):
        chunk = readable[start:start + BATCH]
        probs = loaded.model(torch.stack([x for x, _ in chunk])).softmax(1)
        values, indices = probs.topk(min(top, len(classes)), dim=1)
        for (_, at), vs, ix in zip(chunk, values.tolist(), indices.tolist(), strict=True):
            predictions[at].top = [(classes[i], float(v)) for v, i in zip(vs, ix, strict=True)]
    return predictions


@dataclass
class DensePrediction:
    """One image's detections (``(class, score, [x1, y1, x2, y2])`` in the file's pixels, best
    first) or its segmentation (pixels per predicted class), and the PNG drawn from them."""

    path: str
    detections: list[tuple[str, float, list[float]]] = field(default_factory=list)
    pixels: dict[str, int] = field(default_factory=dict)
    drawn: str | None = None
    error: str | None = None


@torch.no_grad()
def predict_dense(
    name: str | None, checkpoint: str | LoadedModel, images: list[str], out_dir: str, *, score_thresh: float = 0.5,
    bad_images: str = "skip",
) -> list[DensePrediction]:
    """Detect or segment each image file with a detection or segmentation checkpoint and draw the
    result onto a copy of it: ``out_dir/<file stem>.png`` (boxes labelled with class and score,
    or the class mask tinted over the image).

    The image is resized whole to the model's input, as the built-in scenes were made; boxes
    are mapped back to the file's pixels. Detections scoring below ``score_thresh`` are not
    reported or drawn. ``bad_images`` as in :func:`predict`.
    """
    import os

    from ..formats.preprocessing import pillow
    from .draw import draw_boxes, draw_mask

    if not images:
        raise ValueError("no images given")
    if bad_images not in ("skip", "error"):
        raise ValueError(f"bad_images must be 'skip' or 'error', got {bad_images!r}")
    if not 0 <= score_thresh <= 1:
        raise ValueError(f"score_thresh must be in [0, 1], got {score_thresh!r}")
    loaded = _loaded(name, checkpoint)
    task = getattr(loaded.model, "task", "classification")
    if task not in ("detection", "segmentation"):
        raise ValueError(f"{loaded.path!r} holds a classifier ({loaded.name}); predict_dense draws detections and "
                         "masks (use predict for classes)")
    Image = pillow()
    os.makedirs(out_dir, exist_ok=True)
    classes = loaded.class_names
    results = []
    for path in images:
        try:
            x = load_image(path, loaded.preprocessing)
            with Image.open(path) as img:
                original = img.convert("RGB")
        except ValueError as err:
            if bad_images == "error":
                raise ValueError(f"{err} (bad_images='skip' reports it and predicts the others)") from None
            results.append(DensePrediction(path, error=str(err)))
            continue
        result = DensePrediction(path)
        if task == "detection":
            found = loaded.model.detect(x.unsqueeze(0))[0]
            keep = found["scores"] >= score_thresh
            boxes, labels, scores = found["boxes"][keep], found["labels"][keep], found["scores"][keep]
            r_h, r_w = x.shape[-2:]
            boxes = boxes * torch.tensor([original.width / r_w, original.height / r_h] * 2)
            result.detections = [(classes[label], score, box) for box, label, score in
                                 zip(boxes.tolist(), labels.tolist(), scores.tolist(), strict=True)]
            drawing = draw_boxes(original, boxes, labels, scores, classes)
        else:
            mask = loaded.model(x.unsqueeze(0))[0].argmax(0)
            counts = torch.bincount(mask.flatten(), minlength=len(classes))
            result.pixels = {classes[i]: int(n) for i, n in enumerate(counts.tolist()) if n and i}
            drawing = draw_mask(original, mask, len(classes))
        result.drawn = os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0] + ".png")
        drawing.save(result.drawn)
        results.append(result)
    return results
