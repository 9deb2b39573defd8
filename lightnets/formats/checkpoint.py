"""Checkpoints: one safetensors file per checkpoint, written atomically, verified on load.

A checkpoint holds the model weights (``model.*``), the EMA weights (``ema.*``), the optimizer
state (``optim.*``), the RNG states (``rng.*``) and, as JSON metadata, the run's
configuration and progress, and a SHA-256 of all of it (tensors and metadata). Nothing is ever
unpickled: safetensors stores only tensors and strings. Writing goes to a temporary file that
is fsync'ed and then renamed over the old one (removed again if the write fails), and the old
one is kept as ``previous.safetensors``, so a crash, a full disk or a corrupted file never
loses the last good state.

The format lives here, below ``train``, ``convert`` and ``export``, because all three write or
read it: a trained run, a converted weight file and an exported model share one file format.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import warnings
from dataclasses import dataclass

import torch

from . import files
from .files import atomic_path, fault_point

FORMAT = "lightnets-checkpoint-2"
#: The format before the SHA-256 covered the metadata too: still read, its tensors verified, and said so.
FORMAT_TENSORS_ONLY = "lightnets-checkpoint-1"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used (missing, truncated, corrupted, or not ours)."""


class UnverifiedMetadataWarning(UserWarning):
    """A checkpoint of the older format was read: its tensors were verified, its metadata could not be."""


@dataclass
class Checkpoint:
    """A verified checkpoint's contents: tensors by group, and its config and progress as stored."""

    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] | None
    optimizer: dict | None
    rng: dict | None
    config: dict
    progress: dict
    path: str = ""


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the tensors as safetensors serialises them: what a checkpoint stores to verify itself."""
    from safetensors.torch import save

    return hashlib.sha256(save(tensors)).hexdigest()


def checkpoint_digest(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> str:
    """The SHA-256 a checkpoint stores: its tensors as safetensors serialises them (names, dtypes,
    shapes and data), then every metadata entry but the digest itself as JSON with sorted keys.

    Covering the metadata matters as much as the tensors: a flipped bit there once turned a
    stored resolution of 16 into 36, and evaluation ran at 36x36 without a word.
    """
    from safetensors.torch import save

    digest = hashlib.sha256(save(tensors))
    digest.update(json.dumps({k: v for k, v in meta.items() if k != "sha256"}, sort_keys=True).encode("utf8"))
    return digest.hexdigest()


def _optimizer_to_tensors(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_from_tensors(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> dict:
    """Every RNG a training step draws from, to restore for an exact resume."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"cuda{i}"] = s
    return state


def restore_rng(tensors: dict, python_state: list | None, path: str = "") -> None:
    """Put back the RNG states :func:`rng_state` (and ``random.getstate``) captured.

    A state that torch or ``random`` refuses (damaged, or not one) raises a
    :class:`CheckpointError` naming the checkpoint ``path`` it came from.
    """
    try:
        torch.set_rng_state(tensors["torch"])
        cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda"))]
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda)
        if python_state is not None:
            version, internal, gauss = python_state
            random.setstate((version, tuple(internal), gauss))
    except (KeyError, RuntimeError, TypeError, ValueError) as err:
        raise CheckpointError(
            f"checkpoint {path!r}: its saved random-number-generator state is damaged and cannot be restored "
            f"({type(err).__name__}: {err}){previous_hint(path) if path else ''}"
        ) from None


def save_checkpoint(
    path: str,
    model: dict[str, torch.Tensor],
    *,
    config: dict,
    progress: dict,
    ema: dict[str, torch.Tensor] | None = None,
    optimizer: dict | None = None,
    keep_previous: bool = True,
) -> None:
    """Write a checkpoint atomically (temp file, fsync, rename); keep the old one as ``previous``."""
    from safetensors.torch import save

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.items()})
    meta: dict[str, str] = {"format": FORMAT, "config": json.dumps(config), "progress": json.dumps(progress)}
    if optimizer is not None:
        optim_tensors, optim_meta = _optimizer_to_tensors(optimizer)
        tensors.update(optim_tensors)
        meta["optimizer"] = json.dumps(optim_meta)
        tensors.update({f"rng.{k}": v for k, v in rng_state().items()})
        meta["python_random"] = json.dumps(random.getstate())
    meta["sha256"] = checkpoint_digest(tensors, meta)
    payload = save(tensors, metadata=meta)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            files._write(fh, payload)  # through the module: tests replace it to fill the disk
        fault_point("checkpoint-written")
        if keep_previous and os.path.exists(path):
            # a hard link: 'path' stays in place until the new file replaces it
            with atomic_path(os.path.join(os.path.dirname(os.path.abspath(path)), "previous.safetensors")) as link:
                os.link(path, link)


