"""One builder for every family: a resolved :class:`NetSpec` in, modules out.

Family files describe a network as data (their paper's table) and :func:`resolve` states every
width; :class:`ConvNet` builds what the spec says and rounds nothing. :func:`build_block` builds
one block alone, with the names it has inside a network, and :func:`walk` gives each block's
input and output sizes: the keys of a latency lookup table. Feature maps can be tapped at any
stride present and at a block's expansion layer (:meth:`ConvNet.feature_maps`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from ..layers import (
    ConvBnAct,
    DepthwiseSeparable,
    InvertedResidual,
    ShuffleV1Unit,
    ShuffleV2OfficialUnit,
    ShuffleV2Unit,
    batch_norm,
    conv2d,
    make_activation,
)
from .resolve import resolve
from .spec import BlockSpec, BuildSettings, HeadSpec, NetSpec, StemSpec, check_block_widths

FEATURE_STRIDES = (4, 8, 16, 32)
DEFAULT_SETTINGS = BuildSettings()


@dataclass(frozen=True)
class FeatureInfo:
    """Where a feature map comes from: module path, channels, and reduction from the input."""

    module: str
    channels: int
    reduction: int


def build_block(block: BlockSpec, in_chs: int, settings: BuildSettings = DEFAULT_SETTINGS) -> nn.Module:
    """Build one resolved block for an input of ``in_chs`` channels.

    Its submodules have the names they have inside a network (``conv_pw``, ``conv_dw``, ``se``,
    ``conv_pwl``, ...), so ``build_block(spec.stages[i][j], ...)`` is ``blocks.i.j`` alone: what a
    latency lookup table times. Widths are built as stated.
    """
    if not isinstance(block, BlockSpec) or not block.is_resolved:
        raise ValueError(
            f"build_block needs a resolved block spec (one block, every width and residual stated), got {block}; "
            f"resolve the network spec first"
        )
    check_block_widths("block", block, in_chs)
    bn = {"bn_eps": settings.bn_eps, "bn_momentum": settings.bn_momentum}
    conv = {**bn, "padding": settings.padding}
    k, s, out, act = block.kernel, block.stride, block.out_chs, block.act
    conv["dilation"] = block.dilation  # only kinds with a kxk conv of their own take one (BlockSpec checks)
    if block.kind == "cn":
        return ConvBnAct(in_chs, out, k, s, act=act, **conv)
    if block.kind == "ds":
        return DepthwiseSeparable(
            in_chs, out, k, s, act=act, se=block.se, se_chs=block.se_chs, skip=block.residual, **conv
        )
    if block.kind == "dsa":
        return DepthwiseSeparable(in_chs, out, k, s, act=act, pw_act=True, skip=False, **conv)
    if block.kind == "ir":
        return InvertedResidual(
            in_chs, block.mid_chs, out, k, s, act=act, se=block.se, se_chs=block.se_chs, skip=block.residual, **conv
        )
    if settings.padding != "symmetric":
        raise ValueError(f"{block.kind} blocks support symmetric padding only, got {settings.padding!r}")
    if block.kind in ("sv1", "sv1o"):
        return ShuffleV1Unit(
            in_chs,
            out,
            s,
            block.groups,
            block.first_pw_grouped,
            act=act,
            official=block.kind == "sv1o",
            mid_chs=block.mid_chs,
            **bn,
        )
    if block.kind == "sv2":
        return ShuffleV2Unit(in_chs, out, s, act=act, mid_chs=block.mid_chs, **bn)
    if block.kind == "sv2o":
        return ShuffleV2OfficialUnit(in_chs, out, s, act=act, mid_chs=block.mid_chs, **bn)
    raise AssertionError(block.kind)  # BlockSpec validation makes this unreachable


@dataclass(frozen=True)
class Site:
    """One step of a network: the stem, a block ``blocks.i.j``, or the head.

    ``in_size`` / ``out_size`` are (H, W); every layer pads 'same', so a stride-s step maps H
    to ceil(H / s). The head's output is the logits (``out_size`` (1, 1), ``stride`` None).
    """

    name: str
    spec: StemSpec | BlockSpec | HeadSpec
    in_chs: int
    out_chs: int
    in_size: tuple[int, int]
    out_size: tuple[int, int]
    stride: int | None

    def key(self) -> str:
        """A readable lookup-table key: what the site computes and on what input."""
        return f"{self.spec} in{self.in_chs} {self.in_size[0]}x{self.in_size[1]}"


def walk(spec: NetSpec | str, input_size: int | tuple[int, int] = 224) -> list[Site]:
    """Every site of the network in order, with its input and output channels and sizes.

    ``spec`` is resolved first if it is a table (``lightnets.models.resolve``). These are the
    keys of a latency lookup table (NetAdapt, platform-aware NAS): two sites with the same
    :meth:`Site.key` build and run the same layers.
    """
    spec = _as_resolved(spec)
    h, w = _size(input_size)
    sites = []
    stem_stride = spec.stem.conv.stride * (2 if spec.stem.pool else 1)
    out = (_ceil(h, stem_stride), _ceil(w, stem_stride))
    sites.append(Site("stem", spec.stem, spec.settings.in_chans, spec.stem.conv.out_chs, (h, w), out, stem_stride))
    chs = spec.stem.conv.out_chs
    for name, block in spec.blocks():
        size = (_ceil(out[0], block.stride), _ceil(out[1], block.stride))
        sites.append(Site(name, block, chs, block.out_chs, out, size, block.stride))
        chs, out = block.out_chs, size
    sites.append(Site("head", spec.head, chs, spec.head.num_classes, out, (1, 1), None))
    return sites


def _ceil(size: int, stride: int) -> int:
    return -(-size // stride)


def _size(input_size: int | tuple[int, int]) -> tuple[int, int]:
    pair = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pair):
        raise ValueError(f"input_size must be a positive integer or an (H, W) pair of them, got {input_size!r}")
    return pair  # type: ignore[return-value]


def _as_resolved(spec: NetSpec | str) -> NetSpec:
    if isinstance(spec, str):
        spec = NetSpec.parse(spec)
    if not isinstance(spec, NetSpec):
        raise ValueError(f"expected a NetSpec or its string form, got {type(spec).__name__}")
    return resolve(spec)


def init_weights(module: nn.Module) -> None:
    """The initialisation torchvision and timm use for these families: He-normal fan-out for
    convolutions, N(0, 0.01) for the classifier, BN to identity."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, 0, 0.01)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def _stem_layers(stem: StemSpec, settings: BuildSettings) -> dict[str, nn.Module]:
    conv = stem.conv
    return {
        "conv_stem": conv2d(settings.in_chans, conv.out_chs, conv.kernel, conv.stride, padding=settings.padding),
        "bn1": batch_norm(conv.out_chs, settings.bn_eps, settings.bn_momentum),
        "act1": make_activation(conv.act),
        "stem_pool": nn.MaxPool2d(3, 2, 1) if stem.pool else nn.Identity(),
    }


