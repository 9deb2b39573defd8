"""Load torchvision checkpoints of the networks we share with it.

torchvision names its layers by ``nn.Sequential`` position (``features.3.conv.1.0``); ours
are timm's (``blocks.1.1.conv_dw``). For the shared networks both state dicts hold the same
tensors in the same order (stem, each block's layers in forward order, head, classifier),
so the converter pairs them in order and checks every pair: the tensor kind (weight, bias,
running statistics) and the shape must agree. The one reshape allowed is MobileNetV3's
first classifier layer, a ``Linear(960, 1280)`` in torchvision and the equivalent 1x1
``conv_head`` here. ``lraspp_mobilenet_v3_large`` pairs the same way: torchvision's
``backbone.<i>`` (its MobileNetV3 ``features``) with our ``backbone.blocks.i.j``, and its
``classifier.{cbr, scale, low_classifier, high_classifier}`` with our ``head``.
``ssdlite320_mobilenet_v3_large`` too: its ``backbone.features.{0, 1}`` (the backbone cut at the
C4 expansion layer) with our ``backbone``, ``backbone.extra`` with our ``extra``, and
``head.{classification_head, regression_head}.module_list`` with our ``head``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..models import create_model

#: torchvision model name -> our registered name.
TORCHVISION_MODELS = {
    "mobilenet_v2": "mobilenet_v2",
    "mobilenet_v3_large": "mobilenet_v3_large",
    "mobilenet_v3_small": "mobilenet_v3_small",
    "lraspp_mobilenet_v3_large": "lraspp_mobilenet_v3_large",
    "ssdlite320_mobilenet_v3_large": "ssdlite320_mobilenet_v3_large",
    "shufflenet_v2_x0_5": "shufflenet_v2_x0_5",
    "shufflenet_v2_x1_0": "shufflenet_v2_x1_0",
    "shufflenet_v2_x1_5": "shufflenet_v2_x1_5",
    "shufflenet_v2_x2_0": "shufflenet_v2_x2_0",
}


# torchvision's top-level modules in forward order, and a module's tensors in registration order.
_TOP_LEVEL = ("conv1", "features", "backbone", "stage2", "stage3", "stage4", "conv5", "classifier", "fc", "head")
_LEAF = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
# Named submodules whose forward order is not alphabetical: LR-ASPP's head (``classifier.*``),
# SSDLite's backbone (``backbone.features`` before ``backbone.extra``) and head.
_NAMED = ("cbr", "scale", "low_classifier", "high_classifier", "features", "extra", "classification_head",
          "regression_head")


def _forward_order(key: str) -> tuple:
    """Sort key restoring a torchvision state dict's module order.

    Files that store tensors by name (safetensors sorts them alphabetically) lose the order
    the pairing relies on; positions (``features.10`` after ``features.9``) and the known
    top-level and tensor order bring it back.
    """
    *path, leaf = key.split(".")
    # skip a wrapper's prefix ("module.", "_orig_mod.") up to the first known top-level name
    start = next((i for i, p in enumerate(path) if p in _TOP_LEVEL), None)
    top = _TOP_LEVEL.index(path[start]) if start is not None else len(_TOP_LEVEL)
    parts = tuple(
        (0, int(p), "") if p.isdigit() else (1, _NAMED.index(p) if p in _NAMED else len(_NAMED), p)
        for p in path[(start or 0) + 1 :]
    )
    return (top, parts, _LEAF.index(leaf) if leaf in _LEAF else len(_LEAF), leaf)


def _suffix(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def torchvision_num_classes(state_dict: Mapping[str, torch.Tensor]) -> int:
    """The number of classes of a torchvision checkpoint: the output width of its last layer
    (the classifier, a ``Linear``, or LR-ASPP's last 1x1 conv); 1000 if it has no weights.

    An SSD head predicts ``classes x anchors`` and ``4 x anchors`` channels per map: the first
    map's two last convs give the number of classes, background included.
    """
    keys = sorted(state_dict, key=_forward_order)
    weights = [state_dict[k] for k in keys if k.endswith(".weight")]
    ssd = [[state_dict[k] for k in keys if k.startswith(f"head.{h}.module_list.0.") and k.endswith(".weight")]
           for h in ("classification_head", "regression_head")]
    if ssd[0] and ssd[1]:
        return ssd[0][-1].shape[0] // (ssd[1][-1].shape[0] // 4)
    return weights[-1].shape[0] if weights else 1000


def from_torchvision(name_or_model: str | nn.Module, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a torchvision state dict onto our model's keys.

    ``name_or_model`` is one of :data:`TORCHVISION_MODELS` (built with the checkpoint's
    number of classes) or one of our models to map onto. Returns a state dict that loads
    with ``strict=True``. Raises ``ValueError`` naming the first key that has no
    counterpart, or whose kind or shape differs, with both keys and shapes.
    """
    state_dict = {k: state_dict[k] for k in sorted(state_dict, key=_forward_order)}
    if isinstance(name_or_model, str):
        if name_or_model not in TORCHVISION_MODELS:
            raise ValueError(
                f"no torchvision converter for {name_or_model!r}; allowed: {', '.join(TORCHVISION_MODELS)}"
            )
        num_classes = torchvision_num_classes(state_dict)
        with torch.device("meta"):
            model = create_model(TORCHVISION_MODELS[name_or_model], num_classes=num_classes)
    else:
        model = name_or_model
    ours = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    # strict=False: unequal counts get the clearer error below, naming the first extra key
    for (their_key, tensor), (our_key, target) in zip(state_dict.items(), ours.items(), strict=False):
        if _suffix(their_key) != _suffix(our_key):
            raise ValueError(
                f"torchvision key {their_key!r} {tuple(tensor.shape)} does not match lightnets key "
                f"{our_key!r} {tuple(target.shape)}: not the same architecture"
            )
        if tensor.shape != target.shape:
            trailing_ones = tuple(target.shape[tensor.dim():]) == (1,) * (target.dim() - tensor.dim())
            if tensor.numel() == target.numel() and trailing_ones:
                tensor = tensor.reshape(target.shape)  # Linear -> 1x1 conv
            else:
                raise ValueError(
                    f"shape mismatch: torchvision {their_key!r} {tuple(tensor.shape)} vs lightnets "
                    f"{our_key!r} {tuple(target.shape)}"
                )
        converted[our_key] = tensor
    if len(state_dict) != len(ours):
        extra_theirs = list(state_dict)[len(converted):]
        extra_ours = list(ours)[len(converted):]
        raise ValueError(
            f"torchvision checkpoint has {len(state_dict)} tensors, the lightnets model has {len(ours)}; "
            + (
                f"first unexpected key: {extra_theirs[0]!r}"
                if extra_theirs
                else f"first missing key: {extra_ours[0]!r}"
            )
        )
    return converted