def previous_hint(path: str) -> str:
    """When the checkpoint at ``path`` is unusable: where the intact ``previous.safetensors`` beside it is, if any."""
    previous = os.path.join(os.path.dirname(os.path.abspath(path)), "previous.safetensors")
    if os.path.abspath(path) == previous or not os.path.isfile(previous):
        return ""
    try:
        p = _read(previous, warn=False).progress
    except CheckpointError:
        return ""
    when = f" (epoch {p['epoch']}, step {p['global_step']})" if "epoch" in p and "global_step" in p else ""
    return (f"; {previous} is intact{when}: use it with --checkpoint {previous} "
            "(resuming a run: --checkpoint previous)")


def load_checkpoint(path: str) -> Checkpoint:
    """Read and verify a checkpoint; raises :class:`CheckpointError` saying what is wrong.

    The stored SHA-256 covers the tensors and every metadata entry (the configuration, the
    preprocessing, the class names, the progress, the optimizer's settings), so one flipped
    bit anywhere in the file is refused. An unusable file's error names the intact
    ``previous.safetensors`` beside it when there is one. A checkpoint of the older format
    ``lightnets-checkpoint-1``, whose SHA-256 covers the tensors only, is still read: its
    tensors are verified, and a :class:`UnverifiedMetadataWarning` says that its metadata is not.
    """
    try:
        return _read(path)
    except CheckpointError as err:
        raise CheckpointError(f"{err}{previous_hint(path)}") from None


def _read(path: str, warn: bool = True) -> Checkpoint:
    from safetensors import safe_open
    from safetensors.torch import load

    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        tensors = load(raw)
        with safe_open(path, framework="pt") as handle:
            meta = handle.metadata() or {}
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types for garbled files
        raise CheckpointError(f"checkpoint {path!r} is truncated or corrupted and was refused ({err})") from None
    if meta.get("format") == FORMAT:
        if checkpoint_digest(tensors, meta) != meta.get("sha256"):
            raise CheckpointError(
                f"checkpoint {path!r} is corrupted: its tensors or metadata do not match the stored SHA-256"
            )
    elif meta.get("format") == FORMAT_TENSORS_ONLY:
        if tensor_digest(tensors) != meta.get("sha256"):
            raise CheckpointError(f"checkpoint {path!r} is corrupted: its tensors do not match the stored SHA-256")
        if warn:
            warnings.warn(
                f"checkpoint {path!r} has the older format {FORMAT_TENSORS_ONLY!r}: its tensors were verified, its "
                "configuration, class names, preprocessing and progress were not (checkpoints written now cover "
                "them too; resuming the run writes new ones)", UnverifiedMetadataWarning, stacklevel=3,
            )
    else:
        raise CheckpointError(
            f"{path!r} is not a lightnets checkpoint (format {meta.get('format')!r}, expected {FORMAT!r})"
        )
    what = "tensor names"
    try:
        groups: dict[str, dict[str, torch.Tensor]] = {"model": {}, "ema": {}, "optim": {}, "rng": {}}
        for key, value in tensors.items():
            prefix, rest = key.split(".", 1)
            groups[prefix][key if prefix == "optim" else rest] = value
        what = "optimizer state"
        optimizer = (_optimizer_from_tensors(groups["optim"], json.loads(meta["optimizer"]))
                     if "optimizer" in meta else None)
        what = "random-number-generator state"
        rng = None
        if groups["rng"]:
            rng = {"tensors": groups["rng"], "python": json.loads(meta.get("python_random", "null"))}
        what = "configuration"
        config = json.loads(meta["config"])
        what = "progress"
        progress = json.loads(meta["progress"])
        if not isinstance(config, dict) or not isinstance(progress, dict):
            raise TypeError("not a JSON object")
    except (KeyError, ValueError, TypeError, AttributeError) as err:
        raise CheckpointError(f"checkpoint {path!r}: its stored {what} is malformed ({type(err).__name__}: {err})") \
            from None
    return Checkpoint(
        model=groups["model"],
        ema=groups["ema"] or None,
        optimizer=optimizer,
        rng=rng,
        config=config,
        progress=progress,
        path=path,
    )
