"""Training and evaluation: ``fit``, ``resume``, ``evaluate``, recipes, data.

The checkpoint format these write and read lives below, in :mod:`lightnets.formats`.
"""

from .data import (
    DataSplit,
    calibration_batches,
    check_classes,
    checkpoint_preprocessing,
    digits,
    image_folder,
    load_data,
)
from .loop import RUN_FILES, FitResult, TrainingDiverged, checkpoint_path, evaluate, fit, resume
from .metrics import EvalResult
from .recipes import RECIPES, Recipe, get_recipe

__all__ = [
    "RECIPES", "RUN_FILES", "DataSplit", "EvalResult", "FitResult", "Recipe", "TrainingDiverged",
    "calibration_batches", "check_classes", "checkpoint_path", "checkpoint_preprocessing", "digits", "evaluate", "fit",
    "get_recipe", "image_folder", "load_data", "resume",
]
