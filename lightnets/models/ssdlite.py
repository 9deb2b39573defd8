"""SSDLite, the mobile SSD of MobileNetV2 (Sandler et al., 2018, arXiv:1801.04381, section 6.2) and
MobileNetV3 (Howard et al., 2019, arXiv:1905.02244, section 6.2).

SSD (Liu et al., 2016, arXiv:1512.02325) with every prediction-layer convolution replaced by a
separable one: a 3x3 depthwise conv-BN-ReLU6, then a 1x1 conv with bias. Six feature maps feed
the heads: the expansion layer (the 1x1 conv-BN-act before the depthwise conv) of the last
stride-2 block, at stride 16 ("C4"); the backbone's last layer at stride 32; and four extra
blocks (1x1 conv to half width, 3x3 depthwise stride 2, 1x1 conv, each with BN and ReLU6) of
512, 256, 256 and 128 channels at strides 64 to 512. MobileNetV3's SSDLite halves the channels
of the backbone's last stage ("reduced tail", Table 6).

Facts taken from torchvision 0.29 (``torchvision/models/detection/ssdlite.py``, ``ssd.py``,
``anchor_utils.py``, ``_utils.py``), whose ``ssdlite320_mobilenet_v3_large(weights=None,
weights_backbone=None)`` this module reproduces tensor for tensor (3,440,060 parameters with
91 classes):

- every BatchNorm, backbone included, has eps 1e-3 and momentum 0.03 (TensorFlow's decay 0.97);
  without pretrained weights every conv, backbone included, is drawn from N(0, 0.03), biases 0;
- default boxes (``DefaultBoxGenerator([[2, 3]] * 6, min_ratio=0.2, max_ratio=0.95)``): six per
  location, scales ``s_k = 0.2 + 0.75 k / 5`` for k = 0..5 and ``s_6 = 1``; per location the
  boxes (s_k, s_k), (s'_k, s'_k) with ``s'_k = sqrt(s_k s_{k+1})``, then for each aspect ratio
  a (s_k sqrt(a), s_k / sqrt(a)) and its transpose; widths and heights clipped to [0, 1];
  centres ``((j + 0.5) / W_k, (i + 0.5) / H_k)``, all relative to the image, so on a
  non-square image the boxes stretch with it;
- box coding (``BoxCoder(weights=(10, 10, 5, 5))``): ``10 dx / w_a``, ``10 dy / h_a``,
  ``5 log(w / w_a)``, ``5 log(h / h_a)``, the decoded log-sizes clamped at ``log(1000 / 16)``;
- matching (``SSDMatcher(0.5)``): an anchor takes the box it overlaps most if the IoU is >= 0.5,
  and every box also takes the anchor it overlaps most;
- loss: smooth L1 (beta 1, summed) on the matched anchors' codes, plus cross-entropy on the
  matched anchors and on the hardest unmatched ones, three per matched anchor in each image;
  both divided by the number of matched anchors in the batch;
- postprocess: softmax, decode, clip to the image; per class the scores above 0.001, their
  best 300; batched NMS at IoU 0.55; the best 300 detections per image;
- torchvision resizes every image to 320x320 and normalises with mean and std 0.5 (pixels in
  [0, 1] to [-1, 1]); here the caller resizes and normalises (``forward`` takes the network
  input, and boxes are in its pixels).

torchvision's extractor always builds 512/256/256/128 extra channels; ours scale with
``width_mult`` as TensorFlow's object detection API does (``max(16, int(d * width_mult))``), so
they are the same at width 1.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..layers import ConvBnAct, conv2d
from .builder import Backbone, FeatureInfo, check_positive_int
from .mobilenet_v2 import mobilenet_v2_spec
from .mobilenet_v3 import mobilenet_v3_spec
from .spec import BlockSpec, NetSpec
from .targets import check_detection_targets

EXTRA_CHANNELS = (512, 256, 256, 128)  # the four extra layers (MobileNetV2 section 6.2, TF's ssdlite layout)
MIN_DEPTH = 16  # TF object detection API's min_depth for the extra layers
ASPECT_RATIOS = (2, 3)  # per feature map, beside the two square boxes
MIN_RATIO, MAX_RATIO = 0.2, 0.95
BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
BOX_LOG_CLAMP = math.log(1000.0 / 16)
IOU_THRESH = 0.5
NEG_TO_POS = 3  # hard negative mining: positive_fraction 0.25
BN_EPS, BN_MOMENTUM = 1e-3, 0.03
INIT_STD = 0.03
DETECTION_EXTRA = 'pip install "lightnets[detection]"'


class ExtraBlock(nn.Module):
    """One extra feature layer: 1x1 conv to half width, 3x3 depthwise stride 2, 1x1 conv; BN and ReLU6 after each."""

    def __init__(self, in_chs: int, out_chs: int, bn_eps: float = BN_EPS, bn_momentum: float = BN_MOMENTUM) -> None:
        super().__init__()
        mid = out_chs // 2
        bn = {"bn_eps": bn_eps, "bn_momentum": bn_momentum, "act": "r6"}
        self.conv_pw = ConvBnAct(in_chs, mid, 1, **bn)
        self.conv_dw = ConvBnAct(mid, mid, 3, 2, groups=mid, **bn)
        self.conv_pwl = ConvBnAct(mid, out_chs, 1, **bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_pwl(self.conv_dw(self.conv_pw(x)))


class PredictionBlock(nn.Module):
    """SSDLite's separable prediction layer: 3x3 depthwise conv-BN-ReLU6, then a 1x1 conv with bias."""

    def __init__(self, in_chs: int, out_chs: int, bn_eps: float = BN_EPS, bn_momentum: float = BN_MOMENTUM) -> None:
        super().__init__()
        self.conv_dw = ConvBnAct(in_chs, in_chs, 3, groups=in_chs, act="r6", bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.conv_pw = conv2d(in_chs, out_chs, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_pw(self.conv_dw(x))


class SSDLiteHead(nn.Module):
    """One :class:`PredictionBlock` per feature map for the class logits and one for the box codes.

    ``forward`` returns ``(bbox_regression (N, A, 4), cls_logits (N, A, num_classes))``; the
    anchors of a map are ordered by row, column, then box (the order of :meth:`SSDLite.anchors`).
    """

    def __init__(self, in_channels: Sequence[int], anchors_per_location: Sequence[int], num_classes: int,
                 bn_eps: float = BN_EPS, bn_momentum: float = BN_MOMENTUM) -> None:
        super().__init__()
        self.num_classes = num_classes
        pairs = list(zip(in_channels, anchors_per_location, strict=True))
        self.classification_head = nn.ModuleList(
            PredictionBlock(c, num_classes * a, bn_eps, bn_momentum) for c, a in pairs
        )
        self.regression_head = nn.ModuleList(PredictionBlock(c, 4 * a, bn_eps, bn_momentum) for c, a in pairs)

    @staticmethod
    def _flatten(x: torch.Tensor, columns: int) -> torch.Tensor:
        n, _, h, w = x.shape
        # (N, A * K, H, W) -> (N, H, W, A, K) -> (N, H * W * A, K)
        return x.view(n, -1, columns, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, columns)

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        boxes = [self._flatten(block(f), 4) for block, f in zip(self.regression_head, features, strict=True)]
        logits = [
            self._flatten(block(f), self.num_classes)
            for block, f in zip(self.classification_head, features, strict=True)
        ]
        return torch.cat(boxes, 1), torch.cat(logits, 1)


def default_box_sizes(num_maps: int, aspect_ratios: Sequence[Sequence[float]], min_ratio: float = MIN_RATIO,
                      max_ratio: float = MAX_RATIO, clip: bool = True) -> list[list[tuple[float, float]]]:
    """Per feature map, the (width, height) of each default box relative to the image (SSD section 2.2)."""
    if num_maps > 1:
        scales = [min_ratio + (max_ratio - min_ratio) * k / (num_maps - 1) for k in range(num_maps)] + [1.0]
    else:
        scales = [min_ratio, max_ratio]
    sizes = []
    for k in range(num_maps):
        between = math.sqrt(scales[k] * scales[k + 1])
        pairs = [(scales[k], scales[k]), (between, between)]
        for ratio in aspect_ratios[k]:
            root = math.sqrt(ratio)
            pairs += [(scales[k] * root, scales[k] / root), (scales[k] / root, scales[k] * root)]
        sizes.append([(min(max(w, 0.0), 1.0), min(max(h, 0.0), 1.0)) if clip else (w, h) for w, h in pairs])
    return sizes


def encode_boxes(boxes: torch.Tensor, anchors: torch.Tensor, weights: Sequence[float] = BOX_WEIGHTS) -> torch.Tensor:
    """The regression targets of xyxy ``boxes`` relative to their xyxy ``anchors`` (same shape (..., 4))."""
    wx, wy, ww, wh = weights
    aw, ah = anchors[..., 2] - anchors[..., 0], anchors[..., 3] - anchors[..., 1]
    ax, ay = anchors[..., 0] + 0.5 * aw, anchors[..., 1] + 0.5 * ah
    bw, bh = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    bx, by = boxes[..., 0] + 0.5 * bw, boxes[..., 1] + 0.5 * bh
    return torch.stack(
        (wx * (bx - ax) / aw, wy * (by - ay) / ah, ww * torch.log(bw / aw), wh * torch.log(bh / ah)), dim=-1
    )


def decode_boxes(codes: torch.Tensor, anchors: torch.Tensor, weights: Sequence[float] = BOX_WEIGHTS) -> torch.Tensor:
    """xyxy boxes from regression ``codes`` (..., A, 4) and xyxy ``anchors`` (A, 4); inverse of :func:`encode_boxes`.

    The log-sizes are clamped at ``log(1000 / 16)`` first, so that a wild prediction cannot
    overflow ``exp``.
    """
    anchors = anchors.to(codes.dtype)
    wx, wy, ww, wh = weights
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ax, ay = anchors[:, 0] + 0.5 * aw, anchors[:, 1] + 0.5 * ah
    dx, dy = codes[..., 0] / wx, codes[..., 1] / wy
    dw = torch.clamp(codes[..., 2] / ww, max=BOX_LOG_CLAMP)
    dh = torch.clamp(codes[..., 3] / wh, max=BOX_LOG_CLAMP)
    cx, cy = dx * aw + ax, dy * ah + ay
    half_w, half_h = 0.5 * torch.exp(dw) * aw, 0.5 * torch.exp(dh) * ah
    return torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=-1)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of every xyxy box of ``a`` (M, 4) with every one of ``b`` (K, 4): (M, K)."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    top_left = torch.max(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def match_anchors(iou: torch.Tensor, threshold: float = IOU_THRESH) -> torch.Tensor:
    """For each anchor, the index of its box, or -1 (SSD section 2.2, torchvision's ``SSDMatcher``).

    ``iou`` is (boxes, anchors). An anchor matches the box it overlaps most when that IoU is
    at least ``threshold``; each box also claims the anchor it overlaps most, whatever the IoU,
    so that no box goes unmatched.
    """
    best, matches = iou.max(dim=0)
    matches = torch.where(best >= threshold, matches, torch.full_like(matches, -1))
    best_anchor = iou.argmax(dim=1)
    matches[best_anchor] = torch.arange(iou.shape[0], device=iou.device)
    return matches


def _image_size(image_size: object) -> tuple[int, int]:
    if isinstance(image_size, torch.Size):
        image_size = tuple(image_size)
    if (
        not isinstance(image_size, (tuple, list))
        or len(image_size) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in image_size)
    ):
        raise ValueError(f"image_size must be an (H, W) pair of positive integers, got {image_size!r}")
    return int(image_size[0]), int(image_size[1])