def _head_layers(head: HeadSpec, in_chs: int, settings: BuildSettings) -> dict[str, nn.Module]:
    layers: dict[str, nn.Module] = {"conv_head": nn.Identity(), "bn2": nn.Identity(), "act2": nn.Identity()}
    if head.conv_chs is not None and head.pool_first:
        layers["conv_head"] = nn.Conv2d(in_chs, head.conv_chs, 1, bias=True)
        layers["act2"] = make_activation(head.act)
    elif head.conv_chs is not None:
        layers["conv_head"] = conv2d(in_chs, head.conv_chs, 1)
        layers["bn2"] = batch_norm(head.conv_chs, settings.bn_eps, settings.bn_momentum)
        layers["act2"] = make_activation(head.act)
    layers["global_pool"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten(1)
    layers["dropout"] = nn.Dropout(head.dropout)
    layers["classifier"] = nn.Linear(head.conv_chs or in_chs, head.num_classes, bias=head.bias)
    return layers


class Stem(nn.Module):
    """The stem alone (conv, BN, activation, [max pool]), named as inside a network."""

    def __init__(self, stem: StemSpec, settings: BuildSettings = DEFAULT_SETTINGS) -> None:
        super().__init__()
        for name, layer in _stem_layers(stem, settings).items():
            setattr(self, name, layer)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem_pool(self.act1(self.bn1(self.conv_stem(x))))


class Head(nn.Module):
    """The head alone: [conv-BN-act], global pool, [MobileNetV3's conv-act], dropout, classifier."""

    def __init__(self, head: HeadSpec, in_chs: int, settings: BuildSettings = DEFAULT_SETTINGS) -> None:
        super().__init__()
        self.pool_first = head.pool_first
        for name, layer in _head_layers(head, in_chs, settings).items():
            setattr(self, name, layer)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.pool_first:
            x = self.act2(self.bn2(self.conv_head(x)))
        x = self.global_pool(x)
        if self.pool_first:
            x = self.act2(self.conv_head(x))
        return self.classifier(self.dropout(self.flatten(x)))


def build_site(site: Site, settings: BuildSettings = DEFAULT_SETTINGS) -> nn.Module:
    """The module one :func:`walk` site runs: the stem, a block or the head, built alone."""
    if isinstance(site.spec, StemSpec):
        return Stem(site.spec, settings)
    if isinstance(site.spec, HeadSpec):
        return Head(site.spec, site.in_chs, settings)
    return build_block(site.spec, site.in_chs, settings)


class Backbone(nn.Module):
    """A network's stem and stages without its classification head: what dense heads build on.

    Built from a resolved :class:`NetSpec` exactly as :class:`ConvNet` builds it, with the same
    module names (``conv_stem, bn1, [stem_pool], blocks.i.j``), but the spec's head (last conv,
    pool, classifier) is not built, as torchvision's ``IntermediateLayerGetter`` drops the layers
    after the last map a segmentation head reads and timm's ``features_only`` drops the head.
    ``forward`` returns the last stage's map; :meth:`feature_maps` returns any of
    :meth:`available_taps`. ``spec.with_output_stride(16)`` gives a backbone whose last stages
    are dilated instead of strided (MobileNetV3 section 6.3).
    """

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        if not isinstance(spec, NetSpec):
            raise ValueError(
                f"{type(self).__name__} takes a NetSpec (see lightnets.build for strings), got {type(spec).__name__}"
            )
        spec.require_resolved(type(self).__name__)
        from .memory import check_request  # memory walks specs with this module's walk()

        check_request(spec, "building this network")
        self.spec = spec
        settings, stem = spec.settings, spec.stem.conv
        self.in_chans = settings.in_chans
        for name, layer in _stem_layers(spec.stem, settings).items():
            setattr(self, name, layer)
        reduction = stem.stride
        taps = [FeatureInfo("act1", stem.out_chs, reduction)]
        if spec.stem.pool:
            reduction *= 2
            taps.append(FeatureInfo("stem_pool", stem.out_chs, reduction))
        coarse = list(taps)

        chs = stem.out_chs
        stage_modules = []
        for i, stage in enumerate(spec.stages):
            blocks = []
            for j, block in enumerate(stage):
                try:
                    blocks.append(build_block(block, chs, settings))
                except ValueError as err:
                    raise ValueError(f"blocks.{i}.{j}: {err}") from None
                if block.kind == "ir":
                    # The expansion layer: where MobileNetV3 (section 6.3) attaches SSDLite.
                    taps.append(FeatureInfo(f"blocks.{i}.{j}.act1", block.mid_chs, reduction))
                reduction *= block.stride
                chs = block.out_chs
                taps.append(FeatureInfo(f"blocks.{i}.{j}", chs, reduction))
            stage_modules.append(nn.Sequential(*blocks))
            taps.append(FeatureInfo(f"blocks.{i}", chs, reduction))
            coarse.append(taps[-1])
        self.blocks = nn.Sequential(*stage_modules)
        # Before init_weights, so a ConvNet initialises its head with the same random draws as ever.
        self._build_head(chs, reduction, taps, coarse)

        self._taps = {t.module: t for t in taps}
        self._coarse = coarse
        #: The last map at each of the strides 4, 8, 16, 32 that the network has.
        self.feature_info = [
            [f for f in coarse if f.reduction == stride][-1]
            for stride in FEATURE_STRIDES
            if any(f.reduction == stride for f in coarse)
        ]
        self.feature_channels = [f.channels for f in self.feature_info]
        init_weights(self)

    def _build_head(self, chs: int, reduction: int, taps: list[FeatureInfo], coarse: list[FeatureInfo]) -> None:
        """Add the layers after the last stage, and their taps; a backbone has none."""
        self.num_features = chs

    def check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"{type(self).__name__} expects input of shape (N, {self.in_chans}, H, W), got {tuple(x.shape)}"
            )
        weights = self.conv_stem.weight.dtype
        # Under autocast a float input of another precision is cast by torch; otherwise torch's
        # own message ("expected scalar type Byte but found Float") names neither the input nor the fix.
        if x.dtype != weights and not (x.is_floating_point() and torch.is_autocast_enabled(x.device.type)):
            raise ValueError(
                f"{type(self).__name__} expects a {weights} input (the dtype of its weights), got {x.dtype}: "
                f"convert images with x.to({weights}) (integer pixels: scaled and normalised first, as "
                f"lightnets.formats.load_image does)"
            )

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(self.conv_stem(x)))

    def _pre_pool_head(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, before global pooling."""
        self.check_input(x)
        # One stage at a time, rebinding ``x``, so that a feature map is freed once the next
        # stage has consumed it. ``self.blocks(stem_output)`` kept its argument alive for the
        # whole call: for MobileNetV2 the 32 x 112 x 112 stem output then stayed allocated
        # through all 17 blocks, which changed the allocator's reuse pattern and doubled the
        # page faults per forward pass (2,650 -> 6,100), 1.13-1.33x torchvision's eager time
        # for the same operators on the same weights. Hooks on each stage still fire; a hook
        # on the ``blocks`` container itself does not.
        x = self._stem(x)
        x = self.stem_pool(x)
        for stage in self.blocks:
            x = stage(x)
        return self._pre_pool_head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)

    def available_taps(self) -> list[FeatureInfo]:
        """Every map :meth:`feature_maps` can return: the stem, each block and stage output, each
        inverted residual's expansion layer (``blocks.i.j.act1``), and a pre-pool head conv."""
        return list(self._taps.values())

    def feature_maps(self, x: torch.Tensor, taps: list[int | str] | None = None) -> list[torch.Tensor]:
        """Feature maps, in the order asked for.

        ``taps`` holds strides (the last map at that stride: 4, 8, 16, 32 or any the network
        has) and module paths from :meth:`available_taps`, e.g. ``"blocks.5.0.act1"``, the
        stride-16 expansion layer MobileNetV3-Large feeds to SSDLite (section 6.3). The default
        is :attr:`feature_info`: strides 4, 8, 16 and 32, as far as the network has them (the
        stride-32 map equals ``forward_features(x)``). The forward pass stops once every
        requested map is computed.
        """
        self.check_input(x)
        paths = [f.module for f in self.feature_info] if taps is None else [self._tap_path(t) for t in taps]
        # A stage's output is its last block's: hook the block, since stages are not called
        # as modules below (blocks run one at a time so the pass can stop early).
        hooked = {p: self._block_path(p) for p in paths}
        captured: dict[str, torch.Tensor] = {}

        def keep(path: str):
            def hook(module: nn.Module, args: object, output: torch.Tensor) -> None:
                captured[path] = output

            return hook

        handles = [self.get_submodule(target).register_forward_hook(keep(target)) for target in set(hooked.values())]
        wanted = set(hooked.values())
        try:
            x = self.stem_pool(self._stem(x))
            for stage in self.blocks:
                if captured.keys() >= wanted:
                    break
                for block in stage:
                    if captured.keys() >= wanted:
                        break
                    x = block(x)
            if not captured.keys() >= wanted:
                self._pre_pool_head(x)
        finally:
            for handle in handles:
                handle.remove()
        return [captured[hooked[p]] for p in paths]

    def tap(self, tap: int | str) -> FeatureInfo:
        """Where a tap of :meth:`feature_maps` comes from: its module path, channels and stride."""
        return self._taps[self._tap_path(tap)]

    def _tap_path(self, tap: int | str) -> str:
        if isinstance(tap, bool) or not isinstance(tap, (int, str)):
            raise ValueError(f"a tap is a stride (int) or a module path (str), got {tap!r}")
        if isinstance(tap, int):
            at_stride = [f for f in self._coarse if f.reduction == tap]
            if not at_stride:
                strides = sorted({f.reduction for f in self._coarse})
                raise ValueError(f"this network has no feature map at stride {tap}; it has strides {strides}")
            return at_stride[-1].module
        if tap not in self._taps:
            raise ValueError(
                f"no tap {tap!r}; available: strides {sorted({f.reduction for f in self._coarse})} or module paths "
                f"{', '.join(self._taps)}"
            )
        return tap

    def _block_path(self, path: str) -> str:
        parts = path.split(".")
        if len(parts) == 2 and parts[0] == "blocks":
            return f"{path}.{len(self.blocks[int(parts[1])]) - 1}"
        return path


class ConvNet(Backbone):
    """The network every family builds: stem, stages of blocks, head, classifier.

    Built from a resolved :class:`NetSpec` (``model.spec``), exactly as stated. Layout and
    names follow timm so its checkpoints load unchanged where the network is the same:
    ``conv_stem, bn1, [stem_pool], blocks.i.j, [conv_head, bn2], classifier``.

    A head conv before the pool is a 1x1 conv-BN-act on the last feature map (MobileNetV2,
    ShuffleNetV2 conv5). With ``pool_first`` it is MobileNetV3's efficient last stage (paper
    section 5.1): pool first, then a 1x1 conv with bias and no BN, which costs 1280 x 960
    multiply-adds instead of 49 times that.
    """

    def _build_head(self, chs: int, reduction: int, taps: list[FeatureInfo], coarse: list[FeatureInfo]) -> None:
        head = self.spec.head
        self.num_classes = head.num_classes
        self.head_after_pool = head.pool_first
        for name, layer in _head_layers(head, chs, self.spec.settings).items():
            setattr(self, name, layer)
        if head.conv_chs is not None and not head.pool_first:
            taps.append(FeatureInfo("act2", head.conv_chs, reduction))
            coarse.append(taps[-1])
        self.num_features = head.conv_chs or chs
        self.classifier_bias = head.bias

    def _pre_pool_head(self, x: torch.Tensor) -> torch.Tensor:
        if self.head_after_pool:
            return x
        return self.act2(self.bn2(self.conv_head(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, [efficient last stage], dropout, classifier."""
        x = self.global_pool(x)
        if self.head_after_pool:
            x = self.act2(self.conv_head(x))
        x = self.dropout(self.flatten(x))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a fresh one for ``num_classes`` classes (``spec`` follows)."""
        check_positive_int("num_classes", num_classes)
        self.num_classes = num_classes
        self.spec = self.spec.replace(head=dataclasses.replace(self.spec.head, num_classes=num_classes))
        self.classifier = nn.Linear(self.num_features, num_classes, bias=self.classifier_bias)
        nn.init.normal_(self.classifier.weight, 0, 0.01)
        if self.classifier.bias is not None:
            nn.init.zeros_(self.classifier.bias)

    def architecture(self) -> list[str]:
        """The network as its spec, one part per line (``NetSpec.parse`` reads it back)."""
        return self.spec.lines()


def build(spec: NetSpec | str) -> ConvNet:
    """Build a network from its spec (a :class:`NetSpec` or its string form).

    A table-level spec (ratios, repeats) is resolved first at width 1; a resolved spec, such
    as ``model.spec`` or a pruned child, is built exactly as stated.
    """
    return ConvNet(_as_resolved(spec))


def check_positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
