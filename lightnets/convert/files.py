"""Reading other libraries' PyTorch weight files without running pickled code."""

from __future__ import annotations

import argparse
import os
import pickle
import warnings

import torch


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The state dict in a ``.safetensors`` file or a PyTorch file (bare, or under ``"state_dict"``).

    PyTorch files are read with ``weights_only=True``: tensors and plain containers only (and
    ``argparse.Namespace``, which training scripts such as timm's store beside the weights).
    Any file that does not read so (damaged, truncated, text, another format) raises a ValueError
    naming it.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such weight file: {path!r}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
            raise ValueError(f"{path!r} is not a readable .safetensors file ({err})") from None
    try:
        with torch.serialization.safe_globals([argparse.Namespace]), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Detected pickle protocol 157": the error below says it better
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - damaged data raises KeyError, IndexError, ... from the unpickler
        # weights_only=True stays: whatever the bytes, nothing but tensors and containers is built
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        if not isinstance(err, pickle.UnpicklingError):
            first_line = f"{type(err).__name__}: {first_line}"
        raise ValueError(
            f"{path!r} is not a PyTorch weight file that loads without running pickled code "
            f"(expected a .pth/.pth.tar/.pt state dict or .safetensors): {first_line}"
        ) from None
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path!r} does not hold a state dict of tensors")
    return state