def check_targets(targets: object, batch: int, image_size: tuple[int, int], num_classes: int) -> None:
    """Raise ``ValueError`` naming the first target that is not a valid ground truth for SSDLite's loss:
    one target per image of the batch, each valid by :func:`~lightnets.models.targets.check_detection_targets`."""
    if not isinstance(targets, (list, tuple)) or len(targets) != batch:
        got = f"{len(targets)} targets" if isinstance(targets, (list, tuple)) else type(targets).__name__
        raise ValueError(f"targets must be a list of {batch} dicts (one per image of the batch), got {got}")
    check_detection_targets(targets, image_size, num_classes)


class SSDLite(nn.Module):
    """An SSDLite detector: a :class:`Backbone`, two of its maps, extra layers and separable heads.

    ``taps`` are two backbone taps (a stride or a module path from ``backbone.available_taps()``):
    the stride-16 expansion layer and the last map, in that order; ``extra_channels`` the widths
    of the extra layers after the second. ``num_classes`` counts the background, class 0
    (torchvision's convention), so a dataset of 80 object classes needs 81.

    The contract: ``forward(x)`` returns the raw head outputs ``(bbox_regression (N, A, 4),
    cls_logits (N, A, num_classes))`` in both train and eval mode (what ONNX export traces);
    :meth:`anchors` gives the A default boxes for an input size, :meth:`loss` the training loss,
    :meth:`decode` boxes and softmax scores, :meth:`detect` the final detections.
    """

    task = "detection"  # what lightnets.train.fit trains it for

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        taps: tuple[int | str, int | str],
        extra_channels: Sequence[int] = EXTRA_CHANNELS,
        aspect_ratios: Sequence[float] = ASPECT_RATIOS,
        min_ratio: float = MIN_RATIO,
        max_ratio: float = MAX_RATIO,
        bn_eps: float = BN_EPS,
        bn_momentum: float = BN_MOMENTUM,
    ) -> None:
        super().__init__()
        if not isinstance(backbone, Backbone):
            raise ValueError(
                f"SSDLite needs a lightnets Backbone (its taps feed the heads), got {type(backbone).__name__}"
            )
        _check_num_classes(num_classes)
        if not isinstance(taps, (tuple, list)) or len(taps) != 2:
            raise ValueError(f"taps must be two backbone taps (the stride-16 map, the last map), got {taps!r}")
        for i, chs in enumerate(extra_channels):
            check_positive_int(f"extra_channels[{i}]", chs)
        if not 0 < min_ratio < max_ratio <= 1:
            raise ValueError(f"need 0 < min_ratio < max_ratio <= 1, got min_ratio {min_ratio}, max_ratio {max_ratio}")
        self.backbone = backbone
        self.taps: tuple[FeatureInfo, FeatureInfo] = (backbone.tap(taps[0]), backbone.tap(taps[1]))
        if self.taps[0].reduction >= self.taps[1].reduction:
            raise ValueError(
                f"the first tap must be at a finer stride than the second; got {self.taps[0].module} at stride "
                f"{self.taps[0].reduction}, {self.taps[1].module} at stride {self.taps[1].reduction}"
            )
        self.num_classes = num_classes
        self.in_chans = backbone.in_chans
        chs = [t.channels for t in self.taps]
        extra = []
        for out in extra_channels:
            extra.append(ExtraBlock(chs[-1], out, bn_eps, bn_momentum))
            chs.append(out)
        self.extra = nn.ModuleList(extra)
        self.aspect_ratios = [tuple(aspect_ratios)] * len(chs)
        self.min_ratio, self.max_ratio = min_ratio, max_ratio
        self._box_sizes = default_box_sizes(len(chs), self.aspect_ratios, min_ratio, max_ratio)
        self.head = SSDLiteHead(chs, [len(s) for s in self._box_sizes], num_classes, bn_eps, bn_momentum)
        self._anchor_cache: dict[tuple, torch.Tensor] = {}
        # torchvision's from-scratch initialisation, backbone included (no ImageNet weights).
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, 0.0, INIT_STD)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The maps the heads read: the two taps, then each extra layer's output."""
        maps = self.backbone.feature_maps(x, [t.module for t in self.taps])
        y = maps[-1]
        for block in self.extra:
            y = block(y)
            maps.append(y)
        return maps

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.features(x))

    def grid_sizes(self, image_size: tuple[int, int]) -> list[tuple[int, int]]:
        """The (H, W) of each map the heads read, for an input of ``image_size``.

        Every layer pads 'same', so a stride-s layer maps a side n to ceil(n / s).
        """
        h, w = _image_size(image_size)
        sizes = [(-(-h // t.reduction), -(-w // t.reduction)) for t in self.taps]
        for _ in self.extra:
            sizes.append((-(-sizes[-1][0] // 2), -(-sizes[-1][1] // 2)))
        return sizes

    def anchors(self, image_size: tuple[int, int], *, device: torch.device | str | None = None,
                dtype: torch.dtype | None = None) -> torch.Tensor:
        """The default boxes (A, 4), xyxy in pixels of an input of ``image_size`` (H, W).

        Ordered as the heads' outputs: map by map, then row, column and box. Cached per size,
        device and dtype (default: the model's parameters').
        """
        h, w = _image_size(image_size)
        ref = self.head.regression_head[0].conv_pw.weight
        device = ref.device if device is None else torch.device(device)
        dtype = ref.dtype if dtype is None else dtype
        key = (h, w, device, dtype)
        if key not in self._anchor_cache:
            self._anchor_cache[key] = self._make_anchors(h, w).to(device=device, dtype=dtype)
        return self._anchor_cache[key]

    def _make_anchors(self, h: int, w: int) -> torch.Tensor:
        # In float32 and in torchvision's order of operations, so that the boxes agree bit for bit.
        boxes = []
        for (gh, gw), sizes in zip(self.grid_sizes((h, w)), self._box_sizes, strict=True):
            cy, cx = torch.meshgrid(
                (torch.arange(gh, dtype=torch.float32) + 0.5) / gh,
                (torch.arange(gw, dtype=torch.float32) + 0.5) / gw,
                indexing="ij",
            )
            centres = torch.stack((cx.reshape(-1), cy.reshape(-1)), -1).repeat_interleave(len(sizes), 0)
            wh = torch.tensor(sizes, dtype=torch.float32).repeat(gh * gw, 1)
            boxes.append(torch.cat((centres, wh), 1))
        cxcywh = torch.cat(boxes)
        scale = torch.tensor([w, h], dtype=torch.float32)
        centre, half = cxcywh[:, :2], 0.5 * cxcywh[:, 2:]
        return torch.cat(((centre - half) * scale, (centre + half) * scale), 1)

    def _check_outputs(self, outputs: object, image_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        num = self.anchors(image_size).shape[0]
        if (
            not isinstance(outputs, (tuple, list)) or len(outputs) != 2
            or not all(isinstance(t, torch.Tensor) for t in outputs)
        ):
            raise ValueError("outputs must be forward's (bbox_regression, cls_logits) pair of tensors")
        boxes, logits = outputs
        n = boxes.shape[0] if boxes.dim() else 0
        if boxes.shape != (n, num, 4) or logits.shape != (n, num, self.num_classes):
            raise ValueError(
                f"outputs for a {image_size[0]}x{image_size[1]} input must have shapes (N, {num}, 4) and "
                f"(N, {num}, {self.num_classes}), got {tuple(boxes.shape)} and {tuple(logits.shape)}: "
                f"pass the image_size the outputs were computed at"
            )
        return boxes, logits

    def loss(self, outputs: tuple[torch.Tensor, torch.Tensor], targets: list[dict[str, torch.Tensor]],
             image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """SSD's training loss: ``{"bbox_regression": ..., "classification": ...}``, two scalars.

        ``outputs`` is :meth:`forward`'s pair for a batch of inputs of ``image_size`` (H, W);
        ``targets`` holds one dict per image, ``"boxes"`` (k, 4) float xyxy in input pixels and
        ``"labels"`` (k,) int64 in 1..num_classes-1; every image needs at least one box.
        Smooth L1 on the matched anchors' box codes; cross-entropy on the matched anchors and the
        three times as many unmatched ones with the highest loss in each image (hard negative
        mining); both divided by the number of matched anchors.
        """
        image_size = _image_size(image_size)
        boxes, logits = self._check_outputs(outputs, image_size)
        check_targets(targets, boxes.shape[0], image_size, self.num_classes)
        anchors = self.anchors(image_size, device=boxes.device, dtype=boxes.dtype)
        box_losses, classes = [], []
        for codes, target in zip(boxes, targets, strict=True):
            gt, labels = target["boxes"].to(boxes), target["labels"].to(boxes.device)
            matches = match_anchors(box_iou(gt, anchors))
            fg = (matches >= 0).nonzero().squeeze(1)
            wanted = encode_boxes(gt[matches[fg]], anchors[fg])
            box_losses.append(F.smooth_l1_loss(codes[fg], wanted, reduction="sum"))
            cls = torch.zeros_like(matches)
            cls[fg] = labels[matches[fg]]
            classes.append(cls)
        classes = torch.stack(classes)
        ce = F.cross_entropy(logits.reshape(-1, self.num_classes), classes.reshape(-1), reduction="none")
        ce = ce.view(classes.shape)
        foreground = classes > 0
        num_negative = NEG_TO_POS * foreground.sum(1, keepdim=True)
        negative = ce.detach().clone()
        negative[foreground] = -float("inf")
        # rank of each anchor when the unmatched ones are sorted by loss, highest first
        rank = negative.argsort(1, descending=True).argsort(1)
        hard_negative = rank < num_negative
        count = max(1, int(foreground.sum()))
        return {
            "bbox_regression": torch.stack(box_losses).sum() / count,
            "classification": (ce[foreground].sum() + ce[hard_negative].sum()) / count,
        }

    def decode(self, outputs: tuple[torch.Tensor, torch.Tensor],
               image_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Boxes (N, A, 4), xyxy in pixels clipped to the image, and softmax scores (N, A, num_classes).

        Column 0 of the scores is the background. Tensor operations only, so it exports with
        :meth:`forward` for a fixed input size.
        """
        image_size = _image_size(image_size)
        codes, logits = self._check_outputs(outputs, image_size)
        boxes = decode_boxes(codes, self.anchors(image_size, device=codes.device, dtype=codes.dtype))
        h, w = image_size
        x = boxes[..., 0::2].clamp(min=0, max=w)
        y = boxes[..., 1::2].clamp(min=0, max=h)
        boxes = torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)
        return boxes, F.softmax(logits, dim=-1)

    def detect(self, x: torch.Tensor, *, score_thresh: float = 0.001, nms_thresh: float = 0.55,
               topk_candidates: int = 300, detections_per_img: int = 300) -> list[dict[str, torch.Tensor]]:
        """Detections per image: ``{"boxes": (k, 4) xyxy in pixels of x, "scores": (k,), "labels": (k,) int64}``.

        torchvision's postprocess: per object class, the scores above ``score_thresh`` and the
        best ``topk_candidates`` of them; non-maximum suppression per class at IoU ``nms_thresh``
        (``torchvision.ops.batched_nms``); the best ``detections_per_img``. Runs in the model's
        current mode and with autograd as the caller set them: call ``model.eval()`` (and
        ``torch.no_grad()``) first for inference.
        """
        if isinstance(score_thresh, bool) or not isinstance(score_thresh, (int, float)) or not 0 <= score_thresh < 1:
            raise ValueError(f"score_thresh must be a number in [0, 1), got {score_thresh!r}")
        if isinstance(nms_thresh, bool) or not isinstance(nms_thresh, (int, float)) or not 0 <= nms_thresh <= 1:
            raise ValueError(f"nms_thresh must be an IoU in [0, 1], got {nms_thresh!r}")
        check_positive_int("topk_candidates", topk_candidates)
        check_positive_int("detections_per_img", detections_per_img)
        try:
            from torchvision.ops import batched_nms
        except ImportError:
            raise ImportError(
                f"SSDLite.detect needs torchvision for its non-maximum suppression: {DETECTION_EXTRA}"
            ) from None
        boxes, scores = self.decode(self(x), tuple(x.shape[-2:]))
        results = []
        for image_boxes, image_scores in zip(boxes, scores, strict=True):
            kept_boxes, kept_scores, kept_labels = [], [], []
            for label in range(1, self.num_classes):
                score = image_scores[:, label]
                keep = score > score_thresh
                score, box = score[keep], image_boxes[keep]
                score, idx = score.topk(min(topk_candidates, score.numel()))
                kept_boxes.append(box[idx])
                kept_scores.append(score)
                kept_labels.append(torch.full_like(idx, label))
            all_boxes, all_scores, all_labels = torch.cat(kept_boxes), torch.cat(kept_scores), torch.cat(kept_labels)
            keep = batched_nms(all_boxes, all_scores, all_labels, nms_thresh)[:detections_per_img]
            results.append({"boxes": all_boxes[keep], "scores": all_scores[keep], "labels": all_labels[keep]})
        return results


def c4_expansion(backbone: Backbone) -> str:
    """The expansion layer of the backbone's last stride-2 block: SSDLite's first map ("C4", stride 16)."""
    strided = [name for name, block in backbone.spec.blocks() if block.stride > 1]
    if not strided:
        raise ValueError("this backbone has no stride-2 block after its stem")
    name = strided[-1]
    tap = f"{name}.act1"
    if tap not in {t.module for t in backbone.available_taps()}:
        raise ValueError(f"the last stride-2 block {name} has no expansion layer (an inverted residual has one)")
    return tap


def _detection_backbone(spec: NetSpec, bn_eps: float) -> Backbone:
    settings = dataclasses.replace(spec.settings, bn_eps=bn_eps, bn_momentum=BN_MOMENTUM)
    return Backbone(spec.replace(settings=settings))


def _extra(width_mult: float) -> tuple[int, ...]:
    return tuple(max(MIN_DEPTH, int(d * width_mult)) for d in EXTRA_CHANNELS)


def _ssdlite(spec: NetSpec, num_classes: int, width_mult: float, bn_eps: float, min_ratio: float,
             max_ratio: float) -> SSDLite:
    backbone = _detection_backbone(spec, bn_eps)
    last = f"blocks.{len(backbone.blocks) - 1}"
    return SSDLite(backbone, num_classes, (c4_expansion(backbone), last), _extra(width_mult), bn_eps=bn_eps,
                   min_ratio=min_ratio, max_ratio=max_ratio)


def _check_num_classes(num_classes: object) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(
            f"num_classes counts the background (class 0) and at least one object class: an integer >= 2, "
            f"got {num_classes!r}"
        )


def _check_options(num_classes: int, reduced_tail: bool) -> None:
    _check_num_classes(num_classes)
    if not isinstance(reduced_tail, bool):
        raise ValueError(f"reduced_tail must be True or False, got {reduced_tail!r}")


def ssdlite_mobilenet_v3_large(*, num_classes: int = 91, width_mult: float = 1.0, in_chans: int = 3,
                               reduced_tail: bool = True, bn_eps: float = BN_EPS, min_ratio: float = MIN_RATIO,
                               max_ratio: float = MAX_RATIO) -> SSDLite:
    """SSDLite on MobileNetV3-Large (section 6.2), torchvision's ``ssdlite320_mobilenet_v3_large`` layout.

    Maps: the expansion of ``blocks.5.0`` (672 channels, stride 16) and ``blocks.6``, the 1x1
    conv (480 channels with the reduced tail, 960 without; stride 32), then the four extra
    layers. 91 classes by default (COCO's 90 category ids and the background), as torchvision.
    ``width_mult`` scales the backbone and the extra layers. The registered
    ``ssdlite320_mobilenet_v3_large`` is this builder with ``width_mult=1.0`` and
    ``reduced_tail=True`` fixed (torchvision trains it at 320x320; any input size runs).
    ``min_ratio`` and ``max_ratio`` are the default boxes' smallest and largest scale, as
    fractions of the input (SSD section 2.2's s_min and s_max; 0.2 and 0.95 as torchvision):
    objects much smaller than ``min_ratio`` of the image match no default box at IoU 0.5.
    """
    _check_options(num_classes, reduced_tail)
    spec = mobilenet_v3_spec("large", width_mult=width_mult, in_chans=in_chans, reduced_tail=reduced_tail)
    return _ssdlite(spec, num_classes, width_mult, bn_eps, min_ratio, max_ratio)


def ssdlite_mobilenet_v3_small(*, num_classes: int = 91, width_mult: float = 1.0, in_chans: int = 3,
                               reduced_tail: bool = True, bn_eps: float = BN_EPS, min_ratio: float = MIN_RATIO,
                               max_ratio: float = MAX_RATIO) -> SSDLite:
    """SSDLite on MobileNetV3-Small, by the rule of :func:`ssdlite_mobilenet_v3_large` (the paper's Table 6 row).

    Maps: the expansion of ``blocks.4.0`` (288 channels, stride 16) and ``blocks.5`` (the 1x1
    conv, 288 channels with the reduced tail, 576 without). torchvision ships no such model.
    """
    _check_options(num_classes, reduced_tail)
    spec = mobilenet_v3_spec("small", width_mult=width_mult, in_chans=in_chans, reduced_tail=reduced_tail)
    return _ssdlite(spec, num_classes, width_mult, bn_eps, min_ratio, max_ratio)


def ssdlite_mobilenet_v2(*, num_classes: int = 91, width_mult: float = 1.0, in_chans: int = 3,
                         bn_eps: float = BN_EPS, min_ratio: float = MIN_RATIO,
                         max_ratio: float = MAX_RATIO) -> SSDLite:
    """SSDLite on MobileNetV2 (MobileNetV2 section 6.2).

    "The first layer of SSDLite is attached to the expansion of layer 15 (with output stride
    of 16). The second and the rest of SSDLite layers are attached on top of the last layer
    (with output stride of 32)": the expansion of ``blocks.5.0`` (576 channels) and the 1280-wide
    1x1 conv-BN-ReLU6, which the classifier has as its head and this backbone as a last stage
    (``blocks.7``). BN as torchvision's SSDLite (eps 1e-3, momentum 0.03), not the classifier's.
    """
    _check_options(num_classes, False)
    spec = mobilenet_v2_spec(width_mult=width_mult, in_chans=in_chans)
    head = spec.head
    last = BlockSpec("cn", out_chs=head.conv_chs, kernel=1, act=head.act)
    spec = spec.replace(stages=(*spec.stages, (last,)), head=dataclasses.replace(head, conv_chs=None, act=None))
    return _ssdlite(spec, num_classes, width_mult, bn_eps, min_ratio, max_ratio)
