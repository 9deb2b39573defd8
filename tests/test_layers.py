import pytest
import torch
from torch import nn

from lightnets.layers import (
    DepthwiseSeparable,
    InvertedResidual,
    ShuffleV1Unit,
    ShuffleV2Unit,
    SqueezeExcite,
    channel_shuffle,
    make_divisible,
)


@pytest.mark.parametrize(
    "value, divisor, expected",
    [
        (32 * 0.35, 8, 16),
        (24 * 0.5, 8, 16),
        (16 * 0.5, 8, 8),
        (240 / 4, 8, 64),
        (1280 * 1.4, 8, 1792),
        (100, 8, 104),
        (12, 3, 12),
    ],
)
def test_make_divisible(value, divisor, expected):
    assert make_divisible(value, divisor) == expected


@pytest.mark.parametrize("value", [0, -3, float("nan"), float("inf")])
def test_make_divisible_rejects(value):
    with pytest.raises(ValueError, match="positive finite"):
        make_divisible(value)


def test_channel_shuffle_interleaves_groups():
    x = torch.arange(6.0).reshape(1, 6, 1, 1)
    # groups of 3: (0 1) (2 3) (4 5) -> transpose -> 0 2 4 1 3 5 (ShuffleNetV1 Figure 1c)
    assert channel_shuffle(x, 3).flatten().tolist() == [0, 2, 4, 1, 3, 5]
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]


def test_squeeze_excite_width_is_quarter_of_expansion_rounded():
    se = SqueezeExcite(72)
    assert se.conv_reduce.out_channels == 24  # make_divisible(18, 8)
    assert isinstance(se.gate, nn.Hardsigmoid)
    assert SqueezeExcite(16).conv_reduce.out_channels == 8


def test_inverted_residual_skip_only_when_shape_kept():
    assert InvertedResidual(16, 96, 16, stride=1).has_skip
    assert not InvertedResidual(16, 96, 24, stride=1).has_skip
    assert not InvertedResidual(16, 96, 16, stride=2).has_skip
    block = InvertedResidual(16, 96, 16, act="hs", se=True).eval()
    x = torch.randn(2, 16, 8, 8)
    # zero the projection's BN scale: the block must reduce to the identity through the skip
    nn.init.zeros_(block.bn3.weight)
    assert torch.equal(block(x), x)


def test_depthwise_separable_v1_has_activation_after_pointwise():
    v1 = DepthwiseSeparable(8, 16, pw_act=True, skip=False)
    assert isinstance(v1.act2, nn.ReLU) and not v1.has_skip
    v2 = DepthwiseSeparable(16, 16)
    assert isinstance(v2.act2, nn.Identity) and v2.has_skip
    assert v1.conv_dw.groups == 8 and v1.conv_pw.kernel_size == (1, 1)


def test_shufflenet_v1_unit_shapes_and_groups():
    first = ShuffleV1Unit(24, 240, stride=2, groups=3, first_pw_grouped=False)
    assert first.conv_pw.groups == 1 and first.conv_pwl.groups == 3
    assert first.conv_pwl.out_channels == 216  # concat with the 24 pooled input channels
    assert first(torch.randn(2, 24, 14, 14)).shape == (2, 240, 7, 7)
    unit = ShuffleV1Unit(240, 240, groups=3)
    assert unit.conv_pw.groups == 3 and unit.conv_pw.out_channels == 60
    assert unit(torch.randn(2, 240, 7, 7)).shape == (2, 240, 7, 7)


def test_shufflenet_v1_unit_rejects_widths_not_divisible_by_groups():
    with pytest.raises(ValueError, match="multiple of groups=8"):
        ShuffleV1Unit(12, 192, stride=2, groups=8)


def test_shufflenet_v2_unit_split_passes_left_half_unchanged():
    unit = ShuffleV2Unit(8, 8).eval()
    x = torch.randn(1, 8, 5, 5)
    out = unit(x)
    # after concat + shuffle(2), the untouched left half sits at the even channels
    assert torch.equal(out[:, 0::2], x[:, :4])
    down = ShuffleV2Unit(8, 16, stride=2)
    assert down(x).shape == (1, 16, 3, 3)
    with pytest.raises(ValueError, match="keeps its width"):
        ShuffleV2Unit(8, 16, stride=1)


def test_zero_init_last_makes_residual_blocks_start_as_identity():
    x = torch.randn(2, 16, 6, 6)
    for block in (InvertedResidual(16, 64, 16), DepthwiseSeparable(16, 16)):
        block.zero_init_last()
        assert torch.equal(block.eval()(x), x)
    unit = ShuffleV1Unit(48, 48, groups=3)
    unit.zero_init_last()
    assert torch.equal(unit.eval()(x.repeat(1, 3, 1, 1)), torch.relu(x.repeat(1, 3, 1, 1)))
    down = InvertedResidual(16, 64, 24, stride=2)
    down.zero_init_last()  # no residual: nothing to zero
    assert down.bn3.weight.abs().sum() > 0


def test_tf_same_padding_pads_bottom_right_on_even_inputs():
    from lightnets.layers import conv2d

    conv = conv2d(4, 6, 3, stride=2, padding="tf_same")
    plain = nn.Conv2d(4, 6, 3, stride=2, bias=False)
    plain.weight.data.copy_(conv.weight.data)
    even = torch.randn(1, 4, 8, 8)
    assert torch.allclose(conv(even), plain(nn.functional.pad(even, (0, 1, 0, 1))))  # TF: extra row/col at the end
    odd = torch.randn(1, 4, 7, 7)
    assert torch.allclose(conv(odd), plain(nn.functional.pad(odd, (1, 1, 1, 1))))
    assert type(conv2d(4, 6, 3, stride=1, padding="tf_same")) is nn.Conv2d  # stride 1: symmetric anyway
    with pytest.raises(ValueError, match="padding must be one of symmetric, tf_same"):
        conv2d(4, 6, 3, padding="reflect")
