"""What an image goes through before the network, stored with every checkpoint, and how one image file is read.

The record lives beside the checkpoint format because every reader of a checkpoint needs it:
``predict`` and ``eval`` must prepare images as training did, and a converted checkpoint
carries its source's mean and std (Keras' [-1, 1], Megvii's 0..255), which would silently cost
accuracy if a reader assumed ImageNet's.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass

import torch

#: What an image may go through: the built-in digits' grey levels, or an RGB file resized and centre-cropped.
PREPROCESSING_KINDS = ("digits", "imagenet")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DIGITS_MEAN = (0.5, 0.5, 0.5)
DIGITS_STD = (0.5, 0.5, 0.5)
# Evaluation resizes the shorter side to resolution / 0.875, then centre-crops: 256 -> 224,
# the ImageNet convention since AlexNet that torchvision and timm follow.
CROP_RATIO = 0.875


@dataclass
class Preprocessing:
    """What an image goes through before the network; stored with every checkpoint."""

    kind: str  # "digits" or "imagenet"
    resolution: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: int | None = None  # eval: shorter side resized to this, then centre crop

    def to_dict(self) -> dict:
        return {"kind": self.kind, "resolution": self.resolution, "mean": list(self.mean), "std": list(self.std),
                "resize": self.resize}

    @classmethod
    def from_dict(cls, d: dict, source: str = "") -> Preprocessing:
        """The record :meth:`to_dict` stored; anything else raises a ValueError naming ``source`` and the fault."""
        where = f"{source}: its stored preprocessing" if source else "preprocessing"
        if not isinstance(d, dict):
            raise ValueError(f"{where} is {d!r}, not a record of kind, resolution, mean and std")
        missing = [k for k in ("kind", "resolution", "mean", "std") if k not in d]
        if missing:
            raise ValueError(f"{where} lacks {', '.join(missing)} (it has {', '.join(sorted(d)) or 'nothing'})")
        kind, resolution, resize = d["kind"], d["resolution"], d.get("resize")
        if kind not in PREPROCESSING_KINDS:
            raise ValueError(f"{where} has kind {kind!r}; allowed: {', '.join(PREPROCESSING_KINDS)}")
        for name, value in (("resolution", resolution), ("resize", 1 if resize is None else resize)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{where} has {name} {value!r}; it must be a positive integer")
        stats = {}
        for name, low in (("mean", -math.inf), ("std", 0.0)):
            value = d[name]
            ok = isinstance(value, list | tuple) and len(value) == 3 and all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > low for v in value
            )
            if not ok:
                rule = "finite" if name == "mean" else "finite and positive"
                raise ValueError(f"{where} has {name} {value!r}; it must be three {rule} numbers (one per channel)")
            stats[name] = tuple(float(v) for v in value)
        return cls(kind, resolution, stats["mean"], stats["std"], resize)


def imagenet_preprocessing(
    resolution: int, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD
) -> Preprocessing:
    """ImageNet-style preprocessing at ``resolution``: resize to resolution / 0.875, centre crop, ``mean``/``std``."""
    return Preprocessing("imagenet", resolution, tuple(mean), tuple(std), resize=round(resolution / CROP_RATIO))


def pillow():
    """Pillow's ``Image`` module, or a ValueError naming the extra that installs it."""
    try:
        from PIL import Image
    except ImportError:
        raise ValueError('reading images needs Pillow: pip install "lightnets[images]"') from None
    return Image


def image_errors() -> tuple[type[Exception], ...]:
    """What Pillow raises for a file it cannot read as an image: not an image, empty, truncated,
    a directory, or over its decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``).

    ``DecompressionBombError`` is neither an OSError nor a ValueError, and some decoders raise
    SyntaxError ("broken PNG file"), EOFError or ``struct.error`` on damaged data; catching only
    OSError and ValueError let those stop a training run that was told to skip bad images.
    """
    Image = pillow()
    return (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError)


def resize_center_crop(img, resolution: int, resize: int | None = None):
    """A PIL image with its shorter side resized to ``resize`` (never below ``resolution``), centre-cropped square.

    ``resize`` defaults to resolution / 0.875. The floor at ``resolution`` keeps the crop inside
    the image when a stored ``resize`` is smaller than the resolution asked for.
    """
    Image = pillow()
    w, h = img.size
    short = resize or round(resolution / CROP_RATIO)
    size = (max(resolution, round(w * short / min(w, h))), max(resolution, round(h * short / min(w, h))))
    img = img.resize(size, Image.BILINEAR)
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    return img.crop((left, top, left + resolution, top + resolution))


def rgb_to_tensor(img, pre: Preprocessing) -> torch.Tensor:
    """An RGB PIL image of ``pre.resolution`` squared -> a normalised (3, R, R) float tensor."""
    r = pre.resolution
    x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(r, r, 3).permute(2, 0, 1).float() / 255
    return (x - torch.tensor(pre.mean).view(3, 1, 1)) / torch.tensor(pre.std).view(3, 1, 1)


def load_image(path: str, pre: Preprocessing) -> torch.Tensor:
    """One image file -> a normalised (3, R, R) tensor, as the checkpoint's training saw it.

    A file Pillow cannot read (see :func:`image_errors`) raises a ValueError naming it.
    ``imagenet``: shorter side resized to ``pre.resize``, centre crop. ``digits``: grey levels,
    resized to the resolution, inverted when the ink is darker than the paper (the dataset
    has light ink on a dark background).
    """
    Image = pillow()
    r = pre.resolution
    try:
        with Image.open(path) as img:
            if pre.kind != "digits":
                return rgb_to_tensor(resize_center_crop(img.convert("RGB"), r, pre.resize), pre)
            grey = img.convert("L").resize((r, r), Image.BILINEAR)
    except image_errors() as err:
        raise ValueError(f"cannot read image {os.fspath(path)!r}: {err or type(err).__name__}") from None
    x = torch.frombuffer(bytearray(grey.tobytes()), dtype=torch.uint8).view(1, r, r).float() / 255
    if x.mean() > 0.5:
        x = 1 - x
    x = x.expand(3, r, r)
    return (x - torch.tensor(pre.mean).view(3, 1, 1)) / torch.tensor(pre.std).view(3, 1, 1)
