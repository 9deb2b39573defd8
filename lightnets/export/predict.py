"""Predict classes for image files with a trained checkpoint and its stored preprocessing."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..formats import load_image, load_model


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]]  # (class, probability), best first


@torch.no_grad()
def predict(name: str | None, checkpoint: str, images: list[str], top: int = 5) -> list[Prediction]:
    """Top-``top`` classes with probabilities for each image file.

    ``name`` is the network the caller expects the checkpoint to hold (None: whatever it holds);
    images are prepared as the checkpoint's training prepared them (:func:`load_image`).
    """
    if not images:
        raise ValueError("no images given")
    loaded = load_model(checkpoint, name)
    batch = torch.stack([load_image(p, loaded.preprocessing) for p in images])
    probs = loaded.model(batch).softmax(1)
    classes = loaded.class_names
    values, indices = probs.topk(min(top, len(classes)), dim=1)
    return [
        Prediction(path, [(classes[i], float(v)) for v, i in zip(vs.tolist(), ix.tolist(), strict=True)])
        for path, vs, ix in zip(images, values, indices, strict=True)
    ]
