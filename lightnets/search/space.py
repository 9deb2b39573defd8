"""A factorised, hierarchical search space over a base network, as data (MnasNet section 4.1).

MnasNet (Tan et al. 2019, arXiv:1807.11626, section 4.1) splits a network into blocks and
searches each block's operations and layer count independently: "we search for the operations
and connections for each block separately", so layers may differ between blocks while the
space stays small. Here a block is one stage of a base network (MobileNetV3-Large or -Small
by default, any :class:`~lightnets.models.NetSpec` otherwise), and each stage chooses, for all
of its blocks together:

- ``kind``: inverted residual (``ir``), depthwise separable (``ds``), or ``skip``: every
  repeat of the stage is a skip op (MnasNet's "SkipOp"), so the stage keeps only its first
  block, in the base's kind; the first block is never skipped because it carries the stage's
  stride and width change;
- ``kernel`` of the depthwise conv: 3, 5 or 7;
- ``expansion`` of an inverted residual: ``base`` (each block keeps the base's own ratio,
  which is how MobileNetV3's 4.5 / 3.67 / 2.5 / 2.3 stay reachable), 3, 4 or 6;
- ``se`` on or off; activation ``act``: ReLU (``re``) or h-swish (``hs``);
- ``repeats``: the base stage's block count -1, 0 or +1 (never below one block; repeats
  are dropped from the end and added as copies of the last block, at stride 1);
- ``width``: x0.75, x1 or x1.25 of the base's output widths, rounded with the project's
  ``make_divisible`` (to the spec's divisor, 8) in the table-level spec, before
  :func:`~lightnets.models.resolve`, which is the one place widths are rounded.

Choices that do not apply are not asked (a ``ds`` stage has no expansion, a ``skip`` stage no
repeats), so the space is conditional; :meth:`SearchSpace.size` counts distinct choice
vectors. Where rounding to 8 merges two widths (x0.75 and x1 of 24 channels both give 24) two
vectors give the same network; they are few and are not merged. Stages that are not made of
``ir`` / ``ds`` blocks (MobileNetV3's last 1x1 conv stage, ShuffleNet units) stay as they are,
as do the stem and head.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields

from ..layers import ACTIVATIONS, make_divisible
from ..models import BlockSpec, NetSpec, create_model, list_models, resolve

KINDS = ("ir", "ds", "skip")
ACTS = ("re", "hs")
SEARCHED_KINDS = frozenset({"ir", "ds"})


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class StageOptions:
    """The options one stage may choose from (each a tuple of allowed values)."""

    kinds: tuple[str, ...] = KINDS
    kernels: tuple[int, ...] = (3, 5, 7)
    expansions: tuple[str | float, ...] = ("base", 3, 4, 6)
    se: tuple[bool, ...] = (False, True)
    acts: tuple[str, ...] = ACTS
    repeats: tuple[int, ...] = (-1, 0, 1)
    widths: tuple[float, ...] = (0.75, 1.0, 1.25)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (tuple, list)) or not value:
                raise ValueError(f"stage option {f.name!r} must be a non-empty tuple of choices, got {value!r}")
            object.__setattr__(self, f.name, tuple(value))
            if len(set(value)) != len(value):
                raise ValueError(f"stage option {f.name!r} lists a choice twice: {value!r}")
        if unknown := [k for k in self.kinds if k not in KINDS]:
            raise ValueError(f"unknown block kinds {unknown}; allowed: {', '.join(KINDS)}")
        if bad := [k for k in self.kernels if not _is_int(k) or k < 1 or k % 2 == 0]:
            raise ValueError(f"kernels must be odd positive integers, got {bad}")
        for e in self.expansions:
            if e != "base" and (isinstance(e, bool) or not isinstance(e, (int, float)) or not e >= 1):
                raise ValueError(f"expansions are 'base' or ratios >= 1, got {e!r}")
        if bad := [s for s in self.se if not isinstance(s, bool)]:
            raise ValueError(f"se choices are True / False, got {bad}")
        if unknown := [a for a in self.acts if a not in ACTIVATIONS]:
            raise ValueError(f"unknown activations {unknown}; allowed: {', '.join(ACTIVATIONS)}")
        if bad := [r for r in self.repeats if not _is_int(r)]:
            raise ValueError(f"repeats are integer changes of the base's block count (-1, 0, 1), got {bad}")
        if bad := [w for w in self.widths if isinstance(w, bool) or not isinstance(w, (int, float)) or not w > 0]:
            raise ValueError(f"widths are multipliers > 0 of the base's widths, got {bad}")

    def for_depth(self, depth: int) -> StageOptions:
        """These options for a stage of ``depth`` base blocks: no repeat change below one block,
        and no ``skip`` where there is no repeat to skip (it would equal ``repeats`` 0)."""
        repeats = tuple(r for r in self.repeats if depth + r >= 1)
        kinds = tuple(k for k in self.kinds if k != "skip" or depth > 1)
        if not repeats or not kinds:
            raise ValueError(f"no allowed repeats or kinds for a stage of {depth} block(s): {self}")
        return StageOptions(kinds, self.kernels, self.expansions, self.se, self.acts, repeats, self.widths)

    def to_dict(self) -> dict:
        return {f.name: list(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> StageOptions:
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or set(data) - names:
            raise ValueError(f"stage options are an object with keys among {sorted(names)}, got {data!r}")
        return cls(**{k: tuple(v) for k, v in data.items()})


@dataclass(frozen=True)
class StageChoice:
    """One stage's choices. ``expansion`` is None where it does not apply (``ds``, or a
    ``skip`` stage whose first block is depthwise separable); ``repeats`` is 0 for ``skip``."""

    kind: str
    kernel: int
    expansion: str | float | None
    se: bool
    act: str
    repeats: int
    width: float

    def __str__(self) -> str:
        parts = [self.kind, f"k{self.kernel}"]
        if self.expansion is not None:
            parts.append(f"e{self.expansion}")
        parts += ["se" if self.se else "nose", self.act]
        if self.kind != "skip":
            parts.append(f"r{self.repeats:+d}")
        parts.append(f"x{self.width:g}")
        return "_".join(parts)


Choices = tuple  # one StageChoice per stage, None for a stage that is not searched


def _expand_rows(stage: Iterable[BlockSpec]) -> list[BlockSpec]:
    """A table stage as one row per block: only a row's first repeat keeps its stride."""
    blocks = []
    for row in stage:
        for repeat in range(row.repeats):
            blocks.append(row.replace(repeats=1, stride=row.stride if repeat == 0 else 1))
    return blocks


