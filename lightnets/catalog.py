"""The names of the model zoo: the families, their papers and tasks, and every registered name
with the options it fixes.

Plain data without torch, so that ``lightnets models`` can list the zoo, and ``lightnets
--help`` can name the families, without importing torch (seconds) or building a network. The
registry in :mod:`lightnets.models.registry` builds its entries from :data:`ENTRIES`; the
ShuffleNet widths and groups below are the models' own tables' keys, which
tests/test_models.py checks.
"""

from __future__ import annotations

from typing import Any

#: Family name -> its paper.
PAPERS: dict[str, str] = {
    "mobilenet_v1": "MobileNets (Howard et al., 2017), arXiv:1704.04861",
    "mobilenet_v2": "MobileNetV2 (Sandler et al., 2018), arXiv:1801.04381",
    "mobilenet_v3_large": "Searching for MobileNetV3 (Howard et al., 2019), arXiv:1905.02244",
    "mobilenet_v3_small": "Searching for MobileNetV3 (Howard et al., 2019), arXiv:1905.02244",
    "shufflenet_v1": "ShuffleNet (Zhang et al., 2018), arXiv:1707.01083",
    "shufflenet_v2": "ShuffleNet V2 (Ma et al., 2018), arXiv:1807.11164",
    "lraspp_mobilenet_v3_large": "Searching for MobileNetV3 (Howard et al., 2019), arXiv:1905.02244, section 6.3",
    "lraspp_mobilenet_v3_small": "Searching for MobileNetV3 (Howard et al., 2019), arXiv:1905.02244, section 6.3",
    "ssdlite_mobilenet_v3_large": "Searching for MobileNetV3 (Howard et al., 2019), arXiv:1905.02244, section 6.2",
    "ssdlite_mobilenet_v3_small": "Searching for MobileNetV3 (Howard et al., 2019), arXiv:1905.02244, section 6.2",
    "ssdlite_mobilenet_v2": "MobileNetV2 (Sandler et al., 2018), arXiv:1801.04381, section 6.2",
}
FAMILY_NAMES: tuple[str, ...] = tuple(PAPERS)
TASKS = ("classification", "segmentation", "detection")
#: Family -> what its models output: class logits (N, classes), per-pixel logits (N, classes, H, W),
#: or per-anchor box codes and class logits ((N, A, 4), (N, A, classes)).
#: The built-in digit scenes (``lightnets.train.digit_scenes``): data name -> the task it trains.
SCENE_DATA = {"digit-detection": "detection", "digit-segmentation": "segmentation"}
SCENE_CANVAS = 128  # the scenes' side in pixels, and their default training resolution
TASK_OF_FAMILY: dict[str, str] = {
    family: "segmentation" if family.startswith("lraspp_") else "detection" if family.startswith("ssdlite_")
    else "classification"
    for family in PAPERS
}

SHUFFLENET_V1_GROUPS = (1, 2, 3, 4, 8)  # Table 1's columns
SHUFFLENET_V1_SCALES = (0.25, 0.5, 1.0, 1.5, 2.0)  # Table 2's scale factors s
SHUFFLENET_V1_OFFICIAL_GROUPS = (3, 8)  # the authors' released groups
SHUFFLENET_V1_OFFICIAL_WIDTHS = (0.5, 1.0, 1.5, 2.0)
SHUFFLENET_V2_WIDTHS = (0.5, 1.0, 1.5, 2.0)  # Table 5's columns


def _width_suffix(width: float) -> str:
    """1.0 -> '100', 0.75 -> '075' (timm's naming of width multipliers)."""
    return f"{round(width * 100):03d}"


def _shufflenet_suffix(width: float) -> str:
    """0.5 -> 'x0_5' (torchvision's naming)."""
    return "x" + f"{width:g}".replace(".", "_") + ("_0" if float(width).is_integer() else "")


def _entries() -> list[tuple[str, str, dict[str, Any]]]:
    entries: list[tuple[str, str, dict[str, Any]]] = [(family, family, {}) for family in PAPERS]
    for w in (1.0, 0.75, 0.5, 0.25):
        entries.append((f"mobilenet_v1_{_width_suffix(w)}", "mobilenet_v1", {"width_mult": w}))
    for w in (1.4, 1.0, 0.75, 0.5, 0.35):
        entries.append((f"mobilenet_v2_{_width_suffix(w)}", "mobilenet_v2", {"width_mult": w}))
    for size, widths in (("large", (1.0, 0.75)), ("small", (1.0, 0.75, 0.5))):
        for w in widths:
            entries.append((f"mobilenet_v3_{size}_{_width_suffix(w)}", f"mobilenet_v3_{size}", {"width_mult": w}))
        entries.append((f"mobilenet_v3_{size}_minimal", f"mobilenet_v3_{size}", {"width_mult": 1.0, "minimal": True}))
    for g in SHUFFLENET_V1_GROUPS:
        for w in SHUFFLENET_V1_SCALES:
            entries.append((f"shufflenet_v1_g{g}_{_shufflenet_suffix(w)}", "shufflenet_v1",
                            {"groups": g, "width_mult": w}))
    for g in SHUFFLENET_V1_OFFICIAL_GROUPS:
        for w in SHUFFLENET_V1_OFFICIAL_WIDTHS:
            entries.append((f"shufflenet_v1_g{g}_{_shufflenet_suffix(w)}_official", "shufflenet_v1",
                            {"groups": g, "width_mult": w, "official": True}))
    for w in SHUFFLENET_V2_WIDTHS:
        entries.append((f"shufflenet_v2_{_shufflenet_suffix(w)}", "shufflenet_v2", {"width_mult": w}))
    for w in SHUFFLENET_V2_WIDTHS:
        entries.append((f"shufflenet_v2_{_shufflenet_suffix(w)}_official", "shufflenet_v2",
                        {"width_mult": w, "official": True}))
    # torchvision's name and exact layout (the family's defaults, fixed)
    entries.append(("ssdlite320_mobilenet_v3_large", "ssdlite_mobilenet_v3_large",
                    {"width_mult": 1.0, "reduced_tail": True}))
    return entries


#: Every registered model as (name, family, the options its name fixes), families first.
ENTRIES: tuple[tuple[str, str, dict[str, Any]], ...] = tuple(_entries())


def model_names(family: str | None = None, task: str | None = None) -> list[str]:
    """Registered model names (of one family, of one of :data:`TASKS`), in registration order."""
    if family is not None and family not in PAPERS:
        raise ValueError(f"unknown family {family!r}; allowed: {', '.join(PAPERS)}")
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; allowed: {', '.join(TASKS)}")
    return [
        name for name, fam, _ in ENTRIES
        if (family is None or fam == family) and (task is None or TASK_OF_FAMILY[fam] == task)
    ]


def task_of(name: str) -> str:
    """What a registered model outputs: one of :data:`TASKS`."""
    return TASK_OF_FAMILY[family_of(name)]


def family_of(name: str) -> str:
    for entry_name, family, _ in ENTRIES:
        if entry_name == name:
            return family
    raise ValueError(f"unknown model {name!r}; allowed: {', '.join(n for n, _, _ in ENTRIES)}")
