"""Shared building blocks, each written once and used by every family that needs it."""

from .activations import ACTIVATIONS, make_activation
from .conv import (
    PADDINGS,
    Conv2dSame,
    ConvBnAct,
    DepthwiseSeparable,
    InvertedResidual,
    SqueezeExcite,
    batch_norm,
    conv2d,
)
from .helpers import make_divisible
from .shuffle import (
    ChannelShuffle,
    ShuffleV1Unit,
    ShuffleV2Branch,
    ShuffleV2OfficialUnit,
    ShuffleV2Projection,
    ShuffleV2Unit,
    channel_shuffle,
)

__all__ = [
    "ACTIVATIONS",
    "PADDINGS",
    "ChannelShuffle",
    "Conv2dSame",
    "ConvBnAct",
    "DepthwiseSeparable",
    "InvertedResidual",
    "ShuffleV1Unit",
    "ShuffleV2Branch",
    "ShuffleV2OfficialUnit",
    "ShuffleV2Projection",
    "ShuffleV2Unit",
    "SqueezeExcite",
    "batch_norm",
    "channel_shuffle",
    "conv2d",
    "make_activation",
    "make_divisible",
]
