"""Dense prediction models: LR-ASPP on MobileNetV3 (section 6.3), against torchvision's."""

import pytest
import torch
from torch import nn

import lightnets
from lightnets.cost import count_params
from lightnets.models import LRASPP, Backbone, mobilenet_v3_spec
from lightnets.testing import randomize_for_parity

DENSE = lightnets.list_models(task="segmentation")
# torchvision's LRASPP_MobileNet_V3_Large_Weights metadata, "num_params" (21 classes).
TORCHVISION_LRASPP_PARAMS = 3_221_538


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def torchvision():
    return pytest.importorskip("torchvision")


def meta_model(name, **options):
    with torch.device("meta"):
        return lightnets.create_model(name, **options)


def test_registry_lists_the_segmentation_models():
    from lightnets import catalog

    assert DENSE == ["lraspp_mobilenet_v3_large", "lraspp_mobilenet_v3_small"]
    assert set(DENSE) <= set(lightnets.list_models())
    assert not set(DENSE) & set(lightnets.list_models(task="classification"))
    assert all(catalog.task_of(name) == "segmentation" for name in DENSE)
    with pytest.raises(ValueError, match="unknown task 'depth'; allowed: classification, segmentation, detection"):
        lightnets.list_models(task="depth")


def test_lraspp_large_has_torchvisions_parameter_count(torchvision):
    assert count_params(meta_model("lraspp_mobilenet_v3_large")) == TORCHVISION_LRASPP_PARAMS
    with torch.device("meta"):
        theirs = torchvision.models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None)
    assert count_params(theirs) == TORCHVISION_LRASPP_PARAMS


def test_lraspp_large_outputs_equal_torchvisions_after_conversion(torchvision):
    from lightnets.convert import from_torchvision

    torch.manual_seed(0)
    theirs = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=5
    )
    randomize_for_parity(theirs)  # random BN statistics: identity BNs would hide a misplaced layer
    ours = lightnets.create_model("lraspp_mobilenet_v3_large", num_classes=5).eval()
    ours.load_state_dict(from_torchvision("lraspp_mobilenet_v3_large", theirs.state_dict()), strict=True)
    x = torch.randn(2, 3, 64, 72)  # 72 is no multiple of 16: both sides round the same way
    with torch.no_grad():
        expected, got = theirs(x)["out"], ours(x)
    assert got.shape == (2, 5, 64, 72)
    assert expected.abs().max() > 0.1  # not two near-zero outputs
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", DENSE)
def test_forward_backward_at_the_input_size(name):
    torch.manual_seed(0)
    model = lightnets.create_model(name, num_classes=3).train()
    x = torch.randn(2, 3, 64, 48)
    out = model(x)
    assert out.shape == (2, 3, 64, 48)
    target = torch.randint(0, 3, (2, 64, 48))
    nn.functional.cross_entropy(out, target).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.head.low_classifier.weight.grad.abs().sum() > 0
    assert model.backbone.conv_stem.weight.grad.abs().sum() > 0
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 37, 45)).shape == (1, 3, 37, 45)


@pytest.mark.parametrize(
    ("name", "low", "low_chs", "high", "high_chs"),
    [
        # torchvision's rule: the block that strides to 8 ("C2"), and the last map at stride 16
        ("lraspp_mobilenet_v3_large", "blocks.2.0", 40, "blocks.6", 960),
        ("lraspp_mobilenet_v3_small", "blocks.1.0", 24, "blocks.5", 576),
    ],
)
def test_taps_are_the_stride_8_and_dilated_stride_16_maps(name, low, low_chs, high, high_chs):
    model = meta_model(name)
    assert (model.low_tap.module, model.low_tap.channels, model.low_tap.reduction) == (low, low_chs, 8)
    assert (model.high_tap.module, model.high_tap.channels, model.high_tap.reduction) == (high, high_chs, 16)
    # the last stage is dilated, not strided: nothing in the backbone is coarser than 16
    assert max(t.reduction for t in model.backbone.available_taps()) == 16
    assert not hasattr(model.backbone, "classifier")  # the backbone drops the classification head
    size = "large" if name.endswith("large") else "small"
    last_stage = model.backbone.spec.stages[-2]
    assert all(b.stride == 1 and b.dilation == 2 for b in last_stage)
    # ... and keeps every weight of the classifier's trunk
    with torch.device("meta"):
        trunk = Backbone(mobilenet_v3_spec(size))
    assert count_params(model.backbone) == count_params(trunk)


def test_backbone_maps_have_the_taps_sizes():
    model = lightnets.create_model("lraspp_mobilenet_v3_small").eval()
    with torch.no_grad():
        low, high = model.backbone.feature_maps(torch.randn(1, 3, 64, 64), [model.low_tap.module, 16])
    assert low.shape == (1, 24, 8, 8) and high.shape == (1, 576, 4, 4)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_classes": 0}, "num_classes must be an integer >= 1, got 0"),
        ({"num_classes": 2.5}, "num_classes must be an integer >= 1, got 2.5"),
        ({"inter_channels": 0}, "inter_channels must be an integer >= 1, got 0"),
        ({"width_mult": -1.0}, "width_mult must be a finite number > 0, got -1.0"),
        ({"dropout": 0.2}, "unknown option 'dropout'; allowed: num_classes, width_mult, in_chans, bn_eps"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        lightnets.create_model("lraspp_mobilenet_v3_large", **options)


def test_bad_options_are_refused_by_the_builder_too():
    from lightnets.models import lraspp_mobilenet_v3_small

    with pytest.raises(ValueError, match="num_classes must be an integer >= 1, got 0"):
        lraspp_mobilenet_v3_small(num_classes=0)


def test_bad_taps_and_inputs_are_refused():
    with torch.device("meta"):
        backbone = Backbone(mobilenet_v3_spec("small").with_output_stride(16))
        with pytest.raises(ValueError, match="low-level tap must be at a finer stride than the high-level one"):
            LRASPP(backbone, 3, low=16, high=8)
        with pytest.raises(ValueError, match="no feature map at stride 32; it has strides"):
            LRASPP(backbone, 3, low=8, high=32)
    with pytest.raises(ValueError, match="needs a lightnets Backbone"):
        LRASPP(nn.Conv2d(3, 3, 1), 3, low=8, high=16)
    model = lightnets.create_model("lraspp_mobilenet_v3_small")
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 3, H, W\), got \(1, 1, 32, 32\)"):
        model(torch.randn(1, 1, 32, 32))


def test_segmentation_checkpoints_are_not_converted_yet(tmp_path):
    from lightnets.convert import convert_checkpoint

    with pytest.raises(ValueError, match="lraspp_mobilenet_v3_large is a segmentation model"):
        convert_checkpoint("torchvision", "lraspp_mobilenet_v3_large", str(tmp_path / "x.pth"), str(tmp_path / "o"))


def test_cli_commands_for_classifiers_say_so(capsys):
    from lightnets.cli import main

    assert main(["spec", "lraspp_mobilenet_v3_small"]) == 2
    assert "lraspp_mobilenet_v3_small is a segmentation model" in capsys.readouterr().err


def test_lraspp_large_costs_torchvisions_published_ops():
    from lightnets.cost import count_madds

    # torchvision's LRASPP_MobileNet_V3_Large_Weights metadata: "_ops": 2.086 (G multiply-adds at 520x520)
    assert count_madds(meta_model("lraspp_mobilenet_v3_large"), (1, 3, 520, 520)) == pytest.approx(2.086e9, rel=5e-4)
