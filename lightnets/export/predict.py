"""Predict classes for image files with a trained checkpoint and its stored preprocessing."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models import create_model
from ..train.checkpoint import load_weights
from ..train.data import Preprocessing, _pil


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]]  # (class, probability), best first


def preprocess(path: str, pre: Preprocessing) -> torch.Tensor:
    """One image file -> a normalised (3, R, R) tensor, as the checkpoint's training saw it.

    ``imagenet``: shorter side resized to ``pre.resize``, centre crop. ``digits``: grey levels,
    resized to the resolution, inverted when the ink is darker than the paper (the dataset
    has light ink on a dark background).
    """
    Image = _pil()
    r = pre.resolution
    with Image.open(path) as img:
        if pre.kind == "digits":
            grey = img.convert("L").resize((r, r), Image.BILINEAR)
            x = torch.frombuffer(bytearray(grey.tobytes()), dtype=torch.uint8).view(1, r, r).float() / 255
            if x.mean() > 0.5:
                x = 1 - x
            x = x.expand(3, r, r)
        else:
            rgb = img.convert("RGB")
            w, h = rgb.size
            short = pre.resize or round(r / 0.875)
            rgb = rgb.resize((max(r, round(w * short / min(w, h))), max(r, round(h * short / min(w, h)))), Image.BILINEAR)
            w, h = rgb.size
            left, top = (w - r) // 2, (h - r) // 2
            rgb = rgb.crop((left, top, left + r, top + r))
            x = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8).view(r, r, 3).permute(2, 0, 1).float() / 255
    mean = torch.tensor(pre.mean).view(3, 1, 1)
    std = torch.tensor(pre.std).view(3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def predict(name: str, checkpoint: str, images: list[str], top: int = 5) -> list[Prediction]:
    """Top-``top`` classes with probabilities for each image file."""
    if not images:
        raise ValueError("no images given")
    weights, config = load_weights(checkpoint)
    stored = config.get("model", {})
    if stored.get("name") not in (None, name):
        raise ValueError(f"checkpoint {checkpoint!r} holds {stored.get('name')!r}, not {name!r}")
    classes = config["classes"]
    model = create_model(name, **stored.get("options", {"num_classes": len(classes)}))
    model.load_state_dict(weights)
    model.eval()
    pre = Preprocessing.from_dict(config["preprocessing"])
    batch = torch.stack([preprocess(p, pre) for p in images])
    probs = model(batch).softmax(1)
    k = min(top, len(classes))
    values, indices = probs.topk(k, dim=1)
    return [
        Prediction(path, [(classes[i], float(v)) for v, i in zip(vs.tolist(), ix.tolist())])
        for path, vs, ix in zip(images, values, indices)
    ]
