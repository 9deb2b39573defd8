"""What a trained network is on disk and how it is read back: the checkpoint format, preprocessing, the loader.

Below ``train``, ``convert`` and ``export``, which all write or read checkpoints: a package that
loads checkpoints is used by many, so it lives below them. Imports only ``models``.

- :func:`save_checkpoint`, :func:`load_checkpoint`: one safetensors file, written atomically,
  verified on load (tensors and metadata), never unpickled.
- :func:`atomic_write`, :func:`atomic_path`: every file lightnets replaces is written whole or
  not at all; a failed write leaves the old file and no temporary one.
- :class:`Preprocessing`: what an image goes through before the network; stored with every
  checkpoint. :func:`load_image` reads one image file that way.
- :func:`load_model`: a checkpoint to a ready model with its preprocessing and class names.
"""

from .checkpoint import Checkpoint, CheckpointError, UnverifiedMetadataWarning, load_checkpoint, save_checkpoint
from .files import FAULT_ENV, atomic_path, atomic_write, fault_point, read_json, remove_stale_temporaries
from .loading import SPEC_NAME, LoadedModel, build_stored_model, load_model
from .output import check_output_file
from .preprocessing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocessing,
    image_errors,
    imagenet_preprocessing,
    load_image,
)

__all__ = [
    "FAULT_ENV",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Checkpoint",
    "CheckpointError",
    "SPEC_NAME",
    "LoadedModel",
    "Preprocessing",
    "UnverifiedMetadataWarning",
    "atomic_path",
    "atomic_write",
    "build_stored_model",
    "check_output_file",
    "fault_point",
    "image_errors",
    "imagenet_preprocessing",
    "load_checkpoint",
    "load_image",
    "load_model",
    "read_json",
    "remove_stale_temporaries",
    "save_checkpoint",
]
