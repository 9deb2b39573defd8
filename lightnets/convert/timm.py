"""Load timm checkpoints: our module names are timm's, so this is a check, not a renaming.

timm's mobilenetv1_100, mobilenetv2_*, and mobilenetv3_large/small_* (PyTorch-trained, BN eps
1e-5) have exactly our layout; :func:`from_timm` builds the matching lightnets model and
loads the state dict strictly, naming the first missing or unexpected key and the first shape
mismatch if anything differs. timm's ``tf_mobilenetv3_*`` ports of the paper's TensorFlow
weights are built with TF's "same" padding (``padding="tf_same"``) and BN eps 1e-3, as
trained.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..models import create_model

#: timm name -> (our registered name, options).
TIMM_MODELS: dict[str, tuple[str, dict]] = {
    "mobilenetv1_100": ("mobilenet_v1", {"activation": "r6"}),
    **{f"mobilenetv2_{w}": ("mobilenet_v2", {"width_mult": int(w) / 100}) for w in ("035", "050", "075", "100", "140")},
    "mobilenetv3_large_100": ("mobilenet_v3_large", {"bn_eps": 1e-5}),
    "mobilenetv3_small_100": ("mobilenet_v3_small", {"bn_eps": 1e-5}),
    "tf_mobilenetv3_large_100": ("mobilenet_v3_large", {"padding": "tf_same"}),
    "tf_mobilenetv3_large_075": ("mobilenet_v3_large", {"padding": "tf_same", "width_mult": 0.75}),
    "tf_mobilenetv3_large_minimal_100": ("mobilenet_v3_large", {"padding": "tf_same", "minimal": True}),
    "tf_mobilenetv3_small_100": ("mobilenet_v3_small", {"padding": "tf_same"}),
    "tf_mobilenetv3_small_075": ("mobilenet_v3_small", {"padding": "tf_same", "width_mult": 0.75}),
    "tf_mobilenetv3_small_minimal_100": ("mobilenet_v3_small", {"padding": "tf_same", "minimal": True}),
}


def check_state_dict(ours: Mapping[str, torch.Tensor], theirs: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise ``ValueError`` naming the first missing key, unexpected key, or shape mismatch."""
    missing = [k for k in ours if k not in theirs]
    unexpected = [k for k in theirs if k not in ours]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"first missing key {missing[0]!r} {tuple(ours[missing[0]].shape)} ({len(missing)} missing)")
        if unexpected:
            first = unexpected[0]
            parts.append(f"first unexpected key {first!r} {tuple(theirs[first].shape)} ({len(unexpected)} unexpected)")
        raise ValueError(f"{source} checkpoint does not match the lightnets model: " + "; ".join(parts))
    for key, value in ours.items():
        if tuple(theirs[key].shape) != tuple(value.shape):
            raise ValueError(
                f"{source} checkpoint does not match the lightnets model: {key!r} has shape "
                f"{tuple(theirs[key].shape)} there, {tuple(value.shape)} here"
            )


def from_timm(timm_name: str, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """A lightnets model carrying the weights of timm's ``timm_name`` (number of classes from the classifier)."""
    if timm_name not in TIMM_MODELS:
        raise ValueError(f"no timm converter for {timm_name!r}; allowed: {', '.join(TIMM_MODELS)}")
    name, options = TIMM_MODELS[timm_name]
    classifier = state_dict.get("classifier.weight")
    num_classes = classifier.shape[0] if classifier is not None else 1000
    model = create_model(name, num_classes=num_classes, **options)
    check_state_dict(model.state_dict(), state_dict, f"timm {timm_name}")
    model.load_state_dict(dict(state_dict), strict=True)
    return model