def table_of(spec: NetSpec) -> NetSpec:
    """``spec`` as a table (ratios, no stated inner widths or residuals), one row per block.

    A resolved spec's expansions become ratios of their actual input (``mid / in``), which
    :func:`~lightnets.models.resolve` turns back into the same widths where they are multiples
    of the divisor (every registered MobileNet's are); SE widths and residuals are left to
    resolve's rules again, since a searched block's widths change under them. (An inverted
    residual whose expansion equals its input, ratio 1, would come back depthwise separable, as
    resolve reads ``e1``; no registered network has one.)
    """
    if not spec.is_resolved:
        return spec.replace(stages=tuple(tuple(_expand_rows(stage)) for stage in spec.stages))
    chs = spec.stem.conv.out_chs
    stages = []
    for stage in spec.stages:
        rows = []
        for block in stage:
            changes: dict[str, object] = {"se_chs": None}
            if block.kind in ("ir", "ds"):
                changes["residual"] = None
            if block.kind == "ir":
                changes.update(mid_chs=None, expand_ratio=block.mid_chs / chs)
            elif block.mid_chs is not None:
                changes["mid_chs"] = block.mid_chs  # ShuffleNet bottlenecks: not searched, kept
            rows.append(block.replace(**changes))
            chs = block.out_chs
        stages.append(tuple(rows))
    return spec.replace(stages=tuple(stages))


def base_spec(base: str | NetSpec, num_classes: int | None = None) -> NetSpec:
    """The base network of a space: a registered model's spec or a NetSpec, with ``num_classes``."""
    if isinstance(base, str):
        if base not in list_models(task="classification"):
            raise ValueError(f"unknown base network {base!r}: give a registered classifier's name or a NetSpec")
        base = create_model(base).spec
    if not isinstance(base, NetSpec):
        raise ValueError(f"the base network is a registered model name or a NetSpec, got {type(base).__name__}")
    if num_classes is not None:
        from dataclasses import replace

        base = base.replace(head=replace(base.head, num_classes=num_classes))
    return base


