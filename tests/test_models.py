import math

import pytest
import torch
from torch import nn

import lightnets
from lightnets.cost import count_madds, count_params

ALL = lightnets.list_models(task="classification")  # the LR-ASPP models: tests/test_dense.py


def meta_model(name, **options):
    with torch.device("meta"):
        return lightnets.create_model(name, **options)


# Parameter counts of torchvision's builders (torchvision docs, weights metadata "num_params").
TORCHVISION_PARAMS = {
    "mobilenet_v2": 3_504_872,
    "mobilenet_v3_large": 5_483_032,
    "mobilenet_v3_small": 2_542_856,
    "shufflenet_v2_x0_5": 1_366_792,
    "shufflenet_v2_x1_0": 2_278_604,
    "shufflenet_v2_x1_5": 3_503_624,
    "shufflenet_v2_x2_0": 7_393_996,
}


@pytest.mark.parametrize("name, expected", TORCHVISION_PARAMS.items())
def test_param_parity_with_torchvision(name, expected):
    assert count_params(meta_model(name)) == expected


@pytest.mark.parametrize("name", TORCHVISION_PARAMS)
def test_param_parity_with_torchvision_built_model(name):
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):
        theirs = getattr(torchvision.models, name)()
    assert count_params(meta_model(name)) == count_params(theirs)


def test_mobilenet_v1_matches_paper():
    model = meta_model("mobilenet_v1")
    # Table 4: 1.0 MobileNet-224, 4.2 million parameters; Table 6 / 8: 569 million Mult-Adds.
    assert count_params(model) == pytest.approx(4.2e6, rel=0.01)
    assert count_madds(model, (1, 3, 224, 224)) == pytest.approx(569e6, rel=0.01)


@pytest.mark.parametrize(
    "name, madds",
    [
        ("mobilenet_v1_050", 149e6),  # MobileNetV1 Table 6: 0.50 MobileNet-224, 149 M
        ("mobilenet_v1_025", 41e6),  # Table 6: 0.25 MobileNet-224, 41 M
        ("mobilenet_v2", 300e6),  # MobileNetV2 Table 4: 300 M
        ("mobilenet_v2_140", 585e6),  # MobileNetV2 Table 6 / TF reference: 1.4 -> 582 M (paper 585 M)
        ("mobilenet_v3_large", 217e6),  # MobileNetV3 Table 3: Large 1.0, 217 M
        ("mobilenet_v3_small", 56e6),  # Table 3: Small 1.0, 56 M
        ("shufflenet_v1_g3_x1_0", 137e6),  # ShuffleNetV1 Table 2: 1x, g = 3, 137 M (Table 1: 140 M)
        ("shufflenet_v1_g8_x1_0", 137e6),  # Table 2: 1x, g = 8, 137 M
        ("shufflenet_v2_x1_0", 145e6),  # torchvision's published 0.14 GFLOPs (paper 146 M)
    ],
)
def test_madds_match_papers(name, madds):
    assert count_madds(meta_model(name), (1, 3, 224, 224)) == pytest.approx(madds, rel=0.011)


@pytest.mark.parametrize("name", ALL)
def test_forward_all_sizes_eval(name):
    model = lightnets.create_model(name, num_classes=10).eval()
    with torch.no_grad():
        for size in (224, 64, 28):
            out = model(torch.randn(1, 3, size, size))
            assert out.shape == (1, 10)
            assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("size", [224, 64, 28])
