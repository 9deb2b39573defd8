"""Detection models: SSDLite (MobileNetV2 and V3 section 6.2), against torchvision's and SSD's formulas."""

import math

import pytest
import torch

import lightnets
from lightnets import catalog
from lightnets.cost import count_params
from lightnets.models.ssdlite import decode_boxes, encode_boxes
from lightnets.testing import randomize_for_parity

DETECTION = lightnets.list_models(task="detection")
# torchvision's SSDLite320_MobileNet_V3_Large_Weights metadata, "num_params" (91 classes).
TORCHVISION_SSDLITE_PARAMS = 3_440_060

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def torchvision():
    return pytest.importorskip("torchvision")


def small(name, **options):
    """A registered detector, as narrow as its name allows."""
    if name != "ssdlite320_mobilenet_v3_large":
        options.setdefault("width_mult", 0.25)
    return lightnets.create_model(name, **options)


def one_box_target(box=(10.0, 20.0, 60.0, 90.0), label=1):
    return {"boxes": torch.tensor([box]), "labels": torch.tensor([label])}


def test_registry_lists_the_detection_models():
    assert DETECTION == [
        "ssdlite_mobilenet_v3_large", "ssdlite_mobilenet_v3_small", "ssdlite_mobilenet_v2",
        "ssdlite320_mobilenet_v3_large",
    ]
    assert all(catalog.task_of(name) == "detection" for name in DETECTION)
    assert not set(DETECTION) & set(lightnets.list_models(task="classification") + lightnets.list_models(
        task="segmentation"))


def test_ssdlite320_has_torchvisions_parameter_count(torchvision):
    with torch.device("meta"):
        ours = lightnets.create_model("ssdlite320_mobilenet_v3_large")
        theirs = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
    assert count_params(ours) == count_params(theirs) == TORCHVISION_SSDLITE_PARAMS
    # the stride-16 expansion of the first stride-32 block, and the reduced-tail 1x1 conv
    taps = [(t.module, t.channels, t.reduction) for t in ours.taps]
    assert taps == [("blocks.5.0.act1", 672, 16), ("blocks.6", 480, 32)]


