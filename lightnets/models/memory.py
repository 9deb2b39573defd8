"""How much memory a request needs at least, from the network's spec, checked before any is allocated.

A width multiplier of 1e6, a 20000-pixel input or a 1,438-image batch at 224 used to end in
the allocator's own traceback (or the kernel's OOM killer) after the work had begun. Here a
*lower bound* is computed from the spec alone (no module is built): the parameters of every
convolution and the classifier, and the feature maps a forward pass (inference) or a training
step must hold. A request whose lower bound exceeds the memory the operating system reports as
available (``MemAvailable`` in ``/proc/meminfo``) cannot succeed and is refused with the
estimate; one below it may still run short, since the bound leaves out BatchNorm, activations'
copies and the allocator's overhead.
"""

from __future__ import annotations

from dataclasses import dataclass

from .builder import walk
from .spec import BlockSpec, HeadSpec, NetSpec, StemSpec

#: float32, the dtype every lightnets network is built in.
FLOAT_BYTES = 4
MEMINFO = "/proc/meminfo"


def available_memory() -> int | None:
    """Bytes the OS reports as available for new allocations (``MemAvailable``), or None where unknown."""
    try:
        with open(MEMINFO, encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # stated in kB (KiB)
    except (OSError, ValueError, IndexError):
        return None
    return None


def gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:,.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:,.1f} MiB"


def check_memory(what: str, needed: int, detail: str = "", hint: str = "") -> None:
    """Raise a ValueError when ``needed`` bytes (a lower bound) exceed the available memory."""
    available = available_memory()
    if available is None or needed <= available:
        return
    raise ValueError(
        f"{what} needs at least {gib(needed)} of memory{f' ({detail})' if detail else ''}, "
        f"but {gib(available)} is available (MemAvailable in {MEMINFO})" + (f"; {hint}" if hint else "")
    )


def _block_params(block: BlockSpec, in_chs: int) -> int:
    """The weights of a block's convolutions that it has whatever its options (a lower bound)."""
    k2, out, mid = block.kernel**2, block.out_chs, block.mid_chs or block.out_chs
    if block.kind == "cn":
        return in_chs * out * k2
    if block.kind in ("ds", "dsa"):
        return in_chs * k2 + in_chs * out
    if block.kind == "ir":
        return (in_chs * mid if mid != in_chs else 0) + mid * k2 + mid * out
    if block.kind in ("sv1", "sv1o"):
        return (in_chs * mid) // block.groups + mid * k2
    return mid * k2 + (mid * out) // 2  # sv2, sv2o: each branch gives half the output


def _head_params(head: HeadSpec, in_chs: int) -> int:
    if head.conv_chs is None:
        return in_chs * head.num_classes
    return in_chs * head.conv_chs + head.conv_chs * head.num_classes


