"""Weight converters from other libraries' checkpoints to lightnets' module names."""

from .torchvision import TORCHVISION_MODELS, from_torchvision

__all__ = ["TORCHVISION_MODELS", "from_torchvision"]
