"""Load the ShuffleNetV1 and V2 checkpoints of the authors' release (Megvii's ShuffleNet-Series).

Their networks are ``shufflenet_v1_g{3,8}_x*_official`` and ``shufflenet_v2_x*_official`` here
(their stems, shuffle order and units; 146 M MAdds for V2 1x). Their layer names are
``nn.Sequential`` positions (``features.3.branch_main.5``); this maps them by rule onto ours
and then checks every key and shape. Their files are ``.pth.tar`` pickles:
:func:`load_megvii_file` reads them with ``torch.load(weights_only=True)``, which accepts
tensors and plain containers only and never runs pickled code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

from ..models import create_model
from ..models.shufflenet_v2 import REPEATS  # (4, 8, 4) units per stage in both families
from .files import read_state_dict
from .timm import check_state_dict

_SIZES = ("0.5x", "1.0x", "1.5x", "2.0x")
#: Their names (model size as in their README) -> ours.
MEGVII_MODELS = {
    **{
        f"ShuffleNetV1_group{g}_{w}": f"shufflenet_v1_g{g}_x{w.replace('.', '_')[:-1]}_official"
        for g in (3, 8)
        for w in _SIZES
    },
    **{f"ShuffleNetV2_{w}": f"shufflenet_v2_x{w.replace('.', '_')[:-1]}_official" for w in _SIZES},
}
_V2_MAIN = {"0": "conv_pw", "1": "bn1", "3": "conv_dw", "4": "bn2", "5": "conv_pwl", "6": "bn3"}
_V2_PROJ = {"0": "conv_dw", "1": "bn1", "2": "conv_pw", "3": "bn2"}
# V1 splits its main branch around the shuffle: [1x1 group conv, BN, ReLU, 3x3 dw, BN] and [1x1 group conv, BN].
_V1_MAIN_1 = {"0": "conv_pw", "1": "bn1", "3": "conv_dw", "4": "bn2"}
_V1_MAIN_2 = {"0": "conv_pwl", "1": "bn3"}


def load_megvii_file(path: str) -> dict[str, torch.Tensor]:
    """The state dict inside a Megvii ``.pth.tar`` (``{"state_dict": ...}`` or a bare state dict)."""
    return read_state_dict(path)


def _block_index(feature: int, family: str) -> str:
    for stage, repeats in enumerate(REPEATS):
        if feature < repeats:
            return f"blocks.{stage}.{feature}"
        feature -= repeats
    raise ValueError(f"Megvii {family} has {sum(REPEATS)} units; got unit {feature + sum(REPEATS)}")


def _rename(key: str, family: str) -> str:
    key = key.removeprefix("module.")
    common = (
        (r"first_conv\.0\.(.+)", lambda m: f"conv_stem.{m[1]}"),
        (r"first_conv\.1\.(.+)", lambda m: f"bn1.{m[1]}"),
        (r"classifier\.0\.(.+)", lambda m: f"classifier.{m[1]}"),
    )
    if family == "ShuffleNetV1":
        units = (
            (
                r"features\.(\d+)\.branch_main_1\.(\d)\.(.+)",
                lambda m: f"{_block_index(int(m[1]), family)}.{_V1_MAIN_1[m[2]]}.{m[3]}",
            ),
            (
                r"features\.(\d+)\.branch_main_2\.(\d)\.(.+)",
                lambda m: f"{_block_index(int(m[1]), family)}.{_V1_MAIN_2[m[2]]}.{m[3]}",
            ),
        )
    else:
        units = (
            (r"conv_last\.0\.(.+)", lambda m: f"conv_head.{m[1]}"),
            (r"conv_last\.1\.(.+)", lambda m: f"bn2.{m[1]}"),
            (
                r"features\.(\d+)\.branch_main\.(\d)\.(.+)",
                lambda m: f"{_block_index(int(m[1]), family)}.branch_main.{_V2_MAIN[m[2]]}.{m[3]}",
            ),
            (
                r"features\.(\d+)\.branch_proj\.(\d)\.(.+)",
                lambda m: f"{_block_index(int(m[1]), family)}.branch_proj.{_V2_PROJ[m[2]]}.{m[3]}",
            ),
        )
    for pattern, replace in common + units:
        match = re.fullmatch(pattern, key)
        if match:
            try:
                return replace(match)
            except KeyError:
                break
    raise ValueError(f"unexpected key in the Megvii {family} checkpoint: {key!r}")


def from_megvii(name: str, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """A ``shufflenet_v1_g*_x*_official`` or ``shufflenet_v2_x*_official`` model carrying Megvii's weights.

    ``name`` is ours (``shufflenet_v2_x1_0_official``) or theirs (``ShuffleNetV2_1.0x``,
    ``ShuffleNetV1_group3_1.0x``). The number of classes is read from the classifier.
    Their preprocessing differs from torchvision's: BGR images in 0..255, no mean or std
    (their ``OpencvResize`` / ``ToBGRTensor`` transforms); feed the model what it was trained on.
    """
    name = MEGVII_MODELS.get(name, name)
    if name not in MEGVII_MODELS.values():
        raise ValueError(f"no Megvii converter for {name!r}; allowed: {', '.join(MEGVII_MODELS.values())}")
    family = "ShuffleNetV1" if name.startswith("shufflenet_v1") else "ShuffleNetV2"
    renamed = {_rename(k, family): v for k, v in state_dict.items()}
    classifier = renamed.get("classifier.weight")
    model = create_model(name, num_classes=classifier.shape[0] if classifier is not None else 1000)
    check_state_dict(model.state_dict(), renamed, f"Megvii {family} ({name})")
    model.load_state_dict(renamed, strict=True)
    return model
