"""Load Keras' MobileNet, MobileNetV2, MobileNetV3Large and MobileNetV3Small weight files.

Reads the files with h5py only (Keras and TensorFlow are not needed): the legacy ``.h5``
format of the published ``keras.applications`` weights and of ``model.save("x.h5")``, which
names every layer (``conv_dw_3``, ``expanded_conv_5/expand``), and the Keras 3 formats
``.weights.h5`` and ``.keras`` (a zip holding ``model.weights.h5``), which name layers by class
and position (``conv2d_7``, ``depthwise_conv2d_3``). Both list the layers in the order the
network was built, which is our module order too, so each kind of layer (convolution,
depthwise convolution, batch norm, dense) is matched in order, every shape is checked, and
the first mismatch is named with both names and shapes.

What changes on the way: kernels are stored height, width, in, out (HWIO) and become
out, in, height, width (OIHW); depthwise kernels (kh, kw, C, 1) become (C, 1, kh, kw); a 1x1
convolution used as classifier (MobileNet, MobileNetV3) becomes our ``nn.Linear``; BN's
gamma, beta, moving_mean and moving_variance become weight, bias, running_mean and
running_var. The model is built with what Keras trains with: BN eps 1e-3, TensorFlow "same"
padding (``padding="tf_same"``), ReLU6 in MobileNet (V1).

Input scaling: Keras' MobileNet and MobileNetV2 expect pixels scaled to [-1, 1]
(``preprocess_input``: x / 127.5 - 1); MobileNetV3 does that scaling inside the model (its
``Rescaling`` layer, which has no weights) and takes 0..255. The converted models all take
[-1, 1]: for a [0, 1] tensor that is ``KERAS_PREPROCESSING`` (mean 0.5, std 0.5), RGB order.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..models import create_model

#: Keras application name -> (our family, options that reproduce how Keras builds it).
KERAS_MODELS: dict[str, tuple[str, dict]] = {
    "MobileNet": ("mobilenet_v1", {"activation": "r6", "bn_eps": 1e-3, "padding": "tf_same"}),
    "MobileNetV2": ("mobilenet_v2", {"bn_eps": 1e-3, "padding": "tf_same"}),
    "MobileNetV3Large": ("mobilenet_v3_large", {"bn_eps": 1e-3, "padding": "tf_same"}),
    "MobileNetV3Small": ("mobilenet_v3_small", {"bn_eps": 1e-3, "padding": "tf_same"}),
}

#: Mean and std, for images as [0, 1] RGB tensors, that give the [-1, 1] inputs Keras' weights expect.
KERAS_PREPROCESSING = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}

_KINDS = ("conv", "depthwise", "batchnorm", "dense")
_KERAS3_CLASS = {
    "conv2d": "conv",
    "depthwise_conv2d": "depthwise",
    "batch_normalization": "batchnorm",
    "dense": "dense",
}
_BN_VARS = ("gamma", "beta", "moving_mean", "moving_variance")


@dataclass
class KerasLayer:
    """One layer's weights as read from the file."""

    name: str
    kind: str  # one of _KINDS
    arrays: dict[str, np.ndarray]


def _require_h5py():
    """h5py, or a ValueError naming the extra (the CLI prints it as one line, like every missing extra)."""
    try:
        import h5py
    except ImportError:
        raise ValueError('reading Keras weight files needs h5py: pip install "lightnets[keras]" (or h5py)') from None
    return h5py


def read_keras_weights(path: str | os.PathLike) -> list[KerasLayer]:
    """The layers with weights in a Keras weight file, in the order the network built them."""
    h5py = _require_h5py()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such Keras weight file: {path!r}")
    source: str | io.BytesIO = path
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if "model.weights.h5" not in archive.namelist():
                raise ValueError(f"{path!r} is a zip but not a .keras file: it has no model.weights.h5")
            source = io.BytesIO(archive.read("model.weights.h5"))
    try:
        handle = h5py.File(source, "r")
    except OSError as err:
        raise ValueError(f"{path!r} is not an HDF5 file (.h5, .weights.h5) nor a .keras zip: {err}") from None
    with handle:
        root = handle.get("model_weights", handle)
        if "layer_names" in root.attrs:
            return _read_legacy(root, path)
        if "layers" in root:
            return _read_keras3(root["layers"], path)
    raise ValueError(
        f"{path!r}: neither a legacy Keras weight file (no 'layer_names') nor a Keras 3 one (no 'layers' group)"
    )


