"""ONNX export and ONNX Runtime inference (``pip install "lightnets[deploy]"``)."""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import warnings

import numpy as np
import torch
from torch import nn

from ..formats import atomic_path, check_output_file
from .fuse import fuse

DEFAULT_OPSET = 18


def _require(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise ValueError(f'this needs {module}: pip install "lightnets[deploy]"') from None


# torch.onnx logs four of these per export when torchvision is absent (it registers
# torchvision's detection ops); our networks use none of them, so the lines only alarm.
_TORCHVISION_SKIP = "torchvision is not installed. Skipping torchvision::"
_REGISTRATION_LOGGER = "torch.onnx._internal.exporter._registration"


def _no_torchvision_skip(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(_TORCHVISION_SKIP)


@contextlib.contextmanager
def _quiet_torchvision_skips():
    """Drop exactly those log records during an export; every other exporter message still shows."""
    logger = logging.getLogger(_REGISTRATION_LOGGER)
    logger.addFilter(_no_torchvision_skip)
    try:
        yield
    finally:
        logger.removeFilter(_no_torchvision_skip)


def _size(resolution: int | tuple[int, int]) -> tuple[int, int]:
    """``resolution`` as (height, width): one int for a square input, or a pair."""
    pair = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair):
        raise ValueError(f"resolution must be an integer >= 1 or a (height, width) pair of them, got {resolution!r}")
    return pair


def export_onnx(
    model: nn.Module,
    path: str,
    *,
    resolution: int | tuple[int, int] = 224,
    in_chans: int | None = None,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    dynamic_size: bool | None = None,
    fuse_bn: bool = True,
    check: bool = True,
) -> str:
    """Export ``model`` (eval mode, BN folded unless ``fuse_bn=False``) to ONNX at ``path``.

    The batch axis (unless ``dynamic_batch=False``: then batch 1), and with ``dynamic_size`` the
    spatial axes, are dynamic: h-swish and
    hard-sigmoid export as single ONNX operators (opset >= 14) and channel shuffle as
    Reshape / Transpose / Reshape, which keep working at any batch and any input size (the
    network's smallest useful input is 32 x 32: five stride-2 stages). The file is checked
    with ``onnx.checker`` unless ``check=False``, before it replaces anything at ``path``
    (written whole or not at all). ``path`` is checked first
    (:func:`~lightnets.formats.check_output_file`): its folder must exist.

    A segmentation model exports as it runs (one output, ``logits`` at the input size). A
    detection model (``model.task == "detection"``) exports its forward pass and box decoding,
    with two outputs: ``boxes`` (N, anchors, 4), xyxy in input pixels, and ``scores`` (N,
    anchors, classes), softmax; the score threshold, per-class NMS and top-k stay in Python
    (``model.detect`` does them, through ``torchvision.ops``). Its anchors are constants of the
    input size, so it exports at a fixed size: ``dynamic_size`` defaults to True for the other
    models and False for detection, where True is refused.
    """
    if opset < 17:
        raise ValueError(f"opset must be >= 17, got {opset}")
    detection = getattr(model, "task", None) == "detection"
    if dynamic_size is None:
        dynamic_size = not detection
    if detection and dynamic_size:
        raise ValueError("a detection model exports at a fixed input size (its anchors are constants of the size): "
                         "pass dynamic_size=False, and the size as resolution")
    check_output_file(path, "ONNX file")
    onnx = _require("onnx")
    _require("onnxscript")  # torch.onnx's exporter; without it, a traceback from deep inside torch
    net = fuse(model) if fuse_bn else model.eval()
    channels = in_chans or getattr(model, "in_chans", 3)
    height, width = _size(resolution)
    x = torch.randn(2 if dynamic_batch else 1, channels, height, width)  # fixed: batch 1, as a device runs
    outputs = ["logits"]
    if detection:
        net, outputs = _DecodedDetections(net, (height, width)), ["boxes", "scores"]
    with atomic_path(path) as partial:  # a failed export or check leaves an existing file as it was
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's own progress chatter
            _export(net, x, partial, opset, dynamic_batch, dynamic_size, outputs)
        if check:
            onnx.checker.check_model(onnx.load(partial), full_check=True)
    return path


class _DecodedDetections(nn.Module):
    """A detector's forward pass and box decoding at one input size: what its ONNX file computes."""

    def __init__(self, detector: nn.Module, size: tuple[int, int]) -> None:
        super().__init__()
        self.detector, self.size = detector, size
        detector.anchors(size)  # cached now: the exporter wants no attribute assigned while it traces

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.detector.decode(self.detector(x), self.size)


def _export(net: nn.Module, x: torch.Tensor, path: str, opset: int, dynamic_batch: bool, dynamic_size: bool,
            outputs: list[str]) -> None:
    dynamic_shapes = None
    if dynamic_batch or dynamic_size:
        dims = {}
        if dynamic_batch:
            dims[0] = torch.export.Dim("batch", min=1, max=4096)
        if dynamic_size:
            dims[2] = torch.export.Dim("height", min=32, max=4096)
            dims[3] = torch.export.Dim("width", min=32, max=4096)
        dynamic_shapes = (dims,)  # by position: forward's argument may have any name (nn.Sequential's is "input")
    with contextlib.redirect_stdout(io.StringIO()), _quiet_torchvision_skips():
        torch.onnx.export(
            net, (x,), path, input_names=["input"], output_names=outputs, opset_version=opset,
            dynamic_shapes=dynamic_shapes, dynamo=True, external_data=False, verbose=False,
        )


#: Where :func:`aligned_empty` starts an array: a cache line, the alignment of ONNX Runtime's CPU allocator.
ALIGNMENT = 64


def aligned_empty(shape: tuple[int, ...], dtype: np.dtype | type, alignment: int = ALIGNMENT) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on an ``alignment``-byte boundary
    (a view into a slightly larger buffer, which it keeps alive)."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buffer = np.empty(size + alignment, np.uint8)
    start = -buffer.ctypes.data % alignment
    return buffer[start:start + size].view(dtype).reshape(shape)


class BoundRun:
    """A session with its inputs and outputs bound (:meth:`OnnxModel.bind`). Calling it runs
    the session and returns ``outputs``, written in place; ``inputs`` are the bound input
    arrays, and :meth:`rewrite_inputs` writes the feeds into them again."""

    def __init__(self, session, binding, inputs: list[np.ndarray], originals: list[np.ndarray],
                 outputs: list[np.ndarray]) -> None:
        self._session, self._binding = session, binding
        self.inputs, self._originals, self.outputs = inputs, originals, outputs

    def __call__(self) -> list[np.ndarray]:
        self._session.run_with_iobinding(self._binding)
        return self.outputs

    def rewrite_inputs(self) -> None:
        """Write the feeds into the bound inputs again, from this thread: the inputs then lie
        in the caches as a layer's input does inside a network, just written by the layer
        before it, not as they lie after the last run only read them (see
        :func:`lightnets.export.timed_runs`)."""
        for array, original in zip(self.inputs, self._originals, strict=True):
            np.copyto(array, original)


class OnnxModel:
    """An ONNX Runtime session with a torch-like call: tensor in, tensor out."""

    def __init__(
        self, path: str, threads: int | None = None, flush_denormals: bool = True, profile_prefix: str | None = None,
        spinning: bool = True, optimized: bool = False,
    ) -> None:
        """``profile_prefix``: profile every run, and write the optimised graph to
        ``<profile_prefix>.optimized.onnx``; ``self.session.end_profiling()`` returns the profile's path.

        ``optimized=True``: the file is a graph ONNX Runtime already optimised for this CPU (as
        :func:`lightnets.export.strip_boundary_reorders` writes); it runs as it is, not optimised again.

        ``spinning=False``: the session's worker threads sleep as soon as a run ends instead of
        spinning for the next one (ONNX Runtime's ``session.intra_op.allow_spinning``). Keep the
        default for the session being timed, as deployments run; turn it off for any session
        kept open beside it: its spinning workers take the cores from the next session's runs
        (a MobileNetV2 block timed just after three spinning sessions ran here: median 1.76 ms,
        p90 6.5 ms; after three that sleep, 1.02 ms and 1.43 ms, the same as after none)."""
        ort = _require("onnxruntime")
        options = ort.SessionOptions()
        if profile_prefix is not None:  # ONNX Runtime's profiler: per-node kernel times, see end_profiling()
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
            options.optimized_model_filepath = profile_prefix + ".optimized.onnx"  # what the profile's names name
            options.log_severity_level = 3  # not the warning that this file holds this CPU's layout: it is read here
        if flush_denormals:  # the same reason as measure_latency's (see lightnets.cost.latency)
            options.add_session_config_entry("session.set_denormal_as_zero", "1")
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL if optimized
                                            else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.path = path

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Every output, for inputs given by name as arrays."""
        return self.session.run(None, feeds)

    def bind(self, feeds: dict[str, np.ndarray], in_place: dict[str, str] | None = None) -> BoundRun:
        """A :class:`BoundRun`: the session on ``feeds`` with its inputs and outputs bound once
        (ONNX Runtime's IOBinding; the outputs' shapes from one run now). Calling it runs and
        returns the outputs: the same arrays every call, written in place. No output is
        allocated and copied out per run, as :meth:`run` does. For timing: that copy grows with
        the output (ShuffleNetV1 with 8 groups, x1.0: its first stage's four units, each timed
        alone, summed to 1.25x the stage measured inside the network with the copy, 1.11x
        without), while inside a network a layer's output is not copied anywhere.

        The bound arrays start on a 64-byte boundary (:func:`aligned_empty`), as ONNX Runtime's
        own buffers inside a network do; NumPy's start 16 bytes past one here, and a part timed
        on them ran slower (ShuffleNetV1 with 8 groups, x2.0: its sites summed to 1.16-1.18x
        the network on NumPy's arrays, 1.12-1.15x on aligned ones, in two runs of each).

        ``in_place``: output name -> input name; each such output is written into that input's
        array, as ONNX Runtime writes a layer's output over the tensor it adds in (a residual
        folded into the convolution, whose Sum input the network holds no longer) instead of
        copying it to another buffer first. The input then holds the last run's output, and a
        residual's values grow run after run (to inf, then NaN, after some hundreds of runs; the
        speed stays: only denormals are slow, and they are flushed); for timing
        (:func:`lightnets.export.timed_runs`), not for results."""
        ort = _require("onnxruntime")
        in_place = dict(in_place or {})
        unknown = sorted(set(in_place.values()) - set(feeds)) + sorted(
            set(in_place) - {o.name for o in self.session.get_outputs()})
        if unknown:
            raise ValueError(f"in_place names no input or output of this session: {', '.join(unknown)}")
        shared = sorted(name for name, count in collections.Counter(in_place.values()).items() if count > 1)
        if shared:
            raise ValueError(f"in_place writes more than one output over input {', '.join(shared)}: one each")
        binding = self.session.io_binding()
        by_name = {}
        for name, value in feeds.items():
            array = by_name[name] = aligned_empty(np.shape(value), np.asarray(value).dtype)
            array[...] = value
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array))
        inputs = list(by_name.values())
        outputs = []
        for output, value in zip(self.session.get_outputs(), self.session.run(None, feeds), strict=True):
            source = by_name.get(in_place.get(output.name, ""))
            if source is not None and (source.shape != value.shape or source.dtype != value.dtype):
                raise ValueError(f"output {output.name!r} ({value.shape}, {value.dtype}) cannot be written over "
                                 f"input {in_place[output.name]!r} ({source.shape}, {source.dtype}): "
                                 f"their {'shapes' if source.shape != value.shape else 'dtypes'} differ")
            outputs.append(source if source is not None else aligned_empty(value.shape, value.dtype))
        for output, array in zip(self.session.get_outputs(), outputs, strict=True):
            binding.bind_ortvalue_output(output.name, ort.OrtValue.ortvalue_from_numpy(array))
        binding.synchronize_inputs()
        return BoundRun(self.session, binding, inputs, [array.copy() for array in inputs], outputs)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input_name: x.detach().cpu().numpy()})[0]
        return torch.from_numpy(out)

    def outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every output by name (a detector's ``boxes`` and ``scores``)."""
        names = [o.name for o in self.session.get_outputs()]
        values = self.session.run(None, {self.input_name: x.detach().cpu().numpy()})
        return {name: torch.from_numpy(v) for name, v in zip(names, values, strict=True)}