def test_ssdlite320_outputs_and_detections_equal_torchvisions(torchvision):
    from lightnets.convert import from_torchvision

    theirs = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
    randomize_for_parity(theirs)  # random BN statistics: identity BNs would hide a misplaced layer
    with torch.no_grad():  # spread the class scores, so that the detections depend on every logit
        for block in theirs.head.classification_head.module_list:
            block[1].weight.mul_(30)
            block[1].bias.normal_(0, 1)
    ours = lightnets.create_model("ssdlite320_mobilenet_v3_large").eval()
    ours.load_state_dict(from_torchvision("ssdlite320_mobilenet_v3_large", theirs.state_dict()), strict=True)
    image = torch.rand(3, 320, 320)
    x = ((image - 0.5) / 0.5)[None]  # torchvision's transform: mean and std 0.5
    with torch.no_grad():
        expected = theirs([image])[0]
        head = theirs.head(list(theirs.backbone(x).values()))
        boxes, logits = ours(x)
        got = ours.detect(x)[0]
    torch.testing.assert_close(boxes, head["bbox_regression"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits, head["cls_logits"], atol=1e-4, rtol=1e-4)
    assert len(expected["scores"]) == 300 and expected["scores"][0] > 0.5  # a real ranking, not uniform scores
    assert len(set(expected["labels"].tolist())) > 5
    torch.testing.assert_close(got["boxes"], expected["boxes"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got["scores"], expected["scores"], atol=1e-4, rtol=1e-4)
    assert torch.equal(got["labels"], expected["labels"])


@pytest.mark.parametrize("name", DETECTION)
def test_forward_loss_backward(name):
    model = small(name, num_classes=4).train()
    x = torch.randn(2, 3, 128, 128)
    boxes, logits = model(x)
    num = model.anchors((128, 128)).shape[0]
    assert boxes.shape == (2, num, 4) and logits.shape == (2, num, 4)
    targets = [one_box_target(), {"boxes": torch.tensor([[0.0, 0.0, 128.0, 128.0], [70.0, 5.0, 90.0, 30.0]]),
                                  "labels": torch.tensor([3, 2])}]
    losses = model.loss((boxes, logits), targets, (128, 128))
    assert set(losses) == {"bbox_regression", "classification"}
    assert all(v.dim() == 0 and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.backbone.conv_stem.weight.grad.abs().sum() > 0
    assert model.extra[-1].conv_pwl.conv.weight.grad.abs().sum() > 0
    with torch.no_grad():  # the same outputs in eval mode, at a size no multiple of 32
        boxes, logits = model.eval()(torch.randn(1, 3, 100, 130))
    assert boxes.shape == (1, model.anchors((100, 130)).shape[0], 4) and logits.shape[-1] == 4


def test_anchors_follow_ssds_formulas():
    model = small("ssdlite_mobilenet_v3_small")
    anchors = model.anchors((320, 320))
    grids = [20, 10, 5, 3, 2, 1]  # strides 16 and 32, then four stride-2 extra layers
    assert model.grid_sizes((320, 320)) == [(g, g) for g in grids]
    assert anchors.shape == (6 * sum(g * g for g in grids), 4)  # two squares and two per aspect ratio (2, 3)
    scales = [0.2 + 0.75 * k / 5 for k in range(6)] + [1.0]
    c = 0.5 / 20 * 320  # the first cell's centre
    s0, s0_prime = scales[0] * 320, math.sqrt(scales[0] * scales[1]) * 320
    expected_first = [
        [c - s0 / 2, c - s0 / 2, c + s0 / 2, c + s0 / 2],
        [c - s0_prime / 2, c - s0_prime / 2, c + s0_prime / 2, c + s0_prime / 2],
        [c - s0 * math.sqrt(2) / 2, c - s0 / math.sqrt(2) / 2, c + s0 * math.sqrt(2) / 2, c + s0 / math.sqrt(2) / 2],
    ]
    torch.testing.assert_close(anchors[:3], torch.tensor(expected_first), atol=1e-4, rtol=0)
    # the last box: the 1x1 map's 1:3 box, 0.95 * sqrt(3) > 1 high, so clipped to the whole image height
    half_w = scales[5] / math.sqrt(3) * 320 / 2
    torch.testing.assert_close(anchors[-1], torch.tensor([160 - half_w, 0.0, 160 + half_w, 320.0]), atol=1e-4, rtol=0)
    # sizes are relative to each side: on a 2:1 image the square boxes are 2:1 too
    wide = model.anchors((160, 320))
    assert model.grid_sizes((160, 320)) == [(10, 20), (5, 10), (3, 5), (2, 3), (1, 2), (1, 1)]
    cy, half_h = 0.5 / 10 * 160, scales[0] * 160 / 2
    expected_wide = torch.tensor([c - s0 / 2, cy - half_h, c + s0 / 2, cy + half_h])
    torch.testing.assert_close(wide[0], expected_wide, atol=1e-4, rtol=0)
    assert model.anchors((320, 320)) is anchors  # cached


def test_box_coding_round_trips():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 20.0], [5.0, 5.0, 45.0, 25.0], [100.0, 50.0, 140.0, 130.0]])
    boxes = torch.tensor([[1.0, 2.0, 12.0, 18.0], [0.0, 10.0, 30.0, 40.0], [90.0, 60.0, 150.0, 100.0]])
    codes = encode_boxes(boxes, anchors)
    # SSD's codes with torchvision's weights (10, 10, 5, 5), worked out for the first pair
    expected = [10 * (6.5 - 5) / 10, 10 * (10 - 10) / 20, 5 * math.log(11 / 10), 5 * math.log(16 / 20)]
    torch.testing.assert_close(codes[0], torch.tensor(expected))
    torch.testing.assert_close(decode_boxes(codes, anchors), boxes, atol=1e-4, rtol=0)
    torch.testing.assert_close(decode_boxes(torch.zeros(2, 3, 4), anchors), anchors.expand(2, 3, 4))