def test_train_forward_backward(name, size):
    model = lightnets.create_model(name, num_classes=5).train()
    out = model(torch.randn(2, 3, size, size))
    loss = nn.functional.cross_entropy(out, torch.tensor([0, 1]))
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    assert model.conv_stem.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ALL)
def test_feature_maps_strides_and_channels(name):
    model = lightnets.create_model(name).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        maps = model.feature_maps(x)
        last = model.forward_features(x)
    assert [m.shape[1] for m in maps] == model.feature_channels
    assert [(m.shape[2], m.shape[3]) for m in maps] == [(64 // s, 96 // s) for s in (4, 8, 16, 32)]
    assert torch.equal(maps[-1], last)


def test_feature_channels_examples():
    assert meta_model("mobilenet_v2").feature_channels == [24, 32, 96, 1280]
    assert meta_model("mobilenet_v3_large").feature_channels == [24, 40, 112, 960]
    assert meta_model("shufflenet_v2_x1_0").feature_channels == [24, 116, 232, 1024]


@pytest.mark.parametrize("name", ALL)
def test_torch_export(name):
    model = lightnets.create_model(name, num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        assert torch.allclose(exported.module()(x), model(x), atol=1e-5)


def test_width_multiplier_shrinks_cost_roughly_quadratically():
    # MobileNetV1 section 3.3: cost falls roughly as alpha^2.
    full = count_madds(meta_model("mobilenet_v1"))
    half = count_madds(meta_model("mobilenet_v1", width_mult=0.5))
    assert 0.2 < half / full < 0.3


def test_resolution_multiplier_is_input_size():
    # MobileNetV1 section 3.4: cost scales as rho^2; 0.5 MobileNet-160 is 77 M (Table 7 prints 76 M).
    model = meta_model("mobilenet_v1_050")
    assert count_madds(model, (1, 3, 160, 160)) == pytest.approx(76e6, rel=0.02)


def test_mobilenet_v2_last_conv_scaled_only_above_one():
    # MobileNetV2 section 6.1: the width multiplier applies to all layers but the last conv (1280)
    # for multipliers below one; torchvision and the TF reference scale it above one: 1280 * 1.4.
    assert meta_model("mobilenet_v2_050").num_features == 1280
    assert meta_model("mobilenet_v2_140").num_features == 1792


def test_mobilenet_v3_head_kept_below_one():
    # MobileNetV3 Tables 1 and 2: heads of 1280 (Large) and 1024 (Small); the Keras application
    # (keras/src/applications/mobilenet_v3.py) scales them only when alpha > 1: 1280 * 1.25.
    assert meta_model("mobilenet_v3_large_075").num_features == 1280
    assert meta_model("mobilenet_v3_small_050").num_features == 1024
    assert meta_model("mobilenet_v3_large", width_mult=1.25).num_features == 1600


def test_mobilenet_v3_minimal_has_no_se_no_hswish_no_5x5():
    model = meta_model("mobilenet_v3_large", minimal=True)
    kinds = {type(m) for m in model.modules()}
    assert nn.Hardswish not in kinds and lightnets.layers.SqueezeExcite not in kinds
    assert all(m.kernel_size in ((1, 1), (3, 3)) for m in model.modules() if isinstance(m, nn.Conv2d))
    full = meta_model("mobilenet_v3_large")
    assert sum(isinstance(m, lightnets.layers.SqueezeExcite) for m in full.modules()) == 8
    assert sum(isinstance(m, nn.Hardswish) for m in full.modules()) > 0


def test_module_names_are_stable_with_and_without_se():
    full = dict(meta_model("mobilenet_v3_large").named_modules())
    minimal = dict(meta_model("mobilenet_v3_large", minimal=True).named_modules())

    def conv_names(mods):
        return sorted(n for n, m in mods.items() if isinstance(m, nn.Conv2d) and ".se." not in n)

    assert conv_names(full) == conv_names(minimal)
    assert "blocks.2.0.conv_pwl" in full and "blocks.2.0.se.conv_reduce" in full and "blocks.2.0.se" in minimal


def test_shufflenet_v1_first_pointwise_ungrouped():
    model = meta_model("shufflenet_v1", groups=8)
    assert model.blocks[0][0].conv_pw.groups == 1
    assert model.blocks[0][1].conv_pw.groups == 8
    assert model.blocks[1][0].conv_pw.groups == 8


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("resnet50", {}, "unknown model 'resnet50'; allowed: mobilenet_v1"),
        ("mobilenet_v2", {"groups": 3}, "unknown option 'groups'; allowed: num_classes"),
        ("mobilenet_v2", {"width_mult": 0}, "width_mult must be a finite number > 0"),
        ("mobilenet_v2", {"width_mult": -1.0}, "width_mult must be a finite number > 0"),
        ("mobilenet_v3_small", {"width_mult": math.inf}, "width_mult must be a finite number > 0"),
        ("mobilenet_v3_small", {"width_mult": math.nan}, "width_mult must be a finite number > 0"),
        ("shufflenet_v1", {"groups": 5}, r"groups must be one of \[1, 2, 3, 4, 8\]"),
        ("shufflenet_v2", {"width_mult": 0.75}, r"must be one of 0.5, 1.0, 1.5, 2.0"),
        ("mobilenet_v1", {"in_chans": 0}, "in_chans must be an integer >= 1"),
        ("mobilenet_v1", {"num_classes": 0}, "num_classes must be an integer >= 1"),
        ("mobilenet_v1", {"num_classes": 2.5}, "num_classes must be an integer >= 1"),
        ("mobilenet_v1_050", {"width_mult": 0.75}, "fixes width_mult=0.5"),
        ("mobilenet_v3_small", {"minimal": "yes"}, "minimal must be True or False"),
        ("mobilenet_v2", {"dropout": 1.5}, r"dropout must be in \[0, 1\)"),
    ],
)
def test_bad_options_raise_clear_errors(name, options, message):
    with pytest.raises(ValueError, match=message):
        meta_model(name, **options)


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 1, 32, 32), (1, 4, 32, 32), (1, 3, 32, 32, 1)])
def test_wrong_input_shape_names_expected_shape(shape):
    model = lightnets.create_model("mobilenet_v3_small").eval()
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 3, H, W\), got"):
        model(torch.randn(shape))


