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
from .dense_metrics import (
    detection_map,
    evaluate_detection,
    evaluate_segmentation,
    mean_iou,
    segmentation_confusion,
)
from .loop import RUN_FILES, FitResult, TrainingDiverged, checkpoint_path, evaluate, fit, resume
from .metrics import EvalResult
from .recipes import RECIPES, Recipe, get_recipe
from .scenes import SCENE_CLASSES, SCENE_DATA, digit_scenes

__all__ = [
    "RECIPES", "RUN_FILES", "SCENE_CLASSES", "SCENE_DATA", "DataSplit", "EvalResult", "FitResult", "Recipe",
    "TrainingDiverged",
    "calibration_batches", "check_classes", "checkpoint_path", "checkpoint_preprocessing", "detection_map",
    "digit_scenes", "digits", "evaluate", "evaluate_detection", "evaluate_segmentation", "fit", "get_recipe",
    "image_folder", "load_data", "mean_iou", "resume", "segmentation_confusion",
]
