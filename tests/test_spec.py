import pytest

from lightnets.models import BlockSpec
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
