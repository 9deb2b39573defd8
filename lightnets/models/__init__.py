"""The model zoo: one file per family, each with its paper's table as data.

A network is one value, :class:`NetSpec`; :func:`resolve` turns a paper's table into channel
counts, :func:`build` (or :class:`ConvNet`) builds it, :class:`Backbone` builds it without its
classification head (what :class:`LRASPP` segments and :class:`SSDLite` detects with), :func:`walk` lists its sites and
:func:`channel_groups` / :func:`inherit_weights` let a pruner change widths and keep weights.
"""

from .builder import Backbone, ConvNet, FeatureInfo, Head, Site, Stem, build, build_block, build_site, walk
from .channels import ChannelGroup, channel_groups, inherit_weights, keep_largest_l2, resize_group
from .lraspp import LRASPP, LRASPPHead, lraspp_mobilenet_v3_large, lraspp_mobilenet_v3_small
from .memory import MemoryEstimate, available_memory, check_memory, check_request, estimate_memory, spec_of
from .mobilenet_v1 import mobilenet_v1
from .mobilenet_v2 import mobilenet_v2, mobilenet_v2_spec
from .mobilenet_v3 import mobilenet_v3_large, mobilenet_v3_small, mobilenet_v3_spec
from .registry import FAMILIES, create_model, get_entry, list_models
from .resolve import resolve
from .shufflenet_v1 import shufflenet_v1
from .shufflenet_v2 import shufflenet_v2
from .spec import BlockSpec, BuildSettings, HeadSpec, NetSpec, StemSpec, parse_stages, read_spec
from .ssdlite import (
    SSDLite,
    SSDLiteHead,
    ssdlite_mobilenet_v2,
    ssdlite_mobilenet_v3_large,
    ssdlite_mobilenet_v3_small,
)
from .targets import check_detection_targets, check_segmentation_targets

__all__ = [
    "FAMILIES",
    "LRASPP",
    "Backbone",
    "BlockSpec",
    "BuildSettings",
    "ChannelGroup",
    "ConvNet",
    "FeatureInfo",
    "Head",
    "HeadSpec",
    "LRASPPHead",
    "SSDLite",
    "SSDLiteHead",
    "MemoryEstimate",
    "NetSpec",
    "Site",
    "Stem",
    "StemSpec",
    "available_memory",
    "build",
    "build_block",
    "build_site",
    "channel_groups",
    "check_detection_targets",
    "check_memory",
    "check_request",
    "check_segmentation_targets",
    "create_model",
    "estimate_memory",
    "get_entry",
    "inherit_weights",
    "keep_largest_l2",
    "list_models",
    "lraspp_mobilenet_v3_large",
    "lraspp_mobilenet_v3_small",
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilenet_v2_spec",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "mobilenet_v3_spec",
    "parse_stages",
    "read_spec",
    "resize_group",
    "resolve",
    "shufflenet_v1",
    "shufflenet_v2",
    "spec_of",
    "ssdlite_mobilenet_v2",
    "ssdlite_mobilenet_v3_large",
    "ssdlite_mobilenet_v3_small",
    "walk",
]