@dataclass(frozen=True)
class SearchSpace:
    """The space of networks around ``base``: per stage, the :class:`StageOptions` it may
    choose from (None: the stage is kept as it is). Build with :meth:`around`."""

    base: NetSpec
    stages: tuple[StageOptions | None, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.base, NetSpec):
            raise ValueError(f"base must be a NetSpec, got {type(self.base).__name__}")
        object.__setattr__(self, "stages", tuple(self.stages))
        table = table_of(self.base)
        if len(self.stages) != len(table.stages):
            raise ValueError(f"the space lists {len(self.stages)} stages, the base has {len(table.stages)}")
        for i, (options, stage) in enumerate(zip(self.stages, table.stages, strict=True)):
            if options is None:
                continue
            if not isinstance(options, StageOptions):
                raise ValueError(f"stage {i}: options must be StageOptions or None, got {options!r}")
            if kinds := {b.kind for b in stage} - SEARCHED_KINDS:
                raise ValueError(f"stage {i} has {sorted(kinds)} blocks; only ir / ds stages can be searched")
            if options != options.for_depth(len(stage)):
                raise ValueError(f"stage {i} ({len(stage)} blocks): options {options} allow repeats or a skip "
                                 f"its depth does not; use StageOptions.for_depth")

    @classmethod
    def around(cls, base: str | NetSpec = "mobilenet_v3_small", options: StageOptions | None = None,
               num_classes: int | None = None) -> SearchSpace:
        """Every stage of ``base`` made of inverted residual / depthwise separable blocks searched
        with ``options`` (default: the full :class:`StageOptions`), the others kept."""
        options = options or StageOptions()
        spec = base_spec(base, num_classes)
        table = table_of(spec)
        return cls(spec, tuple(
            options.for_depth(len(stage)) if {b.kind for b in stage} <= SEARCHED_KINDS else None
            for stage in table.stages
        ))

    # ---- the space ------------------------------------------------------------------

    @property
    def table(self) -> NetSpec:
        return table_of(self.base)

    def stage_combinations(self, i: int) -> Iterator[StageChoice]:
        """Every distinct choice of stage ``i`` (inactive choices collapsed)."""
        options, first = self.stages[i], self.table.stages[i][0]
        if options is None:
            return
        for kind in options.kinds:
            first_kind = first.kind if kind == "skip" else kind
            expansions = options.expansions if first_kind == "ir" else (None,)
            repeats = options.repeats if kind != "skip" else (0,)
            for kernel, expansion, se, act, rep, width in itertools.product(
                options.kernels, expansions, options.se, options.acts, repeats, options.widths
            ):
                yield StageChoice(kind, kernel, expansion, se, act, rep, width)

    def size(self) -> int:
        """How many distinct choice vectors the space has (product over the searched stages)."""
        total = 1
        for i, options in enumerate(self.stages):
            if options is not None:
                total *= sum(1 for _ in self.stage_combinations(i))
        return total

    def base_network(self) -> NetSpec:
        """The base network, resolved (what :meth:`base_choices` gives back)."""
        return resolve(self.base)

    def base_choices(self) -> Choices:
        """The choice vector that gives the base network back (where its stages are uniform)."""
        return self.choices_of(resolve(self.base))

    # ---- candidates -------------------------------------------------------------------

    def sample(self, count: int, seed: int = 0) -> list[NetSpec]:
        """``count`` candidates drawn as random search draws them (:meth:`suggest` with every
        choice uniform, inactive ones not drawn), from ``seed``: e.g. networks to calibrate a
        latency table on that look like the ones a search will ask it about."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"count must be an integer >= 0, got {count!r}")
        rng = random.Random(seed)

        class Draw:  # the part of an Optuna trial that suggest() asks
            @staticmethod
            def suggest_categorical(name: str, options):
                return rng.choice(list(options))

        return [self.candidate(self.suggest(Draw())) for _ in range(count)]

    def candidate(self, choices: Choices) -> NetSpec:
        """The resolved network of one choice vector (one entry per stage, None where not searched)."""
        table = self.table
        if not isinstance(choices, tuple) or len(choices) != len(self.stages):
            raise ValueError(f"choices are a tuple of {len(self.stages)} stage choices (None where a stage is not "
                             f"searched), got {choices!r:.200}")
        stages = []
        for i, (options, choice, stage) in enumerate(zip(self.stages, choices, table.stages, strict=True)):
            if options is None:
                if choice is not None:
                    raise ValueError(f"stage {i} is not searched; its choice must be None, got {choice}")
                stages.append(tuple(stage))
                continue
            self._check_choice(i, options, stage, choice)
            stages.append(tuple(self._stage_blocks(stage, choice, table.settings.divisor)))
        return resolve(table.replace(stages=tuple(stages)))

    def _check_choice(self, i: int, options: StageOptions, stage: tuple[BlockSpec, ...], choice: object) -> None:
        if not isinstance(choice, StageChoice):
            raise ValueError(f"stage {i}: expected a StageChoice, got {choice!r}")
        allowed = {
            "kind": options.kinds, "kernel": options.kernels, "se": options.se, "act": options.acts,
            "width": options.widths,
        }
        for name, values in allowed.items():
            if getattr(choice, name) not in values:
                raise ValueError(f"stage {i}: {name} {getattr(choice, name)!r} is not in the space; allowed: {values}")
        first_kind = stage[0].kind if choice.kind == "skip" else choice.kind
        expansions = options.expansions if first_kind == "ir" else (None,)
        if choice.expansion not in expansions:
            raise ValueError(f"stage {i} ({choice.kind}): expansion {choice.expansion!r} is not allowed; allowed: "
                             f"{expansions}")
        repeats = options.repeats if choice.kind != "skip" else (0,)
        if choice.repeats not in repeats:
            raise ValueError(f"stage {i} ({choice.kind}): repeats {choice.repeats!r} not allowed; allowed: {repeats}")

    @staticmethod
    def _stage_blocks(stage: tuple[BlockSpec, ...], choice: StageChoice, divisor: int) -> list[BlockSpec]:
        if choice.kind == "skip":
            blocks = [stage[0]]
        else:
            depth = len(stage) + choice.repeats
            blocks = list(stage[:depth]) + [stage[-1].replace(stride=1)] * max(0, depth - len(stage))
        out = []
        for block in blocks:
            kind = block.kind if choice.kind == "skip" else choice.kind
            width = block.out_chs if choice.width == 1 else make_divisible(block.out_chs * choice.width, divisor)
            common = {"out_chs": width, "kernel": choice.kernel, "stride": block.stride, "se": choice.se,
                      "act": choice.act}
            if kind == "ds":
                out.append(BlockSpec("ds", **common))
            else:
                base_ratio = block.expand_ratio if block.kind == "ir" else 1.0
                ratio = base_ratio if choice.expansion == "base" else float(choice.expansion)
                out.append(BlockSpec("ir", expand_ratio=ratio, **common))
        return out

    def choices_of(self, spec: NetSpec) -> Choices:
        """A choice vector whose candidate is ``spec`` (resolved), or ValueError naming the first
        stage no choice reaches. Stage by stage, every choice that matches the stage's first block
        (kind, kernel, SE, activation) is tried, identity choices (x1, +0, ``base``) first."""
        target = resolve(spec)
        if len(target.stages) != len(self.stages):
            raise ValueError(f"the network has {len(target.stages)} stages, the space {len(self.stages)}")
        found: list[StageChoice | None] = [None] * len(self.stages)
        defaults = [next(self.stage_combinations(i), None) for i in range(len(self.stages))]
        for i, options in enumerate(self.stages):
            wanted = target.stages[i]
            if options is None:
                if self.candidate(tuple(found[:i]) + tuple(defaults[i:])).stages[i] != wanted:
                    raise ValueError(f"stage {i} is not searched and differs from the base's")
                continue
            first = wanted[0]
            matching = [
                c for c in self.stage_combinations(i)
                if c.kernel == first.kernel and c.se == first.se and c.act == first.act
            ]
            base_kind = self.table.stages[i][0].kind
            matching.sort(key=lambda c: (c.kind != base_kind, c.width != 1, c.repeats != 0, c.expansion != "base"))
            for choice in matching:
                trial = tuple(found[:i]) + (choice,) + tuple(defaults[i + 1:])
                if self.candidate(trial).stages[i] == wanted:
                    found[i] = choice
                    break
            else:
                raise ValueError(f"stage {i} ({' '.join(map(str, wanted))}) is not reachable in this space")
        return tuple(found)

    # ---- Optuna ----------------------------------------------------------------------

    def suggest(self, trial) -> Choices:
        """Ask an Optuna trial for one choice vector (define-by-run: inactive choices are not asked).

        Parameter names are ``s<i>.<choice>``; a stage's ``kind`` decides which others exist.
        """
        choices: list[StageChoice | None] = []
        table = self.table
        for i, options in enumerate(self.stages):
            if options is None:
                choices.append(None)
                continue
            kind = trial.suggest_categorical(f"s{i}.kind", options.kinds)
            kernel = trial.suggest_categorical(f"s{i}.kernel", options.kernels)
            first_kind = table.stages[i][0].kind if kind == "skip" else kind
            expansion = trial.suggest_categorical(f"s{i}.expansion", options.expansions) if first_kind == "ir" else None
            se = trial.suggest_categorical(f"s{i}.se", options.se)
            act = trial.suggest_categorical(f"s{i}.act", options.acts)
            repeats = trial.suggest_categorical(f"s{i}.repeats", options.repeats) if kind != "skip" else 0
            width = trial.suggest_categorical(f"s{i}.width", options.widths)
            choices.append(StageChoice(kind, kernel, expansion, se, act, repeats, width))
        return tuple(choices)

    @staticmethod
    def params(choices: Choices) -> dict:
        """The Optuna parameters of a choice vector (what :meth:`suggest` asks), e.g. to enqueue it."""
        params = {}
        for i, choice in enumerate(choices):
            if choice is None:
                continue
            params.update({f"s{i}.kind": choice.kind, f"s{i}.kernel": choice.kernel, f"s{i}.se": choice.se,
                           f"s{i}.act": choice.act, f"s{i}.width": choice.width})
            if choice.expansion is not None:
                params[f"s{i}.expansion"] = choice.expansion
            if choice.kind != "skip":
                params[f"s{i}.repeats"] = choice.repeats
        return params

    def from_params(self, params: dict) -> Choices:
        """The choice vector of an Optuna trial's parameters."""
        choices: list[StageChoice | None] = []
        for i, options in enumerate(self.stages):
            if options is None:
                choices.append(None)
                continue
            try:
                choices.append(StageChoice(
                    params[f"s{i}.kind"], params[f"s{i}.kernel"], params.get(f"s{i}.expansion"), params[f"s{i}.se"],
                    params[f"s{i}.act"], params.get(f"s{i}.repeats", 0), params[f"s{i}.width"],
                ))
            except KeyError as err:
                raise ValueError(f"parameters lack {err.args[0]!r}: not a trial of this space") from None
        return tuple(choices)

    # ---- printing and storing ----------------------------------------------------------

    def lines(self) -> list[str]:
        """The space for printing: the base, then per stage its base blocks and options."""
        out = [f"search space around: {self.base.stem} ... {self.base.head}",
               f"{self.size():,} choice vectors (MnasNet section 4.1: per-stage choices, factorised)"]
        for i, (options, stage) in enumerate(zip(self.stages, self.table.stages, strict=True)):
            rows = " ".join(str(b) for b in stage)
            if options is None:
                out.append(f"stage {i}: kept: {rows}")
                continue
            shown = "  ".join(
                f"{f.name} {'|'.join(_show(v, f.name) for v in getattr(options, f.name))}" for f in fields(options)
            )
            out.append(f"stage {i} ({len(stage)} blocks: {rows})")
            out.append(f"    {shown}")
        return out

    def describe(self) -> str:
        return "\n".join(self.lines())

    def to_dict(self) -> dict:
        return {"base": self.base.to_dict(),
                "stages": [None if o is None else o.to_dict() for o in self.stages]}

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> SearchSpace:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"not a JSON search space: {err}") from None
        if not isinstance(data, dict) or set(data) != {"base", "stages"} or not isinstance(data["stages"], list):
            raise ValueError("a search space object has exactly the keys 'base' (a network spec) and 'stages'")
        return cls(NetSpec.from_dict(data["base"]),
                   tuple(None if s is None else StageOptions.from_dict(s) for s in data["stages"]))


def _show(value: object, name: str) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if name == "repeats":
        return f"{value:+d}"
    return f"x{value:g}" if name == "widths" else str(value)