def _decode(value) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _read_legacy(root, path: str) -> list[KerasLayer]:
    layers = []
    for layer_name in map(_decode, root.attrs["layer_names"]):
        group = root[layer_name]
        weight_names = [_decode(n) for n in group.attrs.get("weight_names", [])]
        if not weight_names:
            continue
        # "conv_dw_1/depthwise_kernel:0" (Keras 2) or "conv_dw_1/depthwise_kernel" -> "depthwise_kernel"
        arrays = {n.split("/")[-1].split(":")[0]: np.asarray(group[n]) for n in weight_names}
        layers.append(KerasLayer(layer_name, _kind_of(layer_name, arrays, path), arrays))
    return layers


def _kind_of(name: str, arrays: dict[str, np.ndarray], path: str) -> str:
    if "depthwise_kernel" in arrays:  # Keras 2 names it so
        arrays["kernel"] = arrays.pop("depthwise_kernel")
        return "depthwise"
    if set(_BN_VARS) <= set(arrays):
        return "batchnorm"
    kernel = arrays.get("kernel")
    if kernel is not None and kernel.ndim == 4:
        # Keras 3 calls a depthwise kernel "kernel" too: (kh, kw, C, 1). No MobileNet has a
        # spatial conv with one output channel, nor a 1x1 depthwise conv, so the shape decides.
        return "depthwise" if kernel.shape[3] == 1 and kernel.shape[0] > 1 else "conv"
    if kernel is not None and kernel.ndim == 2:
        return "dense"
    raise ValueError(f"{path!r}: layer {name!r} holds {sorted(arrays)}, which no MobileNet layer has")


def _read_keras3(layers_group, path: str) -> list[KerasLayer]:
    found = []
    for key in layers_group:
        match = re.fullmatch(r"(.+?)(?:_(\d+))?", key)
        vars_group = layers_group[key].get("vars")
        if vars_group is None or len(vars_group) == 0:
            continue
        kind = _KERAS3_CLASS.get(match[1])
        if kind is None:
            raise ValueError(f"{path!r}: layer {key!r} has weights, but MobileNets have none of that class")
        values = [np.asarray(vars_group[str(i)]) for i in range(len(vars_group))]
        names = _BN_VARS if kind == "batchnorm" else ("kernel", "bias")
        if len(values) > len(names):
            raise ValueError(f"{path!r}: layer {key!r} has {len(values)} variables, expected at most {len(names)}")
        found.append((kind, int(match[2] or 0), KerasLayer(key, kind, dict(zip(names, values, strict=False)))))
    # Keras 3 numbers layers per class, in build order; dense layers close the network.
    order = {kind: i for i, kind in enumerate(_KINDS)}
    return [layer for _, _, layer in sorted(found, key=lambda item: (order[item[0]], item[1]))]


def _our_layers(model: nn.Module, classifier_kind: str) -> dict[str, list[tuple[str, nn.Module]]]:
    ours: dict[str, list[tuple[str, nn.Module]]] = {kind: [] for kind in _KINDS}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
            ours["depthwise" if depthwise else "conv"].append((name, module))
        elif isinstance(module, nn.BatchNorm2d):
            ours["batchnorm"].append((name, module))
        elif isinstance(module, nn.Linear):
            ours[classifier_kind].append((name, module))
    return ours


def _converted(layer: KerasLayer, module: nn.Module) -> dict[str, np.ndarray]:
    a = layer.arrays
    if layer.kind == "batchnorm":
        return {
            "weight": a["gamma"],
            "bias": a["beta"],
            "running_mean": a["moving_mean"],
            "running_var": a["moving_variance"],
        }
    if layer.kind == "depthwise":
        kh, kw, channels, multiplier = a["kernel"].shape
        out = {"weight": a["kernel"].transpose(2, 3, 0, 1).reshape(channels * multiplier, 1, kh, kw)}
    elif isinstance(module, nn.Linear):
        kernel = a["kernel"]
        if kernel.ndim == 4:  # a 1x1 Conv2D classifier (MobileNet, MobileNetV3)
            if kernel.shape[:2] != (1, 1):
                raise ValueError(f"Keras layer {layer.name!r}: a classifier kernel must be 1x1, got {kernel.shape}")
            kernel = kernel[0, 0]
        out = {"weight": kernel.T}
    else:
        out = {"weight": a["kernel"].transpose(3, 2, 0, 1)}
    if "bias" in a:
        out["bias"] = a["bias"]
    return out


