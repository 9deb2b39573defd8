import pytest

from lightnets.models import BlockSpec, build_block, walk
from lightnets.models.mobilenet_v3 import TABLE_1_LARGE, TABLE_2_SMALL


def test_parse_reads_every_field():
    spec = BlockSpec.parse("ir_r3_k5_s2_e3_c40_se_hs")
    assert (spec.kind, spec.repeats, spec.kernel, spec.stride, spec.expand_ratio, spec.out_chs, spec.se, spec.act) == (
        "ir",
        3,
        5,
        2,
        3.0,
        40,
        True,
        "hs",
    )
    assert BlockSpec.parse("sv1_r4_s2_c240_g3_ug").first_pw_grouped is False


@pytest.mark.parametrize(
    "text",
    [
        "ir_k5_s2_e3_c40_se_hs",
        "ds_k3_s1_c16",
        "dsa_r5_k3_s1_c512",
        "cn_k1_s1_c960_hs",
        "sv1_r3_s1_c240_g3",
        "sv2_s2_c116",
        "ir_k3_s1_e2.3_c80_hs",
    ],
)
def test_string_form_round_trips(text):
    spec = BlockSpec.parse(text)
    assert BlockSpec.parse(str(spec)) == spec
    assert str(spec) == text


def test_tables_round_trip():
    for stage in TABLE_1_LARGE + TABLE_2_SMALL:
        for spec in stage:
            assert BlockSpec.parse(str(spec)) == spec


@pytest.mark.parametrize(
    "text, message",
    [
        ("xx_c16", "unknown kind 'xx'"),
        ("ir_k3_c16_foo", "unknown token 'foo'"),
        ("ir_k3_s2", "'c<n>' are required"),
        ("ir_k4_c16", "kernel must be odd"),
        ("ir_s3_c16", "stride must be 1 or 2"),
        ("cn_e6_c16", "take no expand_ratio"),
        ("sv2_k5_c16", "take no kernel"),
        ("dsa_c16_se", "take no squeeze-and-excite"),
        ("ir_c16_re_hs", "more than one activation"),
        ("ir_c16_c24", "given twice"),
        ("ir_c16.5", "takes an integer"),
        ("ir_e0_c16", "expand_ratio must be a positive"),
        ("ir_c0", "out_chs must be a positive integer"),
        ("", "non-empty string"),
    ],
)
def test_parse_rejects(text, message):
    with pytest.raises(ValueError, match=message):
        BlockSpec.parse(text)


# Dilation (atrous convolution): the ``d`` token and NetSpec.with_output_stride, for dense heads.


def test_dilation_token_round_trips_and_is_written_only_when_set():
    spec = BlockSpec.parse("ir_k5_s1_d2_m672_c160_se168_nores_hs")
    assert spec.dilation == 2 and str(spec) == "ir_k5_s1_d2_m672_c160_se168_nores_hs"
    assert BlockSpec.parse("ir_k3_s1_d2_e3_c24") == BlockSpec.parse("ir_d2_k3_s1_e3_c24")
    assert str(BlockSpec.parse("ir_k3_s1_e3_c24")) == "ir_k3_s1_e3_c24"  # d1 unwritten: existing specs read the same


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sv2_s1_d2_c116", r"sv2 blocks \(ShuffleNetV2 unit\) take no dilation \('d'\)"),
        ("cn_k1_s1_d2_c960", "a 1x1 conv has no taps to space: dilation must be 1 with kernel 1, got 2"),
        ("ir_k3_s1_d0_e3_c24", "dilation must be a positive integer, got 0"),
        ("ir_k3_s1_d1.5_e3_c24", "'d' takes an integer, got '1.5'"),
        ("ir_k3_s1_d2_d2_e3_c24", "'d' given twice"),
    ],
)
def test_bad_dilation_is_refused(text, message):
    with pytest.raises(ValueError, match=message):
        BlockSpec.parse(text)


def test_a_dilated_conv_keeps_the_size_with_either_padding():
    import torch

    from lightnets.layers import conv2d

    block = build_block(BlockSpec.parse("ir_k5_s1_d2_m32_c16_nores_re"), 16)
    assert block.conv_dw.dilation == (2, 2) and block.conv_dw.padding == (4, 4)
    assert block(torch.randn(1, 16, 9, 9)).shape == (1, 16, 9, 9)
    # TensorFlow's SAME padding on the dilated kernel's span, (k - 1) * d + 1: ceil(H / s) rows out
    for size in (7, 8):
        conv = conv2d(2, 2, 3, stride=2, padding="tf_same", dilation=2)
        assert conv(torch.randn(1, 2, size, size)).shape[-1] == -(-size // 2)


def test_with_output_stride_dilates_instead_of_striding():
    from lightnets.models import NetSpec, mobilenet_v3_spec

    spec = mobilenet_v3_spec("large")
    at16 = spec.with_output_stride(16)
    assert [(b.stride, b.dilation) for b in at16.stages[5]] == [(1, 2), (1, 2), (1, 2)]
    assert at16.stages[:5] == spec.stages[:5] and at16.stages[6] == spec.stages[6]  # the 1x1 conv: no dilation
    assert at16.stages[5][0].residual is False  # the block that strode had no residual and gains none
    at8 = spec.with_output_stride(8)
    assert [b.dilation for stage in at8.stages[3:6] for b in stage] == [2] * 6 + [4] * 3
    assert spec.with_output_stride(32) == spec
    assert NetSpec.parse(str(at16)) == at16 and NetSpec.from_json(at16.to_json()) == at16
    sites = {s.name: s for s in walk(at16, 64)}
    assert sites["blocks.5.0"].out_size == sites["blocks.5.0"].in_size == (4, 4)
    assert sites["blocks.5.0"].key() != {s.name: s for s in walk(spec, 64)}["blocks.5.0"].key()


def test_with_output_stride_keeps_every_weight_shape():
    import torch

    from lightnets.models import ConvNet, mobilenet_v3_spec

    spec = mobilenet_v3_spec("small")
    with torch.device("meta"):
        plain, dilated = ConvNet(spec), ConvNet(spec.with_output_stride(8))
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in dilated.state_dict().items()}


def test_with_output_stride_refuses_what_it_cannot_build():
    import lightnets
    from lightnets.models import NetSpec, mobilenet_v3_spec

    with pytest.raises(ValueError, match=r"output_stride must be a reduction this network reaches, one of "
                                         r"\[2, 4, 8, 16, 32\]; got 12"):
        mobilenet_v3_spec("large").with_output_stride(12)
    shufflenet = lightnets.create_model("shufflenet_v2_x0_5").spec
    with pytest.raises(ValueError, match=r"ShuffleNetV2 units take no dilation, so this network cannot keep "
                                         r"output stride 16; allowed: 32"):
        shufflenet.with_output_stride(16)
    table = NetSpec.parse("stem cn_k3_s2_c16 | ir_r2_k3_s2_e6_c24 | head pool fc10")
    with pytest.raises(ValueError, match="with_output_stride needs a resolved NetSpec"):
        table.with_output_stride(4)
