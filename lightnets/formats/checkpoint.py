"""Checkpoints: one safetensors file per checkpoint, written atomically, verified on load.

A checkpoint holds the model weights (``model.*``), the EMA weights (``ema.*``), the optimizer
state (``optim.*``), the RNG states (``rng.*``) and, as JSON metadata, the run's
configuration, progress and a SHA-256 of all tensors. Nothing is ever unpickled: safetensors
stores only tensors and strings. Writing goes to a temporary file that is fsync'ed and then
renamed over the old one, and the old one is kept as ``previous.safetensors``, so a crash or
a corrupted file never loses the last good state.

The format lives here, below ``train``, ``convert`` and ``export``, because all three write or
read it: a trained run, a converted weight file and an exported model share one file format.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
from dataclasses import dataclass

import torch

FORMAT = "lightnets-checkpoint-1"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used (missing, truncated, corrupted, or not ours)."""


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


def restore_rng(tensors: dict, python_state: list | None) -> None:
    """Put back the RNG states :func:`rng_state` (and ``random.getstate``) captured."""
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    if python_state is not None:
        version, internal, gauss = python_state
        random.setstate((version, tuple(internal), gauss))


#: Environment variable naming a fault point at which the process kills itself (tests only).
FAULT_ENV = "LIGHTNETS_FAULT"


def fault_point(name: str) -> None:
    """Die here, as SIGKILL would, when ``LIGHTNETS_FAULT`` names this point.

    The moments between two writes (a checkpoint renamed into place, the epoch's metrics line
    not yet appended) are too short to hit with a signal from outside; tests name them instead.
    Points: ``checkpoint-written`` (a checkpoint's temporary file written, not yet renamed),
    ``epoch-checkpointed`` (an epoch's checkpoint in place, its metrics line not yet written),
    ``netadapt-step`` (a NetAdapt step's state and history written) and ``nas-trial-<n>``
    (architecture search: trial ``n`` evaluated, its result not yet stored as complete).
    """
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def remove_stale_temporaries(directory: str) -> list[str]:
    """Delete the ``*.tmp-PID`` files an interrupted :func:`save_checkpoint` left behind."""
    removed = []
    if os.path.isdir(directory):
        for name in sorted(os.listdir(directory)):
            if re.search(r"\.safetensors\.tmp-\d+$", name):
                os.remove(os.path.join(directory, name))
                removed.append(name)
    return removed


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
    meta["sha256"] = tensor_digest(tensors)
    payload = save(tensors, metadata=meta)

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
    fault_point("checkpoint-written")
    if keep_previous and os.path.exists(path):
        previous = os.path.join(directory, "previous.safetensors")
        link = f"{previous}.tmp-{os.getpid()}"
        if os.path.exists(link):
            os.remove(link)
        os.link(path, link)  # a hard link: 'path' stays in place until the new file replaces it
        os.replace(link, previous)
    os.replace(tmp, path)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path: str) -> Checkpoint:
    """Read and verify a checkpoint; raises :class:`CheckpointError` saying what is wrong."""
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
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path!r} is not a lightnets checkpoint (format {meta.get('format')!r}, expected {FORMAT!r})"
        )
    if tensor_digest(tensors) != meta.get("sha256"):
        raise CheckpointError(f"checkpoint {path!r} is corrupted: its tensors do not match the stored SHA-256")
    groups: dict[str, dict[str, torch.Tensor]] = {"model": {}, "ema": {}, "optim": {}, "rng": {}}
    for key, value in tensors.items():
        prefix, rest = key.split(".", 1)
        groups[prefix][key if prefix == "optim" else rest] = value
    optimizer = _optimizer_from_tensors(groups["optim"], json.loads(meta["optimizer"])) if "optimizer" in meta else None
    rng = None
    if groups["rng"]:
        rng = {"tensors": groups["rng"], "python": json.loads(meta.get("python_random", "null"))}
    return Checkpoint(
        model=groups["model"],
        ema=groups["ema"] or None,
        optimizer=optimizer,
        rng=rng,
        config=json.loads(meta["config"]),
        progress=json.loads(meta["progress"]),
        path=path,
    )