def test_loss_is_zero_for_perfect_predictions_and_counts_hard_negatives():
    model = small("ssdlite_mobilenet_v3_small", num_classes=3)
    size = (128, 128)
    anchors = model.anchors(size)
    target = one_box_target(label=2)
    # every anchor's code encodes the one box: the matched ones are exactly right
    perfect_boxes = encode_boxes(target["boxes"].expand_as(anchors), anchors)[None]
    zeros = torch.zeros(1, anchors.shape[0], 3)
    losses = model.loss((perfect_boxes, zeros), [target], size)
    assert losses["bbox_regression"].abs() < 1e-5
    # equal logits: every anchor costs log 3, and one anchor in four counted is matched
    assert losses["classification"].item() == pytest.approx(4 * math.log(3), rel=1e-5)
    wrong = model.loss((torch.zeros_like(perfect_boxes), zeros), [target], size)
    assert wrong["bbox_regression"] > 0.1
    # logits favouring the right class lower it: the box's class on the anchors it matches (IoU >= 0.5,
    # and the best one), background on the others
    box = target["boxes"][0]
    inter = ((torch.min(anchors[:, 2], box[2]) - torch.max(anchors[:, 0], box[0])).clamp(min=0)
             * (torch.min(anchors[:, 3], box[3]) - torch.max(anchors[:, 1], box[1])).clamp(min=0))
    areas = (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])
    iou = inter / (areas + 50 * 70 - inter)
    matched = iou >= 0.5
    matched[iou.argmax()] = True
    favoured = zeros.clone()
    favoured[..., 0] = 5.0
    favoured[0, matched] = torch.tensor([0.0, 0.0, 5.0])
    assert model.loss((perfect_boxes, favoured), [target], size)["classification"] < 0.1
    favoured[0, matched] = torch.tensor([0.0, 5.0, 0.0])  # the wrong object class
    assert model.loss((perfect_boxes, favoured), [target], size)["classification"] > 4 * math.log(3)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ({"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
         r"detection target 0: an image without boxes: every image needs at least one object box"),
        (one_box_target(box=(10.0, 20.0, 140.0, 90.0)),
         r"is outside the 128x128 image \(allowed: 0 <= x1 < x2 <= 128"),
        (one_box_target(box=(-1.0, 20.0, 40.0, 90.0)), "is outside the 128x128 image"),
        (one_box_target(box=(50.0, 20.0, 50.0, 90.0)), "is degenerate: a box needs x2 > x1 and y2 > y1"),
        (one_box_target(box=(10.0, float("nan"), 50.0, 90.0)), "is not finite"),
        (one_box_target(label=0), r"box 0 has label 0; allowed 1..3 \(0 is the background"),
        (one_box_target(label=4), "has label 4; allowed 1..3"),
        ({"boxes": torch.zeros(1, 5), "labels": torch.ones(1, dtype=torch.int64)},
         r"boxes must be a tensor of shape \(k, 4\)"),
        ({"boxes": torch.tensor([[1.0, 1.0, 5.0, 5.0]]), "labels": torch.ones(1)}, "must be an integer tensor"),
        ({"boxes": torch.tensor([[1.0, 1.0, 5.0, 5.0]])}, "must be a dict with 'boxes' and 'labels'"),
    ],
)
def test_bad_targets_are_refused(target, message):
    model = small("ssdlite_mobilenet_v3_small", num_classes=4).eval()  # train-mode BN needs > 1 value: 1x1 maps
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 128, 128))
    with pytest.raises(ValueError, match=message):
        model.loss(outputs, [target], (128, 128))


def test_bad_outputs_sizes_and_options_are_refused():
    model = small("ssdlite_mobilenet_v3_small", num_classes=4).eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 128, 128))
    with pytest.raises(ValueError, match=r"targets must be a list of 1 dicts"):
        model.loss(outputs, [one_box_target(), one_box_target()], (128, 128))
    with pytest.raises(ValueError, match=r"pass the image_size the outputs were computed at"):
        model.decode(outputs, (160, 128))
    with pytest.raises(ValueError, match=r"image_size must be an \(H, W\) pair of positive integers"):
        model.anchors((128, 0))
    with pytest.raises(ValueError, match="num_classes counts the background"):
        lightnets.create_model("ssdlite_mobilenet_v2", num_classes=1)
    with pytest.raises(ValueError, match="reduced_tail must be True or False"):
        lightnets.create_model("ssdlite_mobilenet_v3_large", reduced_tail=1)
    with pytest.raises(ValueError, match="ssdlite320_mobilenet_v3_large fixes width_mult=1.0"):
        lightnets.create_model("ssdlite320_mobilenet_v3_large", width_mult=0.5)
    with pytest.raises(ValueError, match=r"score_thresh must be a number in \[0, 1\)"):
        model.detect(torch.randn(1, 3, 64, 64), score_thresh=1.5)


