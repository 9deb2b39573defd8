"""Predict classes for image files with a trained checkpoint and its stored preprocessing."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..formats import load_image, load_model

#: Images per forward pass: many files on the command line no longer make one huge batch.
BATCH = 32


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]] = field(default_factory=list)  # (class, probability), best first
    error: str | None = None  # why the image could not be read (then ``top`` is empty)


@torch.no_grad()
def predict(
    name: str | None, checkpoint: str, images: list[str], top: int = 5, bad_images: str = "skip"
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
    loaded = load_model(checkpoint, name)
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