def test_in_chans_and_num_classes():
    model = lightnets.create_model("shufflenet_v2", in_chans=1, num_classes=7).eval()
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 7)
    model.reset_classifier(3)
    assert model(torch.randn(1, 1, 28, 28)).shape == (1, 3)


def test_registry_names():
    names = set(ALL)
    for required in [
        "mobilenet_v1",
        "mobilenet_v2",
        "mobilenet_v3_large",
        "mobilenet_v3_small",
        "shufflenet_v1",
        "shufflenet_v2",
        "mobilenet_v3_large_075",
        "mobilenet_v3_small_minimal",
        "shufflenet_v1_g3_x1_0",
        "mobilenet_v1_050",
        "shufflenet_v2_x0_5",
        "shufflenet_v2_x1_0",
        "shufflenet_v2_x1_5",
        "shufflenet_v2_x2_0",
    ]:
        assert required in names
    assert count_params(meta_model("shufflenet_v1_g3_x1_0")) == count_params(meta_model("shufflenet_v1", groups=3))


def test_the_torch_free_catalog_is_the_registry_and_the_papers_tables():
    """lightnets.catalog names the zoo without torch; the registry and the models' tables must agree with it."""
    from lightnets import catalog
    from lightnets.models import FAMILIES, get_entry, list_models
    from lightnets.models.shufflenet_v1 import GROUPS, OFFICIAL_GROUPS, OFFICIAL_STEM_CHS, SCALES
    from lightnets.models.shufflenet_v2 import WIDTHS

    assert list_models() == catalog.model_names() and len(list_models()) == 69
    assert len(list_models(task="classification")) == 63
    assert all(get_entry(name).family == catalog.family_of(name) for name in list_models())
    assert {family: paper for family, (_, paper) in FAMILIES.items()} == catalog.PAPERS
    assert catalog.SHUFFLENET_V1_GROUPS == GROUPS and catalog.SHUFFLENET_V1_SCALES == SCALES
    assert catalog.SHUFFLENET_V1_OFFICIAL_GROUPS == OFFICIAL_GROUPS
    assert catalog.SHUFFLENET_V1_OFFICIAL_WIDTHS == tuple(OFFICIAL_STEM_CHS)
    assert catalog.SHUFFLENET_V2_WIDTHS == WIDTHS
