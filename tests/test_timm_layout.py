"""Our module names are timm's where the network is the same, so timm checkpoints load as they are."""

import pytest
import torch

import lightnets
from lightnets.testing import randomize_for_parity as randomise

timm = pytest.importorskip("timm")

# timm name -> (our name, options)
SAME_LAYOUT = {
    "mobilenetv1_100": ("mobilenet_v1", {}),
    "mobilenetv2_100": ("mobilenet_v2", {}),
    "mobilenetv2_050": ("mobilenet_v2_050", {}),
    "mobilenetv3_large_100": ("mobilenet_v3_large", {"bn_eps": 1e-5}),
    "mobilenetv3_small_100": ("mobilenet_v3_small", {"bn_eps": 1e-5}),
    "tf_mobilenetv3_large_minimal_100": ("mobilenet_v3_large_minimal", {}),
    "tf_mobilenetv3_small_minimal_100": ("mobilenet_v3_small_minimal", {}),
}


@pytest.mark.parametrize("timm_name", SAME_LAYOUT)
def test_timm_state_dict_loads_unchanged(timm_name):
    name, options = SAME_LAYOUT[timm_name]
    with torch.device("meta"):
        theirs = timm.create_model(timm_name)
        ours = lightnets.create_model(name, **options)
    theirs_shapes = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    ours_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert ours_shapes == theirs_shapes


@pytest.mark.parametrize("timm_name", ["mobilenetv2_100", "mobilenetv3_large_100", "mobilenetv3_small_100"])
def test_timm_outputs_match(timm_name):
    name, options = SAME_LAYOUT[timm_name]
    theirs = randomise(timm.create_model(timm_name))
    ours = lightnets.create_model(name, **options).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "timm_name",
    [
        "mobilenetv1_100", "mobilenetv2_035", "mobilenetv2_140", "mobilenetv3_large_100", "mobilenetv3_small_100",
        "tf_mobilenetv3_large_100", "tf_mobilenetv3_large_075", "tf_mobilenetv3_small_minimal_100",
    ],
)
def test_from_timm_loads_and_matches_outputs(timm_name):
    from lightnets.convert import from_timm

    theirs = randomise(timm.create_model(timm_name, num_classes=20))
    ours = from_timm(timm_name, theirs.state_dict()).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = theirs(x)
        torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-5)
    assert ours.num_classes == 20 and expected.abs().max() > 0.05


def test_from_timm_names_the_first_mismatch():
    from lightnets.convert import from_timm

    state = timm.create_model("mobilenetv2_100").state_dict()
    state.pop("blocks.1.0.conv_dw.weight")
    state["extra.weight"] = torch.zeros(3)
    message = r"first missing key 'blocks.1.0.conv_dw.weight' \(96, 1, 3, 3\).*first unexpected key 'extra.weight'"
    with pytest.raises(ValueError, match=message):
        from_timm("mobilenetv2_100", state)
    with pytest.raises(ValueError, match="no timm converter for 'resnet50'"):
        from_timm("resnet50", {})
