"""Weight converters from other libraries' checkpoints to lightnets' module names."""

from .timm import TIMM_MODELS, check_state_dict, from_timm
from .torchvision import TORCHVISION_MODELS, from_torchvision

__all__ = ["TIMM_MODELS", "TORCHVISION_MODELS", "check_state_dict", "from_timm", "from_torchvision"]