def _maps(site) -> list[int]:
    """Elements of each convolution output of one image at a site (expansion, depthwise, projection)."""
    (ih, iw), (oh, ow) = site.in_size, site.out_size
    spec = site.spec
    if isinstance(spec, StemSpec):
        stride = spec.conv.stride
        return [site.out_chs * -(-ih // stride) * -(-iw // stride)]  # the conv's output, before any pool
    if isinstance(spec, HeadSpec):
        return [spec.conv_chs * oh * ow if spec.pool_first else spec.conv_chs * ih * iw] if spec.conv_chs else []
    maps = []
    mid = spec.mid_chs
    if mid and (spec.kind != "ir" or mid != site.in_chs):
        maps.append(mid * ih * iw)  # the first 1x1 conv (expansion, bottleneck) at the input's size
    if spec.kind != "cn":
        maps.append((mid or site.in_chs) * oh * ow)  # the depthwise conv
    maps.append(site.out_chs * oh * ow)
    return maps


@dataclass(frozen=True)
class MemoryEstimate:
    """Lower bounds: parameters (count), and the feature-map elements a pass holds."""

    params: int
    peak_elements: int  # inference: the most held at one time (a block's input, a conv's and its BN's outputs)
    saved_elements: int  # training: what the backward pass needs kept

    def needed(self, training: bool, bytes_per_element: int = FLOAT_BYTES) -> int:
        """Bytes: weights (and for training their gradients and one optimizer state) plus feature maps."""
        if training:
            return FLOAT_BYTES * 3 * self.params + bytes_per_element * self.saved_elements
        return FLOAT_BYTES * self.params + bytes_per_element * self.peak_elements

    def describe(self, training: bool, bytes_per_element: int = FLOAT_BYTES) -> str:
        weights = FLOAT_BYTES * (3 if training else 1) * self.params
        maps = bytes_per_element * (self.saved_elements if training else self.peak_elements)
        kept = "weights, gradients and optimizer state" if training else "weights"
        maps_text = f"; {gib(maps)} of feature maps" if maps else ""
        return f"{self.params:,} parameters: {gib(weights)} of {kept}{maps_text}"


def estimate_memory(spec: NetSpec, input_size: int | None = None, batch: int = 1) -> MemoryEstimate:
    """Lower bounds of the memory ``spec`` needs: parameters, and feature maps at ``input_size``
    (pixels, square; None: parameters only) for ``batch`` images.

    Counted from the spec alone, so a request too large to build is refused before anything is
    allocated. Parameters: every convolution's and the classifier's weights, without biases,
    BatchNorm or squeeze-and-excite. Inference holds at least a block's input, a convolution's
    output and BatchNorm's output (not computed in place) at once: the peak. Training keeps, for
    the backward pass, every convolution's output (which BatchNorm's backward reads) and
    BatchNorm's output (which the activation's reads), and the input batch.
    """
    sites = walk(spec, input_size or 1)
    params, peak, saved = 0, 0, 0
    for site in sites:
        if isinstance(site.spec, StemSpec):
            params += site.in_chs * site.out_chs * site.spec.conv.kernel**2
        elif isinstance(site.spec, HeadSpec):
            params += _head_params(site.spec, site.in_chs)
        else:
            params += _block_params(site.spec, site.in_chs)
        if input_size is None:
            continue
        maps = _maps(site)
        peak = max(peak, site.in_chs * site.in_size[0] * site.in_size[1] + 2 * max(maps, default=0))
        saved += 2 * sum(maps)
    if input_size is not None:
        first = sites[0]
        saved += first.in_chs * first.in_size[0] * first.in_size[1]  # the input batch itself
    return MemoryEstimate(params, batch * peak, batch * saved)


def spec_of(model) -> NetSpec | None:
    """The spec whose memory ``model`` needs at least: a classifier's own, a dense model's backbone's
    (:class:`~lightnets.models.Backbone`, which SSDLite and LR-ASPP build on), or None for a network
    without one.

    A backbone's spec states a classification head it does not build; it is replaced by the
    smallest head a spec can state (a one-class linear layer, a few hundred weights), so the
    estimate stays a lower bound. The dense heads themselves are not counted: they add to the need.
    """
    spec = getattr(model, "spec", None)
    if isinstance(spec, NetSpec):
        return spec
    spec = getattr(getattr(model, "backbone", None), "spec", None)
    if isinstance(spec, NetSpec):
        return spec.replace(head=HeadSpec(num_classes=1))
    return None


def check_request(
    spec: NetSpec, what: str, input_size: int | None = None, batch: int = 1, training: bool = False,
    bytes_per_element: int = FLOAT_BYTES,
) -> None:
    """Refuse (ValueError, with the estimate) a request the available memory cannot hold."""
    estimate = estimate_memory(spec, input_size, batch)
    check_memory(
        what, estimate.needed(training, bytes_per_element), estimate.describe(training, bytes_per_element),
        "use a smaller width multiplier" if input_size is None else "use a smaller batch, resolution or width",
    )