def from_keras(
    keras_name: str,
    path: str | os.PathLike,
    *,
    width_mult: float = 1.0,
    minimal: bool = False,
) -> nn.Module:
    """A lightnets model carrying the weights of a Keras application's weight file.

    ``keras_name`` is ``MobileNet``, ``MobileNetV2``, ``MobileNetV3Large`` or ``MobileNetV3Small``;
    ``width_mult`` is the file's ``alpha``; ``minimal`` is MobileNetV3's ``minimalistic``. The
    number of classes is read from the classifier. Files saved with ``include_top=False`` lack
    the classifier and are refused. Keras pads stride-2 layers by a fixed amount (one row and
    column more at the bottom and right) wherever it does not know the feature-map size: always
    in MobileNet (V1), and in V2/V3 built without a fixed ``input_shape`` (V3's default). That
    equals TF "same", which these models use, on even feature maps: every input size divisible
    by 32, such as 128, 160, 192 and 224. Other sizes give different maps than Keras there.
    Inputs are scaled to [-1, 1] (see the module docstring and ``KERAS_PREPROCESSING``).
    """
    if keras_name not in KERAS_MODELS:
        raise ValueError(f"no Keras converter for {keras_name!r}; allowed: {', '.join(KERAS_MODELS)}")
    family, options = KERAS_MODELS[keras_name]
    if minimal:
        if not family.startswith("mobilenet_v3"):
            raise ValueError(f"minimal (Keras' minimalistic) exists for MobileNetV3 only, not {keras_name}")
        options = {**options, "minimal": True}
    layers = read_keras_weights(path)
    by_kind = {kind: [layer for layer in layers if layer.kind == kind] for kind in _KINDS}
    classifier_kind = "dense" if by_kind["dense"] else "conv"
    classifier = (by_kind["dense"] or by_kind["conv"] or [None])[-1]
    if classifier is None or "bias" not in classifier.arrays:  # every MobileNet's last conv has no bias
        raise ValueError(
            f"{os.fspath(path)!r} has no classifier (saved with include_top=False?); "
            "from_keras needs the whole network"
        )
    num_classes = int(classifier.arrays["kernel"].shape[-1])
    model = create_model(family, num_classes=num_classes, width_mult=width_mult, **options)
    ours = _our_layers(model, classifier_kind)
    label = f"Keras {keras_name} (width_mult={width_mult:g}{', minimal' if minimal else ''})"
    state: dict[str, torch.Tensor] = {}
    for kind in _KINDS:
        theirs, mine = by_kind[kind], ours[kind]
        for (name, module), layer in zip(mine, theirs, strict=False):  # unequal counts: the clearer error below
            for key, value in _converted(layer, module).items():
                target = getattr(module, key)
                if tuple(value.shape) != tuple(target.shape):
                    raise ValueError(
                        f"{label} does not match the lightnets model: Keras layer {layer.name!r} gives "
                        f"{key} of shape {tuple(value.shape)}, lightnets {name}.{key} has {tuple(target.shape)}"
                    )
                state[f"{name}.{key}"] = torch.from_numpy(np.ascontiguousarray(value)).to(target.dtype)
        if len(theirs) != len(mine):
            extra = (
                f"first unmatched Keras layer {theirs[len(mine)].name!r}"
                if len(theirs) > len(mine)
                else f"first unmatched lightnets layer {mine[len(theirs)][0]!r}"
            )
            raise ValueError(
                f"{label} does not match the lightnets model: the file has {len(theirs)} {kind} layers, "
                f"the model {len(mine)}; {extra}"
            )
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:  # every parameter and BN statistic must have come from the file
        raise ValueError(
            f"{label}: no Keras weights for {missing[:3]} ({len(missing)} in all); "
            f"unexpected {unexpected[:3]} ({len(unexpected)} in all)"
        )
    return model
