"""Block specs: architectures as data.

A network is a stem, a list of stages (each a list of :class:`BlockSpec`) and a head. A spec
has a compact string form that reads like a row of a paper's table::

    ir_r3_k5_s2_e3_c40_se_re    inverted residual, 3 repeats, 5x5 depthwise, first one stride 2,
                                expansion 3, 40 output channels, SE, ReLU
    ds_k3_s1_c16                depthwise separable with linear 1x1 (an expansion-1 inverted residual)
    dsa_k3_s2_c128              MobileNetV1's depthwise separable layer (ReLU after the 1x1 too)
    cn_k1_c960_hs               conv -> BN -> activation
    sv1_r4_s2_c240_g3_ug        ShuffleNetV1 units, groups 3; ``ug``: first 1x1 ungrouped
    sv1o_r4_s2_c240_g3_ug       ShuffleNetV1 units as the authors released them
    sv2_r4_s2_c116              ShuffleNetV2 units (torchvision's downsampling unit)
    sv2o_r4_s2_c116             ShuffleNetV2 units as the authors released them

Tokens: ``r`` repeats (only the first repeat strides), ``k`` kernel, ``s`` stride (1 or 2),
``e`` expansion ratio of the input width, ``c`` output channels, ``g`` groups; flags ``se``
(squeeze-and-excite), ``ug`` (ungrouped first pointwise), and one activation ``re`` (ReLU),
``r6`` (ReLU6) or ``hs`` (h-swish); without one, the network's default applies. Parsing is
strict: an unknown token, a token the block kind does not take, or an invalid value raises
``ValueError``. ``str(spec)`` gives the canonical string and ``BlockSpec.parse`` reads it back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace

from ..layers.activations import ACTIVATIONS

#: Block kind -> the numeric fields and flags it accepts (``c`` is always required).
KINDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "cn": (frozenset("rksc"), frozenset()),
    "ds": (frozenset("rksc"), frozenset({"se"})),
    "dsa": (frozenset("rksc"), frozenset()),
    "ir": (frozenset("rksec"), frozenset({"se"})),
    "sv1": (frozenset("rscg"), frozenset({"ug"})),
    "sv1o": (frozenset("rscg"), frozenset({"ug"})),
    "sv2": (frozenset("rsc"), frozenset()),
    "sv2o": (frozenset("rsc"), frozenset()),
}
KIND_NAMES = {
    "cn": "conv-BN-activation",
    "ds": "depthwise separable (linear 1x1)",
    "dsa": "MobileNetV1 depthwise separable",
    "ir": "inverted residual",
    "sv1": "ShuffleNetV1 unit",
    "sv1o": "ShuffleNetV1 unit, authors' release",
    "sv2": "ShuffleNetV2 unit",
    "sv2o": "ShuffleNetV2 unit, authors' release",
}
_NUMERIC = re.compile(r"^([rksecg])(\d+(?:\.\d+)?)$")
_FIELD_OF = {"r": "repeats", "k": "kernel", "s": "stride", "e": "expand_ratio", "c": "out_chs", "g": "groups"}


@dataclass(frozen=True)
class BlockSpec:
    """One row of an architecture table: ``repeats`` blocks of one kind."""

    kind: str
    out_chs: int
    repeats: int = 1
    kernel: int = 3
    stride: int = 1
    expand_ratio: float = 1.0
    groups: int = 1
    se: bool = False
    act: str | None = None
    first_pw_grouped: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown block kind {self.kind!r}; allowed: {', '.join(KINDS)}")
        numeric, flags = KINDS[self.kind]
        defaults = {f.name: f.default for f in fields(BlockSpec)}
        for token, name in _FIELD_OF.items():
            if token not in numeric and token != "c" and getattr(self, name) != defaults[name]:
                raise ValueError(f"{self.kind} blocks ({KIND_NAMES[self.kind]}) take no {name} ({token!r})")
        if self.se and "se" not in flags:
            raise ValueError(f"{self.kind} blocks ({KIND_NAMES[self.kind]}) take no squeeze-and-excite")
        if not self.first_pw_grouped and "ug" not in flags:
            raise ValueError(f"{self.kind} blocks ({KIND_NAMES[self.kind]}) take no 'ug' flag")
        if self.kind in ("sv1", "sv1o", "sv2", "sv2o") and self.act not in (None, "re"):
            raise ValueError(f"{self.kind} blocks use ReLU; got activation {self.act!r}")
        for name in ("out_chs", "repeats", "kernel", "groups"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd (symmetric padding), got {self.kernel}")
        if self.stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {self.stride!r}")
        if not (isinstance(self.expand_ratio, (int, float)) and 0 < self.expand_ratio < float("inf")):
            raise ValueError(f"expand_ratio must be a positive finite number, got {self.expand_ratio!r}")
        if self.act is not None and self.act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.act!r}; allowed: {', '.join(ACTIVATIONS)}")

    @classmethod
    def parse(cls, text: str) -> BlockSpec:
        """Parse the compact string form, raising ``ValueError`` on anything unknown."""
        if not isinstance(text, str) or not text:
            raise ValueError(f"a block spec is a non-empty string, got {text!r}")
        kind, *tokens = text.split("_")
        if kind not in KINDS:
            raise ValueError(f"block spec {text!r}: unknown kind {kind!r}; allowed: {', '.join(KINDS)}")
        values: dict[str, object] = {}
        for token in tokens:
            match = _NUMERIC.match(token)
            if match:
                key, number = match.groups()
                name = _FIELD_OF[key]
                if name in values:
                    raise ValueError(f"block spec {text!r}: {key!r} given twice")
                if key == "e":
                    values[name] = float(number)
                elif "." in number:
                    raise ValueError(f"block spec {text!r}: {key!r} takes an integer, got {number!r}")
                else:
                    values[name] = int(number)
            elif token == "se":
                values["se"] = True
            elif token == "ug":
                values["first_pw_grouped"] = False
            elif token in ACTIVATIONS:
                if "act" in values:
                    raise ValueError(f"block spec {text!r}: more than one activation")
                values["act"] = token
            else:
                raise ValueError(
                    f"block spec {text!r}: unknown token {token!r}; allowed: r<n> k<n> s<n> e<x> c<n> "
                    f"g<n>, se, ug, and one of {', '.join(ACTIVATIONS)}"
                )
        if "out_chs" not in values:
            raise ValueError(f"block spec {text!r}: output channels 'c<n>' are required")
        try:
            return cls(kind=kind, **values)  # type: ignore[arg-type]
        except ValueError as err:
            raise ValueError(f"block spec {text!r}: {err}") from None

    def __str__(self) -> str:
        parts = [self.kind]
        if self.repeats != 1:
            parts.append(f"r{self.repeats}")
        numeric = KINDS[self.kind][0]
        if "k" in numeric:
            parts.append(f"k{self.kernel}")
        parts.append(f"s{self.stride}")
        if "e" in numeric and self.expand_ratio != 1.0:
            parts.append(f"e{self.expand_ratio:g}")
        parts.append(f"c{self.out_chs}")
        if "g" in numeric:
            parts.append(f"g{self.groups}")
        if self.se:
            parts.append("se")
        if not self.first_pw_grouped:
            parts.append("ug")
        if self.act:
            parts.append(self.act)
        return "_".join(parts)

    def replace(self, **changes: object) -> BlockSpec:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)  # type: ignore[arg-type]


def parse_stages(stages: list[list[str]] | list[list[BlockSpec]]) -> list[list[BlockSpec]]:
    """Parse a table written as lists of spec strings (specs pass through unchanged)."""
    return [[s if isinstance(s, BlockSpec) else BlockSpec.parse(s) for s in stage] for stage in stages]
