"""One call from a checkpoint file to a ready model: :func:`load_model`.

``eval``, ``predict``, ``export`` and ``resume`` all start from a checkpoint. Each used to
rebuild the model its own way, and the copies drifted: one dropped the stored width multiplier
and groups, one never checked the stored model name. Here the model is rebuilt once, from the
stored name and every stored option, and its weights are loaded strictly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from ..models import build, create_model
from .checkpoint import CheckpointError, load_checkpoint
from .preprocessing import Preprocessing

#: ``LoadedModel.name`` of a network stored only as its spec (pruned, searched: no registered name).
SPEC_NAME = "spec"


@dataclass
class LoadedModel:
    """A checkpoint's network, ready to run, with what is needed to feed it and to read its output."""

    model: nn.Module  # in eval mode, on the requested device
    name: str  # the registered model name it was rebuilt from, or SPEC_NAME
    options: dict  # every option it was built with (num_classes included)
    preprocessing: Preprocessing
    class_names: list[str]
    path: str
    config: dict = field(repr=False)  # everything the checkpoint stores beside the tensors
    progress: dict = field(repr=False)


def build_stored_model(
    stored: Mapping, name: str | None, expected: Mapping[str, object], class_names: list[str], path: str
) -> tuple[str, dict, nn.Module]:
    """The registered name, options and freshly built network a checkpoint's (or a run's
    ``config.json``) ``model`` entry describes; ``path`` names the source in errors."""
    if not isinstance(stored, Mapping):
        raise CheckpointError(f"checkpoint {path!r}: its stored model entry {stored!r} is not a record")
    stored_name = stored.get("name")
    spec = stored.get("spec")
    if stored_name is None and spec is not None:
        # No registered name stored (fit() without a model_config, or a pruned or searched
        # network): the spec is the whole network. A caller's registered name is accepted
        # when it builds exactly that network.
        try:
            model = build(spec)
        except ValueError as err:
            raise CheckpointError(f"checkpoint {path!r}: its stored network spec does not build: {err}") from None
        if model.num_classes != len(class_names):
            raise CheckpointError(
                f"checkpoint {path!r}: its network has {model.num_classes} classes, its class names {len(class_names)}"
            )
        if name in (None, SPEC_NAME) and not expected:
            return SPEC_NAME, {}, model
        options = {"num_classes": len(class_names), **expected}
        if name in (None, SPEC_NAME) or str(create_model(name, **options).spec) != spec:
            raise ValueError(
                f"checkpoint {path!r} holds a network stored as its spec, which {name!r} with {options} does not "
                f"build; load it as {SPEC_NAME!r} with no options"
            )
        return name, options, model
    if stored_name is None:
        # Written by fit() without a model_config: the caller names the network, the classes size it.
        if name is None:
            raise ValueError(f"checkpoint {path!r} stores no model name; pass the registered name it was trained as")
        options = {"num_classes": len(class_names), **stored.get("options", {}), **expected}
        return name, options, create_model(name, **options)
    if name is not None and name != stored_name:
        raise ValueError(f"checkpoint {path!r} holds {stored_name!r}, not {name!r}")
    options = dict(stored.get("options", {"num_classes": len(class_names)}))
    wrong = [f"{k}={options.get(k)!r}, not {v!r}" for k, v in expected.items() if options.get(k) != v]
    if wrong:
        raise ValueError(f"checkpoint {path!r} holds {stored_name} built with {', '.join(wrong)}")
    model = create_model(stored_name, **options)
    if spec is not None and str(getattr(model, "spec", spec)) != spec:
        raise CheckpointError(
            f"checkpoint {path!r}: {stored_name} with {options} builds another network than the one stored "
            f"(stored spec {spec!r}, built {str(model.spec)!r})"
        )
    return stored_name, options, model


def load_model(
    path: str,
    name: str | None = None,
    *,
    options: Mapping[str, object] | None = None,
    device: str | torch.device = "cpu",
    prefer_ema: bool = True,
) -> LoadedModel:
    """Read the checkpoint at ``path`` and return its network, built and loaded, in eval mode.

    The network is rebuilt from the stored registered name and all stored options (width
    multiplier, groups, minimal, number of classes, ...) and checked against the stored network
    spec when there is one; a network stored only as its spec (a pruned or searched one) is
    built from it (``LoadedModel.name`` is then ``"spec"``, and ``name="spec"`` expects one).
    ``name``, when given, is the network the caller expects: a checkpoint holding another raises
    a ValueError naming both. ``options``, when given, are options the caller expects (a command
    line's ``--width-mult``): any that differ from the stored ones raise rather than being
    silently overridden. ``device`` plays
    ``torch.load``'s ``map_location`` role; nothing is unpickled (safetensors). The EMA weights
    are loaded when the checkpoint has them, unless ``prefer_ema=False`` (resuming needs the raw
    weights). Raises :class:`CheckpointError` for unreadable files and weights that do not fit.
    """
    ckpt = load_checkpoint(path)
    config = ckpt.config
    if "preprocessing" not in config or "classes" not in config:
        raise CheckpointError(
            f"checkpoint {path!r} stores no {'preprocessing' if 'preprocessing' not in config else 'class names'}; "
            "it was not written by lightnets train or convert"
        )
    classes = config["classes"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise CheckpointError(f"checkpoint {path!r}: its stored class names {classes!r} are not a list of names")
    try:
        preprocessing = Preprocessing.from_dict(config["preprocessing"], f"checkpoint {path!r}")
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    class_names = list(classes)
    name, built_options, model = build_stored_model(config.get("model") or {}, name, options or {}, class_names, path)
    weights = ckpt.ema if prefer_ema and ckpt.ema else ckpt.model
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(
            f"checkpoint {path!r}: its weights do not fit {name} with {built_options}: {state_dict_mismatch(err)}"
        ) from None
    return LoadedModel(
        model=model.to(device).eval(),
        name=name,
        options=built_options,
        preprocessing=preprocessing,
        class_names=class_names,
        path=path,
        config=config,
        progress=ckpt.progress,
    )


def state_dict_mismatch(err: RuntimeError) -> str:
    """The first fault of torch's ``load_state_dict`` error, on one line: the first differing shape, or the
    first missing or unexpected keys (torch lists every one of hundreds over many lines)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if line.startswith("size mismatch for"):
            return line.replace("torch.Size(", "(").rstrip(".")
    faults = [line for line in lines if line.startswith(("Missing key(s)", "Unexpected key(s)"))]
    short = "; ".join(faults or lines[:1])
    return short if len(short) <= 300 else short[:300] + "..."