def test_detect_keeps_the_mode_and_needs_torchvision(monkeypatch):
    model = small("ssdlite_mobilenet_v3_small", num_classes=4).train()
    monkeypatch.setitem(__import__("sys").modules, "torchvision", None)
    monkeypatch.setitem(__import__("sys").modules, "torchvision.ops", None)
    with pytest.raises(ImportError, match=r'pip install "lightnets\[detection\]"'):
        model.detect(torch.randn(1, 3, 64, 64))
    assert model.training


def test_detections_lie_in_the_image(torchvision):
    model = small("ssdlite_mobilenet_v2", num_classes=5).eval()
    with torch.no_grad():
        found = model.detect(torch.randn(2, 3, 96, 128), detections_per_img=50)
    assert len(found) == 2
    for d in found:
        assert 0 < len(d["boxes"]) <= 50 and d["labels"].dtype == torch.int64
        assert ((d["labels"] >= 1) & (d["labels"] <= 4)).all()
        assert (d["boxes"][:, 0::2] >= 0).all() and (d["boxes"][:, 0::2] <= 128).all()
        assert (d["boxes"][:, 1::2] >= 0).all() and (d["boxes"][:, 1::2] <= 96).all()
        assert (d["scores"][:-1] >= d["scores"][1:]).all()


def test_torchvision_checkpoints_state_their_number_of_classes(torchvision, tmp_path):
    from lightnets.convert import convert_checkpoint
    from lightnets.convert.torchvision import torchvision_num_classes

    with torch.device("meta"):
        theirs = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=7
        )
    assert torchvision_num_classes(theirs.state_dict()) == 7  # not the regression head's 4 x 6 channels
    with pytest.raises(ValueError, match="ssdlite320_mobilenet_v3_large is a detection model"):
        convert_checkpoint("torchvision", "ssdlite320_mobilenet_v3_large", str(tmp_path / "x.pth"), str(tmp_path / "o"))


def test_cli_commands_for_classifiers_say_so(capsys):
    from lightnets.cli import main

    assert main(["spec", "ssdlite_mobilenet_v2"]) == 2
    assert "ssdlite_mobilenet_v2 is a detection model; this command handles classifiers" in capsys.readouterr().err


@pytest.mark.parametrize("size", ["large", "small"])
def test_reduced_tail_is_torchvisions(torchvision, size):
    from lightnets.models import ConvNet, mobilenet_v3_spec

    builder = getattr(torchvision.models, f"mobilenet_v3_{size}")
    with torch.device("meta"):
        ours, theirs = ConvNet(mobilenet_v3_spec(size, reduced_tail=True)), builder(reduced_tail=True)
        full = ConvNet(mobilenet_v3_spec(size))
    assert count_params(ours) == count_params(theirs) < count_params(full)


@pytest.mark.parametrize(
    ("name", "taps"),
    [
        ("ssdlite_mobilenet_v3_small", [("blocks.4.0.act1", 288, 16), ("blocks.5", 288, 32)]),
        # MobileNetV2 section 6.2: the expansion of layer 15, and the last layer (the 1280-wide 1x1 conv)
        ("ssdlite_mobilenet_v2", [("blocks.5.0.act1", 576, 16), ("blocks.7", 1280, 32)]),
    ],
)
def test_taps_are_the_c4_expansion_and_the_last_layer(name, taps):
    with torch.device("meta"):
        model = lightnets.create_model(name)
    assert [(t.module, t.channels, t.reduction) for t in model.taps] == taps
    assert [b.conv_pwl.conv.out_channels for b in model.extra] == [512, 256, 256, 128]


def test_ssdlite320_costs_torchvisions_published_ops():
    from lightnets.cost import count_madds

    # torchvision's SSDLite320_MobileNet_V3_Large_Weights metadata: "_ops": 0.583 (G multiply-adds at 320x320);
    # ours: 583,171,904, every convolution of the backbone and both heads (the box decoding and NMS have none)
    with torch.device("meta"):
        model = lightnets.create_model("ssdlite320_mobilenet_v3_large")
    assert count_madds(model, (1, 3, 320, 320)) == pytest.approx(0.583e9, rel=5e-4)
