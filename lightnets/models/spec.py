"""Architectures as data: block specs and whole-network specs.

A network is a stem, a list of stages (each a list of :class:`BlockSpec`), a head and build
settings: one frozen value, :class:`NetSpec`. A block spec has a compact string form that reads
like a row of a paper's table::

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
``d`` dilation of the kxk conv (default 1, every repeat; see :meth:`NetSpec.with_output_stride`),
``e`` expansion ratio of the input width, ``c`` output channels, ``g`` groups; flags ``se``
(squeeze-and-excite), ``ug`` (ungrouped first pointwise), and one activation ``re`` (ReLU),
``r6`` (ReLU6) or ``hs`` (h-swish); without one, the network's default applies. ``r6`` reads
as six repeats before the ``c`` token and as ReLU6 after it, which is where ``str`` writes each
(``ir_r6_k3_c16_r6``: six ReLU6 blocks).

Two levels. A *table* spec is what a paper prints: ratios (``e``), a width multiplier applied
later, residuals left to the rule "stride 1 and equal widths". :func:`lightnets.models.resolve`
turns it, in one place, into a *resolved* spec in which every width is a channel count and
every choice is stated: one block per spec (no ``r``), ``m<n>`` the block's inner width (the
expansion of an inverted residual, the bottleneck of a ShuffleNet unit), ``se<n>`` the SE
bottleneck width, ``res`` / ``nores`` whether the block adds its input, and the activation.
Nothing downstream rounds a stated width again, so a resolved spec may give any block any
width its layers allow::

    ir_k3_s1_m52_c24_res_r6     a MobileNetV2 block with exactly 52 expansion channels

Parsing is strict: an unknown token, a token the block kind does not take, or an invalid value
raises ``ValueError``. ``str(spec)`` gives the canonical string and ``parse`` reads it back.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, fields, replace

from ..layers.activations import ACTIVATIONS
from ..layers.conv import PADDINGS

#: Block kind -> the numeric fields and flags it accepts (``c`` is always required).
KINDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "cn": (frozenset("rksdc"), frozenset()),
    "ds": (frozenset("rksdc"), frozenset({"se", "res"})),
    "dsa": (frozenset("rksdc"), frozenset()),
    "ir": (frozenset("rksdecm"), frozenset({"se", "res"})),
    "sv1": (frozenset("rscgm"), frozenset({"ug"})),
    "sv1o": (frozenset("rscgm"), frozenset({"ug"})),
    "sv2": (frozenset("rscm"), frozenset()),
    "sv2o": (frozenset("rscm"), frozenset()),
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
#: Kinds whose inner width (``m``) a resolved spec must state.
MID_KINDS = frozenset({"ir", "sv1", "sv1o", "sv2", "sv2o"})
SHUFFLE_KINDS = frozenset({"sv1", "sv1o", "sv2", "sv2o"})
_NUMERIC = re.compile(r"^([rksdecgm])(\d+(?:\.\d+)?(?:e-?\d+)?)$")
_SE_WIDTH = re.compile(r"^se(\d+)$")
_FIELD_OF = {
    "r": "repeats",
    "k": "kernel",
    "s": "stride",
    "d": "dilation",
    "e": "expand_ratio",
    "c": "out_chs",
    "g": "groups",
    "m": "mid_chs",
}


def format_number(value: float) -> str:
    """The shortest text that reads back as the same number (``3.67``, ``6``, ``1e-05``).

    ``repr`` of a float is the shortest string that round-trips exactly, so ``11 / 3`` prints
    ``3.6666666666666665`` rather than a lossy ``3.66667``.
    """
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class BlockSpec:
    """One row of an architecture table (``repeats`` blocks of one kind), or one resolved block.

    ``mid_chs``, ``se_chs`` and ``residual`` are ``None`` in a table row (derived by
    :func:`~lightnets.models.resolve`) and stated in a resolved block. ``dilation`` spaces the
    taps of the block's kxk conv (1: an ordinary conv); it leaves widths, parameters and output
    sizes unchanged.
    """

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
    mid_chs: int | None = None
    se_chs: int | None = None
    residual: bool | None = None
    dilation: int = 1

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
        if self.residual is not None and "res" not in flags:
            raise ValueError(
                f"{self.kind} blocks ({KIND_NAMES[self.kind]}) take no 'res' / 'nores': "
                f"their shortcut is fixed by the kind"
            )
        if self.residual is not None and not isinstance(self.residual, bool):
            raise ValueError(f"residual must be True, False or None, got {self.residual!r}")
        if self.kind in SHUFFLE_KINDS and self.act not in (None, "re"):
            raise ValueError(f"{self.kind} blocks use ReLU; got activation {self.act!r}")
        for name in ("out_chs", "repeats", "kernel", "groups", "dilation"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("mid_chs", "se_chs"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.se_chs is not None and not self.se:
            raise ValueError(f"se_chs={self.se_chs} given for a block without squeeze-and-excite")
        if self.mid_chs is not None and self.expand_ratio != 1.0:
            raise ValueError(
                f"give the expansion as a ratio (e{format_number(self.expand_ratio)}) or as a width "
                f"(m{self.mid_chs}), not both"
            )
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd (symmetric padding), got {self.kernel}")
        if self.dilation > 1 and self.kernel == 1:
            raise ValueError(f"a 1x1 conv has no taps to space: dilation must be 1 with kernel 1, got {self.dilation}")
        if self.stride not in (1, 2) or not _is_int(self.stride):
            raise ValueError(f"stride must be 1 or 2, got {self.stride!r}")
        if isinstance(self.expand_ratio, bool) or not (
            isinstance(self.expand_ratio, (int, float)) and 0 < self.expand_ratio < math.inf
        ):
            raise ValueError(f"expand_ratio must be a positive finite number, got {self.expand_ratio!r}")
        if self.act is not None and self.act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.act!r}; allowed: {', '.join(ACTIVATIONS)}")

    @property
    def is_resolved(self) -> bool:
        """True when every width and choice is stated (what :func:`build` needs no rule for)."""
        return (
            self.repeats == 1
            and self.act is not None
            and (self.kind not in MID_KINDS or self.mid_chs is not None)
            and (not self.se or self.se_chs is not None)
            and ("res" not in KINDS[self.kind][1] or self.residual is not None)
        )

    @classmethod
    def parse(cls, text: str) -> BlockSpec:
        """Parse the compact string form, raising ``ValueError`` on anything unknown."""
        if not isinstance(text, str) or not text:
            raise ValueError(f"a block spec is a non-empty string, got {text!r}")
        kind, *tokens = text.split("_")
        if kind not in KINDS:
            raise ValueError(f"block spec {text!r}: unknown kind {kind!r}; allowed: {', '.join(KINDS)}")
        values: dict[str, object] = {}

        def put(name: str, value: object, token: str) -> None:
            if name in values:
                raise ValueError(f"block spec {text!r}: {token!r} given twice")
            values[name] = value

        for token in tokens:
            numeric, se_width = _NUMERIC.match(token), _SE_WIDTH.match(token)
            if token in ACTIVATIONS and (numeric is None or "out_chs" in values):
                numeric = None  # "r6" after the width is ReLU6, not six repeats
            if numeric:
                key, number = numeric.groups()
                if key == "e":
                    put(_FIELD_OF[key], float(number), key)
                elif "." in number or "e" in number:
                    raise ValueError(f"block spec {text!r}: {key!r} takes an integer, got {number!r}")
                else:
                    put(_FIELD_OF[key], int(number), key)
            elif token == "se":
                put("se", True, "se")
            elif se_width:
                put("se", True, "se")
                values["se_chs"] = int(se_width.group(1))
            elif token == "ug":
                put("first_pw_grouped", False, token)
            elif token in ("res", "nores"):
                put("residual", token == "res", "res/nores")
            elif token in ACTIVATIONS:
                if "act" in values:
                    raise ValueError(f"block spec {text!r}: more than one activation")
                values["act"] = token
            else:
                raise ValueError(
                    f"block spec {text!r}: unknown token {token!r}; allowed: r<n> k<n> s<n> d<n> e<x> c<n> "
                    f"g<n> m<n>, se or se<n>, ug, res or nores, and one of {', '.join(ACTIVATIONS)}"
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
        if self.dilation != 1:
            parts.append(f"d{self.dilation}")
        if "e" in numeric and self.expand_ratio != 1.0:
            parts.append(f"e{format_number(self.expand_ratio)}")
        if self.mid_chs is not None:
            parts.append(f"m{self.mid_chs}")
        parts.append(f"c{self.out_chs}")
        if "g" in numeric:
            parts.append(f"g{self.groups}")
        if self.se:
            parts.append("se" if self.se_chs is None else f"se{self.se_chs}")
        if not self.first_pw_grouped:
            parts.append("ug")
        if self.residual is not None:
            parts.append("res" if self.residual else "nores")
        if self.act:
            parts.append(self.act)
        return "_".join(parts)

    def replace(self, **changes: object) -> BlockSpec:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)  # type: ignore[arg-type]


def parse_stages(stages: list[list[str]] | list[list[BlockSpec]]) -> list[list[BlockSpec]]:
    """Parse a table written as lists of spec strings (specs pass through unchanged)."""
    return [[s if isinstance(s, BlockSpec) else BlockSpec.parse(s) for s in stage] for stage in stages]


@dataclass(frozen=True)
class StemSpec:
    """The stem: one ``cn`` conv (named ``conv_stem``, ``bn1``, ``act1``), then an optional 3x3
    stride-2 max pool (ShuffleNetV1 Table 1, ShuffleNetV2 Table 5)."""

    conv: BlockSpec
    pool: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.conv, BlockSpec) or self.conv.kind != "cn" or self.conv.repeats != 1:
            raise ValueError(f"the stem must be a single 'cn' block spec, got {self.conv}")
        if not isinstance(self.pool, bool):
            raise ValueError(f"stem pool must be True or False, got {self.pool!r}")

    def __str__(self) -> str:
        return f"stem {self.conv}" + (" maxpool" if self.pool else "")


@dataclass(frozen=True)
class HeadSpec:
    """Last conv, global pool, dropout and classifier.

    ``conv_chs`` is the width of the last 1x1 conv (``None``: no conv, MobileNetV1 and
    ShuffleNetV1). With ``pool_first`` it is MobileNetV3's efficient last stage (section 5.1):
    pool, then a 1x1 conv with bias and no BN; otherwise conv-BN-act before the pool.
    """

    conv_chs: int | None = None
    act: str | None = None
    pool_first: bool = False
    dropout: float = 0.0
    num_classes: int = 1000
    bias: bool = True

    def __post_init__(self) -> None:
        if self.conv_chs is not None and (not _is_int(self.conv_chs) or self.conv_chs < 1):
            raise ValueError(f"head conv width must be a positive integer, got {self.conv_chs!r}")
        if self.act is not None and self.act not in ACTIVATIONS:
            raise ValueError(f"unknown head activation {self.act!r}; allowed: {', '.join(ACTIVATIONS)}")
        if self.conv_chs is None and (self.act is not None or self.pool_first):
            raise ValueError("a head without a last conv takes no activation and no pool position")
        if (
            isinstance(self.dropout, bool)
            or not isinstance(self.dropout, (int, float))
            or not 0.0 <= self.dropout < 1.0
        ):
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not _is_int(self.num_classes) or self.num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got {self.num_classes!r}")
        if not isinstance(self.bias, bool) or not isinstance(self.pool_first, bool):
            raise ValueError("head bias and pool_first must be True or False")

    def __str__(self) -> str:
        conv = [] if self.conv_chs is None else [f"conv{self.conv_chs}" + (f"_{self.act}" if self.act else "")]
        order = ["pool", *conv] if self.pool_first else [*conv, "pool"]
        fc = f"fc{self.num_classes}" + ("" if self.bias else "_nobias")
        return " ".join(["head", *order, f"dropout{format_number(self.dropout)}", fc])

    @classmethod
    def parse(cls, text: str) -> HeadSpec:
        words = text.split()
        if not words or words[0] != "head":
            raise ValueError(f"head spec {text!r} must start with 'head'")
        values: dict[str, object] = {}
        seen_pool = False
        for word in words[1:]:
            if word == "pool":
                if seen_pool:
                    raise ValueError(f"head spec {text!r}: 'pool' given twice")
                seen_pool = True
            elif m := re.fullmatch(r"conv(\d+)(?:_(\w+))?", word):
                if "conv_chs" in values or "dropout" in values:
                    raise ValueError(f"head spec {text!r}: one 'conv<n>', before the dropout")
                values["conv_chs"] = int(m.group(1))
                if m.group(2):
                    values["act"] = m.group(2)
                values["pool_first"] = seen_pool
            elif m := re.fullmatch(r"dropout(\d+(?:\.\d+)?(?:e-?\d+)?)", word):
                if "dropout" in values or not seen_pool:
                    raise ValueError(f"head spec {text!r}: one 'dropout<x>', after the pool and before the classifier")
                values["dropout"] = float(m.group(1))
            elif m := re.fullmatch(r"fc(\d+)(_nobias)?", word):
                if not seen_pool:
                    raise ValueError(f"head spec {text!r}: 'pool' (the global average pool) is required before 'fc<n>'")
                if word is not words[-1]:
                    raise ValueError(f"head spec {text!r}: the classifier 'fc<n>' comes last")
                values["num_classes"] = int(m.group(1))
                values["bias"] = m.group(2) is None
            else:
                raise ValueError(
                    f"head spec {text!r}: unknown word {word!r}; allowed: pool, conv<n>[_act], dropout<x>, "
                    f"fc<n>[_nobias]"
                )
        if not seen_pool:
            raise ValueError(f"head spec {text!r}: 'pool' (the global average pool) is required")
        if "num_classes" not in values:
            raise ValueError(f"head spec {text!r}: the classifier 'fc<n>' is required")
        try:
            return cls(**values)  # type: ignore[arg-type]
        except ValueError as err:
            raise ValueError(f"head spec {text!r}: {err}") from None


@dataclass(frozen=True)
class BuildSettings:
    """What every layer shares: input channels, BatchNorm eps and momentum, padding
    (``symmetric`` or TensorFlow's ``tf_same``), the channel divisor widths are rounded to,
    and the activation of blocks that name none."""

    in_chans: int = 3
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    padding: str = "symmetric"
    divisor: int = 8
    act: str = "re"

    def __post_init__(self) -> None:
        if not _is_int(self.in_chans) or self.in_chans < 1:
            raise ValueError(f"in_chans must be an integer >= 1, got {self.in_chans!r}")
        for name in ("bn_eps", "bn_momentum"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
        if self.padding not in PADDINGS:
            raise ValueError(f"padding must be one of {', '.join(PADDINGS)}, got {self.padding!r}")
        if not _is_int(self.divisor) or self.divisor < 1:
            raise ValueError(f"divisor must be an integer >= 1, got {self.divisor!r}")
        if self.act not in ACTIVATIONS:
            raise ValueError(f"unknown default activation {self.act!r}; allowed: {', '.join(ACTIVATIONS)}")

    def __str__(self) -> str:
        return (
            f"settings in_chans={self.in_chans} bn_eps={format_number(self.bn_eps)} "
            f"bn_momentum={format_number(self.bn_momentum)} padding={self.padding} divisor={self.divisor} "
            f"act={self.act}"
        )

    @classmethod
    def parse(cls, text: str) -> BuildSettings:
        words = text.split()
        if not words or words[0] != "settings":
            raise ValueError(f"settings {text!r} must start with 'settings'")
        kinds = {f.name: f.type for f in fields(cls)}
        values: dict[str, object] = {}
        for word in words[1:]:
            key, sep, value = word.partition("=")
            if not sep or key not in kinds:
                raise ValueError(
                    f"settings {text!r}: unknown item {word!r}; allowed: {', '.join(f'{k}=...' for k in kinds)}"
                )
            if key in values:
                raise ValueError(f"settings {text!r}: {key!r} given twice")
            try:
                values[key] = int(value) if kinds[key] == "int" else float(value) if kinds[key] == "float" else value
            except ValueError:
                raise ValueError(f"settings {text!r}: {key} takes a number, got {value!r}") from None
        try:
            return cls(**values)  # type: ignore[arg-type]
        except ValueError as err:
            raise ValueError(f"settings {text!r}: {err}") from None


@dataclass(frozen=True)
class NetSpec:
    """A whole network as one value: stem, stages of blocks, head and build settings.

    ``str(spec)`` is one line, parts joined by ``" | "``; :meth:`lines` gives one part per
    line; :meth:`parse` reads either. :meth:`to_json` / :meth:`from_json` give the same value
    as JSON. Both round-trips are exact.
    """

    stem: StemSpec
    stages: tuple[tuple[BlockSpec, ...], ...]
    head: HeadSpec = HeadSpec()
    settings: BuildSettings = BuildSettings()

    def __post_init__(self) -> None:
        stages = tuple(tuple(stage) for stage in self.stages)
        object.__setattr__(self, "stages", stages)
        if not stages or any(not stage for stage in stages):
            raise ValueError("a network needs at least one stage, and every stage at least one block")
        for stage in stages:
            for block in stage:
                if not isinstance(block, BlockSpec):
                    raise ValueError(f"stages hold BlockSpecs, got {block!r}")
        for name, cls in (("stem", StemSpec), ("head", HeadSpec), ("settings", BuildSettings)):
            if not isinstance(getattr(self, name), cls):
                raise ValueError(f"{name} must be a {cls.__name__}, got {getattr(self, name)!r}")
        if self.is_resolved:
            chs = self.stem.conv.out_chs
            for name, block in self.blocks():
                check_block_widths(name, block, chs)
                chs = block.out_chs

    @property
    def is_resolved(self) -> bool:
        """True when every width is a channel count and every choice stated (see :func:`resolve`)."""
        return (
            self.stem.conv.act is not None
            and (self.head.conv_chs is None or self.head.act is not None)
            and all(b.is_resolved for stage in self.stages for b in stage)
        )

    def blocks(self) -> list[tuple[str, BlockSpec]]:
        """``(module path, spec)`` for every block of a resolved spec: ``blocks.i.j``."""
        self.require_resolved("blocks()")
        return [(f"blocks.{i}.{j}", b) for i, stage in enumerate(self.stages) for j, b in enumerate(stage)]

    def require_resolved(self, what: str) -> None:
        if not self.is_resolved:
            raise ValueError(
                f"{what} needs a resolved NetSpec (one block per spec, every width and residual stated); "
                f"call lightnets.models.resolve(spec) first"
            )

    def lines(self) -> list[str]:
        """One part per line: ``stem ...``, one line per stage, ``head ...``, ``settings ...``."""
        return [
            str(self.stem),
            *(" ".join(map(str, stage)) for stage in self.stages),
            str(self.head),
            str(self.settings),
        ]

    def __str__(self) -> str:
        return " | ".join(self.lines())

    @classmethod
    def parse(cls, text: str) -> NetSpec:
        """Read the string form (parts separated by ``|`` or new lines)."""
        if not isinstance(text, str):
            raise ValueError(f"a network spec is a string, got {type(text).__name__}")
        parts = [p.strip() for p in re.split(r"[|\n]", text) if p.strip()]
        if not parts or not parts[0].startswith("stem"):
            raise ValueError(f"a network spec starts with 'stem <cn block> [maxpool]', got {text[:60]!r}")
        stem = _parse_stem(parts[0])
        settings = BuildSettings()
        if parts[-1].split()[0] == "settings":
            settings = BuildSettings.parse(parts.pop())
        if len(parts) < 3 or parts[-1].split()[0] != "head":
            raise ValueError(
                "a network spec is 'stem ... | <stage> | ... | head ... [| settings ...]': no head or no stage"
            )
        head = HeadSpec.parse(parts[-1])
        stages = []
        for part in parts[1:-1]:
            if part.split()[0] in ("stem", "head", "settings"):
                raise ValueError(
                    f"{part.split()[0]!r} is out of place in {text[:80]!r}: order is stem, stages, head, settings"
                )
            stages.append(tuple(BlockSpec.parse(word) for word in part.split()))
        return cls(stem=stem, stages=tuple(stages), head=head, settings=settings)

    def to_dict(self) -> dict:
        return {
            "stem": {"conv": str(self.stem.conv), "pool": self.stem.pool},
            "stages": [[str(b) for b in stage] for stage in self.stages],
            "head": asdict(self.head),
            "settings": asdict(self.settings),
        }

    def to_json(self, indent: int | None = None) -> str:
        """JSON with the blocks in their string form, the head and settings as objects."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict) -> NetSpec:
        if not isinstance(data, dict) or set(data) != {"stem", "stages", "head", "settings"}:
            keys = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"a network spec object has exactly the keys head, settings, stages, stem; got {keys}")
        stem = data["stem"]
        if not isinstance(stem, dict) or set(stem) - {"conv", "pool"} or "conv" not in stem:
            raise ValueError(f"stem must be an object with 'conv' (a block string) and 'pool', got {stem!r}")
        for part in ("head", "settings"):
            if not isinstance(data[part], dict):
                raise ValueError(f"{part} must be an object of fields, got {data[part]!r}")
            for key, value in data[part].items():
                if not isinstance(value, (int, float, str, bool, type(None))):
                    raise ValueError(f"{part}.{key} must be a number, a string, true/false or null, got {value!r}")
        stages = data["stages"]
        if not isinstance(stages, list) or not all(
            isinstance(stage, list) and all(isinstance(b, str) for b in stage) for stage in stages
        ):
            raise ValueError(f"stages must be a list of lists of block strings, got {stages!r:.80}")
        try:
            head = HeadSpec(**data["head"])
            settings = BuildSettings(**data["settings"])
        except TypeError as err:
            raise ValueError(f"unknown head or settings field: {err}") from None
        return cls(
            stem=StemSpec(BlockSpec.parse(stem["conv"]), stem.get("pool", False)),
            stages=tuple(tuple(BlockSpec.parse(b) for b in stage) for stage in stages),
            head=head,
            settings=settings,
        )

    @classmethod
    def from_json(cls, text: str) -> NetSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"not a JSON network spec: {err}") from None
        return cls.from_dict(data)

    def replace(self, **changes: object) -> NetSpec:
        """A copy with some parts changed (validated again)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def replace_block(self, stage: int, index: int, **changes: object) -> NetSpec:
        """A copy with block ``blocks.{stage}.{index}`` changed, e.g. ``replace_block(2, 1, mid_chs=52)``."""
        try:
            block = self.stages[stage][index]
        except (IndexError, TypeError):
            raise ValueError(f"no block blocks.{stage}.{index} in this spec") from None
        stages = [list(s) for s in self.stages]
        stages[stage][index] = block.replace(**changes)
        return self.replace(stages=tuple(tuple(s) for s in stages))

    def with_output_stride(self, output_stride: int) -> NetSpec:
        """This network with its feature maps kept at ``1 / output_stride`` of the input size.

        Every block that would reduce further strides 1 and dilates its kxk conv by the strides
        skipped so far instead (atrous convolution, DeepLab), so widths and parameters are
        unchanged and the later blocks see the same context at a finer resolution. MobileNetV3
        (section 6.3) segments at output stride 16 this way. The block whose stride is removed
        already takes the new rate, as torchvision's ``mobilenet_v3_large(dilated=True)`` (the
        LR-ASPP backbone) does; DeepLab's TF reference and torchvision's ResNets give that one
        block the previous rate. 1x1 convs keep dilation 1 (spacing one tap changes nothing)
        and stated residuals are kept: a block that strode had none. ``output_stride`` must be a
        reduction the network reaches; at the network's own final stride the spec is unchanged.
        ShuffleNet units take no dilation, so a ShuffleNet can only keep its own output stride.
        """
        self.require_resolved("with_output_stride")
        reduction = self.stem.conv.stride * (2 if self.stem.pool else 1)
        reachable = [reduction]
        for _, block in self.blocks():
            reachable.append(reachable[-1] * block.stride)
        if isinstance(output_stride, bool) or output_stride not in reachable:
            raise ValueError(
                f"output_stride must be a reduction this network reaches, one of {sorted(set(reachable))}; "
                f"got {output_stride!r}"
            )
        rate = 1
        stages = []
        for i, stage in enumerate(self.stages):
            blocks = []
            for j, block in enumerate(stage):
                if reduction * block.stride > output_stride:
                    rate *= block.stride
                    block = block.replace(stride=1)
                else:
                    reduction *= block.stride
                if rate > 1 and block.kernel > 1:
                    if "d" not in KINDS[block.kind][0]:
                        raise ValueError(
                            f"blocks.{i}.{j} ({block}): {KIND_NAMES[block.kind]}s take no dilation, so this network "
                            f"cannot keep output stride {output_stride}; allowed: {sorted(set(reachable))[-1]}"
                        )
                    block = block.replace(dilation=block.dilation * rate)
                blocks.append(block)
            stages.append(tuple(blocks))
        return self.replace(stages=tuple(stages))


def read_spec(source: str) -> NetSpec:
    """A network spec from a file (JSON, or the string form, one part per line) or a string.

    An existing file is read; otherwise the string must be a spec (starting with ``stem`` or
    ``{``).
    """
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"a network spec is a file path or a spec string, got {source!r}")
    text = source
    if os.path.isfile(source):
        with open(source, encoding="utf-8-sig") as fh:  # -sig: a byte-order mark is not part of the spec
            text = fh.read()
    elif not source.lstrip().startswith(("stem", "{")):
        raise ValueError(f"{source!r} is neither a network spec (starting with 'stem' or '{{') nor a file")
    return NetSpec.from_json(text) if text.lstrip().startswith("{") else NetSpec.parse(text)


def check_block_widths(name: str, block: BlockSpec, in_chs: int) -> None:
    """Raise if a resolved block's widths break its layers' rules, naming the block.

    Residuals are stated (``res``): one needs stride 1 and ``in == out``. ShuffleNet units fix
    their shortcut by kind: a stride-1 unit adds (V1) or concatenates (V2) its input, so it keeps
    its width; V1's grouped 1x1 convs need widths divisible by ``g`` (section 3.2) and a V2
    unit's channel split needs even widths (section 3, Figure 3).
    """

    def fail(why: str) -> None:
        raise ValueError(f"{name} ({block}) with {in_chs} input channels: {why}")

    if block.residual and (block.stride != 1 or in_chs != block.out_chs):
        fail(
            f"states a residual ('res') but its input is {in_chs} channels and its output {block.out_chs} "
            f"at stride {block.stride}; a residual needs stride 1 and equal widths (or say 'nores')"
        )
    if block.kind in SHUFFLE_KINDS and block.stride == 1 and in_chs != block.out_chs:
        fail(f"a stride-1 ShuffleNet unit keeps its width, but {in_chs} != {block.out_chs}")
    if block.kind in ("sv1", "sv1o"):
        g = block.groups
        branch = block.out_chs - in_chs if block.stride == 2 else block.out_chs
        if block.first_pw_grouped and in_chs % g:
            fail(f"input width {in_chs} must be a multiple of groups={g} (grouped first 1x1)")
        if block.mid_chs % g:
            fail(f"bottleneck width m{block.mid_chs} must be a multiple of groups={g}")
        if branch < 1 or branch % g:
            fail(
                f"its branch gives {branch} channels (output minus input at stride 2), "
                f"which must be a positive multiple of groups={g}"
            )
    if block.kind in ("sv2", "sv2o"):
        if block.out_chs % 2 or in_chs % 2 and block.stride == 1:
            fail("a ShuffleNetV2 unit splits and concatenates halves: widths must be even")
        if block.kind == "sv2o" and block.stride == 2 and block.out_chs <= in_chs:
            fail("the authors' stride-2 unit keeps its input on one branch, so its output must be wider than its input")


def _parse_stem(text: str) -> StemSpec:
    words = text.split()
    if words[0] != "stem" or len(words) not in (2, 3) or (len(words) == 3 and words[2] != "maxpool"):
        raise ValueError(f"stem {text!r}: expected 'stem <cn block spec> [maxpool]'")
    try:
        return StemSpec(BlockSpec.parse(words[1]), pool=len(words) == 3)
    except ValueError as err:
        raise ValueError(f"stem {text!r}: {err}") from None
