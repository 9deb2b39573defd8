"""Turn another library's weight file into a lightnets checkpoint, with its preprocessing.

A converted checkpoint works like a trained one: ``lightnets predict``, ``eval`` and ``export``
rebuild the model from its stored name and options and preprocess images as stored. The
preprocessing is the source's: ImageNet mean and std for torchvision and timm (mean and std
0.5 for timm's TF ports), [-1, 1] for Keras, and for Megvii's ShuffleNets (trained on BGR
pixels in 0..255) 0..255 with the stem's input channels reordered to RGB, an exact change.
Resizing is approximate: shorter side to resolution / 0.875, bilinear, centre crop, whereas
some sources evaluate with other ratios or bicubic interpolation (torchvision's V2 weights
resize to 232, many timm configs are bicubic); expect small accuracy differences from that.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..catalog import task_of
from ..formats.checkpoint import save_checkpoint
from ..formats.preprocessing import imagenet_preprocessing
from ..models import create_model
from .files import read_state_dict
from .keras import KERAS_MODELS, KERAS_PREPROCESSING, from_keras
from .megvii import MEGVII_MODELS, from_megvii, load_megvii_file
from .timm import TIMM_MODELS, from_timm
from .torchvision import TORCHVISION_MODELS, from_torchvision, torchvision_num_classes

SOURCES = ("torchvision", "timm", "keras", "megvii")


def load_state_file(path: str) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a PyTorch file (see :func:`read_state_dict`), without
    DataParallel's ``module.`` prefix."""
    return {k.removeprefix("module."): v for k, v in read_state_dict(path).items()}


def _num_classes(model: nn.Module) -> int:
    return model.num_classes


def convert_checkpoint(
    source: str,
    source_name: str,
    path: str,
    output: str,
    *,
    width_mult: float = 1.0,
    minimal: bool = False,
    classes: list[str] | None = None,
    resolution: int = 224,
) -> dict:
    """Convert ``path`` (``source_name`` in library ``source``) and save a lightnets checkpoint at ``output``.

    ``source`` is one of :data:`SOURCES`; ``source_name`` is the model's name there
    (``mobilenet_v2``, ``mobilenetv3_large_100``, ``MobileNetV2``, ``ShuffleNetV1_group3_1.0x``).
    ``width_mult`` and ``minimal`` are Keras' ``alpha`` and ``minimalistic``. ``classes`` names
    the outputs (default "0", "1", ...). Returns the stored config.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; allowed: {', '.join(SOURCES)}")
    if (width_mult != 1.0 or minimal) and source != "keras":
        raise ValueError("width_mult and minimal describe Keras files only; other sources' names fix them")
    if source == "torchvision":
        if source_name not in TORCHVISION_MODELS:
            raise ValueError(f"no torchvision converter for {source_name!r}; allowed: {', '.join(TORCHVISION_MODELS)}")
        if task_of(TORCHVISION_MODELS[source_name]) != "classification":
            # A checkpoint's preprocessing and classes describe an image classifier (predict, eval).
            raise ValueError(
                f"{source_name} is a {task_of(TORCHVISION_MODELS[source_name])} model: checkpoints hold classifiers "
                f"for now; load its weights with lightnets.convert.from_torchvision({source_name!r}, state_dict); "
                f"classifiers allowed here: "
                + ", ".join(n for n, ours in TORCHVISION_MODELS.items() if task_of(ours) == "classification")
            )
        state = load_state_file(path)
        name, options = TORCHVISION_MODELS[source_name], {}
        converted = from_torchvision(source_name, state)
        options["num_classes"] = torchvision_num_classes(state)
        model = create_model(name, **options)
        model.load_state_dict(converted)
        pre = imagenet_preprocessing(resolution)
    elif source == "timm":
        model = from_timm(source_name, load_state_file(path))
        name, options = TIMM_MODELS[source_name]
        options = {**options, "num_classes": _num_classes(model)}
        tf_port = source_name.startswith("tf_")  # timm's TF ports take inception-style [-1, 1] inputs
        pre = imagenet_preprocessing(
            resolution, *((KERAS_PREPROCESSING["mean"], KERAS_PREPROCESSING["std"]) if tf_port else ())
        )
    elif source == "keras":
        model = from_keras(source_name, path, width_mult=width_mult, minimal=minimal)
        name, options = KERAS_MODELS[source_name]
        options = {**options, "width_mult": width_mult, "num_classes": _num_classes(model)}
        if minimal:
            options["minimal"] = True
        pre = imagenet_preprocessing(resolution, KERAS_PREPROCESSING["mean"], KERAS_PREPROCESSING["std"])
    else:
        model = from_megvii(source_name, load_megvii_file(path))
        name = MEGVII_MODELS.get(source_name, source_name)
        options = {"num_classes": _num_classes(model)}
        with torch.no_grad():  # trained on BGR: reorder the stem's inputs so RGB images go in
            model.conv_stem.weight.copy_(model.conv_stem.weight.flip(1))
        pre = imagenet_preprocessing(resolution, (0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255))
    num_classes = options["num_classes"]
    classes = list(classes) if classes is not None else [str(i) for i in range(num_classes)]
    if len(classes) != num_classes:
        raise ValueError(f"{len(classes)} class names given, but the classifier has {num_classes} outputs")
    config = {
        "model": {"name": name, "options": options},
        "classes": classes,
        "preprocessing": pre.to_dict(),
        "source": {"library": source, "name": source_name, "file": os.path.basename(path)},
    }
    save_checkpoint(output, model.state_dict(), config=config, progress={"converted": True}, keep_previous=False)
    return config
