"""Weight converters from other libraries' checkpoints to lightnets' module names."""

from .checkpoint import SOURCES, convert_checkpoint, load_state_file
from .keras import KERAS_MODELS, KERAS_PREPROCESSING, from_keras, read_keras_weights
from .megvii import MEGVII_MODELS, from_megvii, load_megvii_file
from .timm import TIMM_MODELS, check_state_dict, from_timm
from .torchvision import TORCHVISION_MODELS, from_torchvision, torchvision_num_classes

__all__ = [
    "KERAS_MODELS",
    "KERAS_PREPROCESSING",
    "MEGVII_MODELS",
    "SOURCES",
    "TIMM_MODELS",
    "TORCHVISION_MODELS",
    "check_state_dict",
    "convert_checkpoint",
    "from_keras",
    "from_megvii",
    "from_timm",
    "from_torchvision",
    "load_megvii_file",
    "load_state_file",
    "read_keras_weights",
    "torchvision_num_classes",
]
