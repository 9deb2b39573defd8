"""Training and evaluation: ``fit``, ``evaluate``, recipes, data, checkpoints."""

from .checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint
from .data import DataSplit, Preprocessing, digits, image_folder, load_data
from .loop import FitResult, evaluate, fit
from .metrics import EvalResult
from .recipes import RECIPES, Recipe, get_recipe

__all__ = [
    "RECIPES", "CheckpointError", "DataSplit", "EvalResult", "FitResult", "Preprocessing", "Recipe", "digits",
    "evaluate", "fit", "get_recipe", "image_folder", "load_checkpoint", "load_data", "load_weights", "save_checkpoint",
]
