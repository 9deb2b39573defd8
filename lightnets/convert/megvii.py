"""Load the ShuffleNetV2 checkpoints of the authors' release (Megvii's ShuffleNet-Series).

Their network is ``shufflenet_v2_x*_official`` here (same units, 146 M MAdds at 1x). Their
layer names are ``nn.Sequential`` positions (``features.3.branch_main.5``); this maps them by
rule onto ours and then checks every key and shape. Their files are ``.pth.tar`` pickles:
:func:`load_megvii_file` reads them with ``torch.load(weights_only=True)``, which accepts
tensors and plain containers only and never runs pickled code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

from ..models import create_model
from ..models.shufflenet_v2 import REPEATS
from .timm import check_state_dict

MEGVII_MODELS = {f"ShuffleNetV2_{w}": f"shufflenet_v2_x{w.replace('.', '_')[:-1]}_official" for w in ("0.5x", "1.0x", "1.5x", "2.0x")}
_MAIN = {"0": "conv_pw", "1": "bn1", "3": "conv_dw", "4": "bn2", "5": "conv_pwl", "6": "bn3"}
_PROJ = {"0": "conv_dw", "1": "bn1", "2": "conv_pw", "3": "bn2"}


def load_megvii_file(path: str) -> dict[str, torch.Tensor]:
    """The state dict inside a Megvii ``.pth.tar`` (``{"state_dict": ...}`` or a bare state dict)."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path!r} does not hold a state dict of tensors")
    return state


def _block_index(feature: int) -> str:
    for stage, repeats in enumerate(REPEATS):
        if feature < repeats:
            return f"blocks.{stage}.{feature}"
        feature -= repeats
    raise ValueError(f"Megvii ShuffleNetV2 has {sum(REPEATS)} units; got unit {feature + sum(REPEATS)}")


def _rename(key: str) -> str:
    key = key.removeprefix("module.")
    rules = (
        (r"first_conv\.0\.(.+)", lambda m: f"conv_stem.{m[1]}"),
        (r"first_conv\.1\.(.+)", lambda m: f"bn1.{m[1]}"),
        (r"conv_last\.0\.(.+)", lambda m: f"conv_head.{m[1]}"),
        (r"conv_last\.1\.(.+)", lambda m: f"bn2.{m[1]}"),
        (r"classifier\.0\.(.+)", lambda m: f"classifier.{m[1]}"),
        (r"features\.(\d+)\.branch_main\.(\d)\.(.+)", lambda m: f"{_block_index(int(m[1]))}.branch_main.{_MAIN[m[2]]}.{m[3]}"),
        (r"features\.(\d+)\.branch_proj\.(\d)\.(.+)", lambda m: f"{_block_index(int(m[1]))}.branch_proj.{_PROJ[m[2]]}.{m[3]}"),
    )
    for pattern, replace in rules:
        match = re.fullmatch(pattern, key)
        if match:
            try:
                return replace(match)
            except KeyError:
                break
    raise ValueError(f"unexpected key in the Megvii checkpoint: {key!r}")


def from_megvii(name: str, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """A ``shufflenet_v2_x*_official`` model carrying Megvii's weights.

    ``name`` is ours (``shufflenet_v2_x1_0_official``) or theirs (``ShuffleNetV2_1.0x``).
    """
    name = MEGVII_MODELS.get(name, name)
    if name not in MEGVII_MODELS.values():
        raise ValueError(f"no Megvii converter for {name!r}; allowed: {', '.join(MEGVII_MODELS.values())}")
    renamed = {_rename(k): v for k, v in state_dict.items()}
    classifier = renamed.get("classifier.weight")
    model = create_model(name, num_classes=classifier.shape[0] if classifier is not None else 1000)
    check_state_dict(model.state_dict(), renamed, f"Megvii {name}")
    model.load_state_dict(renamed, strict=True)
    return model
