"""Networks as data: NetSpec round-trips, resolve, build, walk, feature taps, channel groups, inherit_weights."""

import json

import pytest
import torch

import lightnets
from lightnets.models import (
    BlockSpec,
    NetSpec,
    build,
    build_block,
    channel_groups,
    inherit_weights,
    keep_largest_l2,
    list_models,
    resize_group,
    resolve,
    walk,
)
from lightnets.models.mobilenet_v2 import TABLE_2
from lightnets.testing import randomize_for_parity

ALL = list_models(task="classification")  # an LR-ASPP model is a Backbone and a head


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", ALL)
def test_every_model_rebuilds_from_its_spec(name):
    torch.manual_seed(0)
    model = randomize_for_parity(lightnets.create_model(name)).eval()
    spec = model.spec
    assert spec.is_resolved
    assert NetSpec.parse(str(spec)) == spec
    assert NetSpec.parse("\n".join(spec.lines())) == spec
    assert NetSpec.from_json(spec.to_json()) == spec
    assert NetSpec.from_json(json.dumps(json.loads(spec.to_json()), indent=2)) == spec
    rebuilt = lightnets.build(str(spec)).eval()
    ours, theirs = model.state_dict(), rebuilt.state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in ours)
    rebuilt.load_state_dict(ours)
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))
    assert lightnets.create_model(spec=spec).spec == spec


def test_architecture_is_the_whole_spec():
    model = lightnets.create_model("mobilenet_v2_035")
    assert NetSpec.parse("\n".join(model.architecture())) == model.spec
    assert model.architecture()[-2] == "head conv1280_r6 pool dropout0.2 fc1000"


def test_ratios_round_trip_exactly():
    third = BlockSpec(kind="ir", out_chs=24, expand_ratio=11 / 3)
    assert BlockSpec.parse(str(third)) == third
    spec = BlockSpec.parse("ir_k3_s1_e3.67_c24_re")
    assert str(spec) == "ir_k3_s1_e3.67_c24_re" and spec.expand_ratio == 3.67


def test_resolve_states_every_width():
    """MobileNetV3-Large at alpha 1: Table 1's exp sizes and SE at 1/4 of them, rounded to 8."""
    spec = lightnets.create_model("mobilenet_v3_large").spec
    blocks = dict(spec.blocks())
    assert str(blocks["blocks.0.0"]) == "ds_k3_s1_c16_res_re"  # bneck 3x3, exp 16, adds its input
    assert str(blocks["blocks.2.0"]) == "ir_k5_s2_m72_c40_se24_nores_re"
    assert [blocks[f"blocks.3.{j}"].mid_chs for j in range(4)] == [240, 200, 184, 184]
    assert str(spec.head) == "head pool conv1280_hs dropout0.2 fc1000"
    assert resolve(spec) is spec
    with pytest.raises(ValueError, match="already resolved"):
        resolve(spec, 0.5)


def test_resolve_rejects_a_stated_width_it_would_round():
    table = NetSpec.parse("stem cn_k3_s2_c32 | ir_k3_s1_m52_c32 | head pool fc10")
    assert resolve(table).stages[0][0].mid_chs == 52
    with pytest.raises(ValueError, match="blocks.0.0.*m52.*width_mult=0.5"):
        resolve(table, 0.5)


def test_a_stated_expansion_width_is_exact():
    spec = lightnets.create_model("mobilenet_v2").spec
    assert spec.stages[2][1].mid_chs == 192
    child = spec.replace_block(2, 1, mid_chs=52)
    model = build(child)
    block = model.blocks[2][1]
    assert (block.conv_pw.out_channels, block.conv_dw.groups, block.conv_pwl.in_channels) == (52, 52, 52)
    assert "ir_k3_s1_m52_c32_res_r6" in str(child)
    assert block.has_skip


def test_narrowing_a_block_inside_a_residual_run_names_it():
    spec = lightnets.create_model("mobilenet_v2").spec
    assert spec.stages[2][1].residual  # blocks.2.1: 32 -> 32, adds its input
    with pytest.raises(ValueError, match=r"blocks\.2\.1 .*input is 32 channels and its output 24"):
        spec.replace_block(2, 1, out_chs=24)
    # Saying 'nores' is a choice the spec can make: then the next block is the one that breaks.
    with pytest.raises(ValueError, match=r"blocks\.2\.2 .*input is 24 channels and its output 32"):
        spec.replace_block(2, 1, out_chs=24, residual=False)


def test_residuals_are_stated_not_inferred():
    spec = NetSpec.parse("stem cn_k3_s2_c16_re | ir_k3_s1_m64_c16_nores_re ir_k3_s1_m64_c16_res_re | head pool fc10")
    model = build(spec)
    assert [b.has_skip for b in model.blocks[0]] == [False, True]
    with pytest.raises(ValueError, match="stride 2"):
        NetSpec.parse("stem cn_k3_s2_c16_re | ir_k3_s2_m64_c16_res_re | head pool fc10")


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "stem cn_k3_s2_c24_re maxpool | sv1_s2_m60_c240_g3_re sv1_s1_m61_c240_g3_re | head pool fc10",
            "blocks.0.1.*m61.*groups=3",
        ),
        ("stem cn_k3_s2_c24_re maxpool | sv2_s2_m58_c117_re | head pool fc10", "blocks.0.0.*even"),
        (
            "stem cn_k3_s2_c24_re maxpool | sv2_s2_m58_c116_re sv2_s1_m58_c112_re | head pool fc10",
            "blocks.0.1.*keeps its width",
        ),
        ("stem cn_k3_s2_c24 | head pool fc10", "no head or no stage"),
        ("stem cn_k3_s2_c24 | ir_c16 | head pool fc10 | settings divisor=0", "divisor must be"),
        ("stem cn_k3_s2_c24 | ir_c16 | head pool fc10 | settings color=red", "unknown item 'color=red'"),
        ("stem cn_k3_s2_c24 | ir_c16 | head conv1280_xx pool fc10", "unknown head activation 'xx'"),
        ("stem cn_k3_s2_c24 | ir_c16 | head fc10", "'pool'.*is required"),
        ("stem ir_c16 | ir_c16 | head pool fc10", "single 'cn' block"),
        ("stem cn_k3_s2_c24 | ir_c16_res_nores | head pool fc10", "given twice"),
        ("stem cn_k3_s2_c24 | dsa_c16_res | head pool fc10", "take no 'res'"),
        ("stem cn_k3_s2_c24 | ir_e6_m52_c16 | head pool fc10", "not both"),
    ],
)
def test_bad_specs_raise_and_say_why(text, message):
    with pytest.raises(ValueError, match=message):
        NetSpec.parse(text)


def test_bad_json_raises():
    with pytest.raises(ValueError, match="not a JSON network spec"):
        NetSpec.from_json("{")
    good = json.loads(lightnets.create_model("mobilenet_v1_025").spec.to_json())
    with pytest.raises(ValueError, match="unknown head or settings field"):
        NetSpec.from_json(json.dumps({**good, "head": {**good["head"], "colour": 1}}))
    with pytest.raises(ValueError, match="exactly the keys"):
        NetSpec.from_json(json.dumps({**good, "extra": 1}))


def test_table_spec_builds_like_the_family():
    table = NetSpec.parse(
        "stem cn_k3_s2_c32 | "
        + " | ".join(" ".join(map(str, stage)) for stage in TABLE_2)
        + " | head conv1280 pool dropout0.2 fc1000 | settings act=r6"
    )
    assert resolve(table, 0.5) == lightnets.create_model("mobilenet_v2_050").spec
    assert build(table).spec == lightnets.create_model("mobilenet_v2").spec


@pytest.mark.parametrize(
    "name", ["mobilenet_v2_035", "mobilenet_v3_small", "shufflenet_v1_g3_x0_5", "shufflenet_v2_x0_5_official"]
)
def test_walk_matches_the_built_network(name):
    model = lightnets.create_model(name).eval()
    sites = walk(model.spec, (65, 97))
    assert [s.name for s in sites] == ["stem"] + [p for p, _ in model.spec.blocks()] + ["head"]
    shapes = {}
    hooks = [
        model.get_submodule(s.name).register_forward_hook(
            lambda m, a, out, name=s.name: shapes.__setitem__(name, (a[0].shape, out.shape))
        )
        for s in sites[1:-1]
    ]
    with torch.no_grad():
        model(torch.randn(1, 3, 65, 97))
    for hook in hooks:
        hook.remove()
    for site in sites[1:-1]:
        seen_in, seen_out = shapes[site.name]
        assert (seen_in[1], *seen_in[2:]) == (site.in_chs, *site.in_size), site.name
        assert (seen_out[1], *seen_out[2:]) == (site.out_chs, *site.out_size), site.name
    assert sites[-1].in_size == tuple(model.forward_features(torch.randn(1, 3, 65, 97)).shape[2:])
    assert walk(str(model.spec), 224)[0].key() == f"{model.spec.stem} in3 224x224"


def test_build_block_alone_is_the_block_in_the_network():
    torch.manual_seed(0)
    model = randomize_for_parity(lightnets.create_model("mobilenet_v3_large")).eval()
    site = walk(model.spec, 56)[7]  # blocks.2.1: 5x5, SE, 40 -> 40
    block = build_block(site.spec, site.in_chs, model.spec.settings).eval()
    inside = model.get_submodule(site.name)
    assert list(block.state_dict()) == list(inside.state_dict())
    block.load_state_dict(inside.state_dict())
    x = torch.randn(1, site.in_chs, *site.in_size)
    with torch.no_grad():
        assert torch.equal(block(x), inside(x))
    with pytest.raises(ValueError, match="resolved block spec"):
        build_block(BlockSpec.parse("ir_r2_k3_e6_c24"), 16)


def test_feature_taps_at_strides_and_expansion_layers():
    model = lightnets.create_model("mobilenet_v3_large").eval()
    x = torch.randn(1, 3, 64, 64)
    seen = {}
    hook = model.blocks[5][0].act1.register_forward_hook(lambda m, a, out: seen.__setitem__("exp", out.clone()))
    with torch.no_grad():
        expansion, s16, s8 = model.feature_maps(x, ["blocks.5.0.act1", 16, 8])
    hook.remove()
    # The first stride-32 block's expansion: 672 channels at stride 16 (SSDLite's tap, section 6.3).
    assert expansion.shape == (1, 672, 4, 4) and torch.equal(expansion, seen["exp"])
    assert s16.shape == (1, 112, 4, 4) and s8.shape == (1, 40, 8, 8)
    with pytest.raises(ValueError, match="no feature map at stride 64"):
        model.feature_maps(x, [64])
    with pytest.raises(ValueError, match="no tap 'blocks.9'"):
        model.feature_maps(x, ["blocks.9"])


def test_a_network_without_every_stride_still_builds():
    spec = NetSpec.parse(
        "stem cn_k3_s2_c16_re | ir_k3_s2_m32_c16_nores_re | ir_k3_s2_m32_c24_nores_re | head pool fc10"
    )
    model = build(spec)
    assert [f.reduction for f in model.feature_info] == [4, 8]
    maps = model.feature_maps(torch.randn(1, 3, 32, 32))
    assert [m.shape[-1] for m in maps] == [8, 4]


def test_channel_groups_follow_residuals_and_splits():
    groups = {g.name: g for g in channel_groups(lightnets.create_model("mobilenet_v2").spec)}
    chain = groups["blocks.2.0"]  # 32 channels, shared by blocks 2.0-2.2 through their residuals
    assert chain.width == 32
    assert {"blocks.2.1.conv_pwl:out", "blocks.2.2.bn3:bn", "blocks.3.0.conv_pw:in"} <= set(chain.members)
    assert ("blocks.2.2", "out_chs") in chain.fields and "blocks.2.1" not in groups
    assert groups["blocks.2.1.mid"].members[2] == "blocks.2.1.conv_dw:dw"
    assert groups["head"].members[-1] == "classifier:in"
    v2 = {g.name: g for g in channel_groups(lightnets.create_model("shufflenet_v2_x1_0").spec)}
    assert v2["blocks.0.1.mid"].prunable and not v2["blocks.0.0"].prunable
    v1 = {g.name: g for g in channel_groups(lightnets.create_model("shufflenet_v1_g8_x1_0").spec)}
    assert v1["blocks.0.1.mid"].multiple == 8 and not v1["blocks.0.1.mid"].prunable


def test_resize_group_keeps_residual_chains_consistent():
    spec = lightnets.create_model("mobilenet_v2").spec
    child = resize_group(spec, "blocks.2.0", 24)
    assert [b.out_chs for b in child.stages[2]] == [24, 24, 24]
    assert all(b.residual for b in child.stages[2][1:])
    with pytest.raises(ValueError, match="no channel group 'blocks.2.1'"):
        resize_group(spec, "blocks.2.1", 24)


@pytest.mark.parametrize(
    "name", ["mobilenet_v3_small_075", "shufflenet_v2_x0_5", "shufflenet_v1_g3_x0_5", "mobilenet_v1_025"]
)
def test_inherit_weights_with_an_unchanged_spec_is_the_parent(name):
    torch.manual_seed(0)
    parent = randomize_for_parity(lightnets.create_model(name)).eval()
    child = inherit_weights(parent, parent.spec).eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(child(x), parent(x))


def test_inherit_weights_keeps_the_largest_filters(tmp_path):
    """A parent trained briefly on the built-in digits; the child keeps exactly its L2-selected filters."""
    from lightnets.train import fit

    torch.manual_seed(0)
    parent = lightnets.create_model("mobilenet_v2_035", num_classes=10)
    fit(
        parent,
        "digits",
        run_dir=str(tmp_path),
        epochs=1,
        resolution=16,
        max_steps=8,
        show_progress=False,
        log=lambda m: None,
    )
    parent.eval()
    assert parent.spec.stages[3][1].mid_chs == 144
    spec = resize_group(parent.spec, "blocks.3.1.mid", 100)  # 144 -> 100 expansion channels
    spec = resize_group(spec, "blocks.3.0", 16)  # the 24-wide residual chain of stage 3
    spec = resize_group(spec, "head", 1000)  # the last conv, 1280 -> 1000
    child = inherit_weights(parent, spec).eval()

    def norms(weight):
        return weight.flatten(1).pow(2).sum(1)

    mid = sorted(torch.argsort(norms(parent.blocks[3][1].conv_pw.weight), descending=True, stable=True)[:100].tolist())
    chain = chain_rows(parent)
    # blocks.3.1's expansion reads the chain and writes the expansion: cut on both axes.
    assert torch.equal(child.blocks[3][1].conv_pw.weight, parent.blocks[3][1].conv_pw.weight[mid][:, chain])
    assert torch.equal(child.blocks[3][1].bn1.running_var, parent.blocks[3][1].bn1.running_var[mid])
    assert torch.equal(child.blocks[3][1].conv_dw.weight, parent.blocks[3][1].conv_dw.weight[mid])
    assert torch.equal(child.blocks[3][1].conv_pwl.weight, parent.blocks[3][1].conv_pwl.weight[chain][:, mid])
    for j in range(4):  # blocks 3.0-3.3 share the chain: every writer and reader is cut the same way
        assert torch.equal(child.blocks[3][j].bn3.weight, parent.blocks[3][j].bn3.weight[chain])
    assert torch.equal(child.blocks[4][0].conv_pw.weight, parent.blocks[4][0].conv_pw.weight[:, chain])
    # The head conv shrank 1280 -> 1000: the classifier keeps the matching inputs.
    head = keep_largest_l2(next(g for g in channel_groups(parent.spec) if g.name == "head"), parent, 1000)
    assert torch.equal(child.classifier.weight, parent.classifier.weight[:, head])
    assert child(torch.randn(1, 3, 16, 16)).shape == (1, 10)


def chain_rows(parent):
    """The 16 of stage 3's 24 chain channels with the largest filter norm summed over its four writers."""
    squares = sum(parent.blocks[3][j].conv_pwl.weight.double().flatten(1).pow(2).sum(1) for j in range(4))
    return sorted(torch.argsort(squares, descending=True, stable=True)[:16].tolist())


def test_inherit_weights_rejects_other_structures():
    parent = lightnets.create_model("mobilenet_v2_035")
    with pytest.raises(ValueError, match="blocks.1.0 differs from the parent's in more than widths"):
        inherit_weights(parent, parent.spec.replace_block(1, 0, kernel=5))
    v2 = lightnets.create_model("shufflenet_v2_x0_5")
    with pytest.raises(ValueError, match="blocks.0.0 changes 48 -> 24, but ShuffleNetV2's channel split"):
        inherit_weights(v2, resize_group(v2.spec, "blocks.0.0", 24))
    with pytest.raises(ValueError, match="must return 100 distinct"):
        inherit_weights(parent, resize_group(parent.spec, "blocks.3.1.mid", 100), keep=lambda g, p, w: [0] * w)


def test_r6_is_repeats_before_the_width_and_relu6_after():
    spec = BlockSpec.parse("ir_r6_k3_e6_c16_r6")
    assert (spec.repeats, spec.act) == (6, "r6")
    assert BlockSpec.parse(str(spec)) == spec
    assert BlockSpec.parse("cn_k3_c16_r6").act == "r6" and BlockSpec.parse("cn_k3_c16_r6").repeats == 1


@pytest.mark.parametrize(
    "name", ["mobilenet_v3_large_075", "shufflenet_v2_x0_5", "mobilenet_v2_035", "mobilenet_v1_025"]
)
def test_sites_built_alone_compose_to_the_network(name):
    from lightnets.models import build_site

    torch.manual_seed(0)
    model = randomize_for_parity(lightnets.create_model(name)).eval()
    weights = model.state_dict()
    x = torch.randn(1, 3, 40, 40)
    out = x
    for site in walk(model.spec, 40):
        module = build_site(site, model.spec.settings).eval()
        prefix = "" if site.name in ("stem", "head") else site.name + "."
        module.load_state_dict({k: weights[prefix + k] for k in module.state_dict()})
        out = module(out)
        assert out.shape[1:] == ((site.out_chs,) if site.name == "head" else (site.out_chs, *site.out_size))
    with torch.no_grad():
        assert torch.equal(out.detach(), model(x))


def test_the_official_shufflenet_v2_input_width_is_not_prunable():
    """The authors' stride-2 unit keeps its input width on the projection branch: the output split depends on it."""
    official = lightnets.create_model("shufflenet_v2_x0_5_official")
    stem = next(g for g in channel_groups(official.spec) if g.name == "stem")
    assert not stem.prunable
    with pytest.raises(ValueError, match="stem changes 24 -> 16, but ShuffleNetV2's channel split"):
        inherit_weights(official, resize_group(official.spec, "stem", 16))
    torchvision_unit = lightnets.create_model("shufflenet_v2_x0_5")
    assert next(g for g in channel_groups(torchvision_unit.spec) if g.name == "stem").prunable


def test_an_se_gate_is_not_a_producer_of_the_channels_it_gates():
    model = lightnets.create_model("mobilenet_v3_small")
    group = next(g for g in channel_groups(model.spec) if g.name == "blocks.2.1.mid")
    assert group.producers() == ["blocks.2.1.conv_pw"] and "blocks.2.1.se.conv_expand:gate" in group.members
    norms = model.blocks[2][1].conv_pw.weight.double().flatten(1).pow(2).sum(1)
    expected = sorted(torch.argsort(norms, descending=True, stable=True)[:120].tolist())
    assert keep_largest_l2(group, model, 120) == expected


def test_ug_applies_to_the_first_repeat_only():
    table = NetSpec.parse(
        "stem cn_k3_s2_c24 maxpool | sv1_r4_s2_c240_g3_ug | sv1_r8_s2_c480_g3 | sv1_r4_s2_c960_g3 | head pool fc1000 "
        "| settings divisor=3"
    )
    assert [b.first_pw_grouped for b in resolve(table).stages[0]] == [False, True, True, True]
    assert resolve(table) == lightnets.create_model("shufflenet_v1").spec


def test_read_spec_reads_files_first(tmp_path, monkeypatch):
    from lightnets.models import read_spec

    spec = lightnets.create_model("mobilenet_v3_small_050").spec
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stem_pruned.json").write_text(spec.to_json())
    (tmp_path / "bom.json").write_text("\ufeff" + spec.to_json(), encoding="utf8")
    (tmp_path / "lines.txt").write_text("\n".join(spec.lines()))
    assert read_spec("stem_pruned.json") == read_spec("bom.json") == read_spec("lines.txt") == spec
    assert read_spec(str(spec)) == spec
    with pytest.raises(ValueError, match="neither a network spec"):
        read_spec("missing.json")


def test_number_edge_cases_round_trip_or_raise():
    tiny = BlockSpec(kind="ir", out_chs=24, expand_ratio=1e-05)
    assert str(tiny) == "ir_k3_s1_e1e-05_c24" and BlockSpec.parse(str(tiny)) == tiny
    with pytest.raises(ValueError, match="takes an integer"):
        BlockSpec.parse("ir_c1e3")
    with pytest.raises(ValueError, match="stride must be 1 or 2"):
        BlockSpec(kind="ir", out_chs=24, stride=2.0)


@pytest.mark.parametrize(
    "text, message",
    [
        ("head pool fc10 fc20", "comes last"),
        ("head fc10 pool", "'pool'.*is required before"),
        ("head pool dropout0.1 dropout0.2 fc10", "one 'dropout<x>'"),
        ("head dropout0.1 pool fc10", "one 'dropout<x>'"),
        ("head pool dropout0.1 conv1024 fc10", "one 'conv<n>', before the dropout"),
    ],
)
def test_head_words_come_once_and_in_order(text, message):
    from lightnets.models import HeadSpec

    with pytest.raises(ValueError, match=message):
        HeadSpec.parse(text)


def test_json_of_the_wrong_shape_says_what_is_wrong():
    good = json.loads(lightnets.create_model("mobilenet_v1_025").spec.to_json())
    for change, message in (
        ({"stages": "ds_c16"}, "stages must be a list of lists of block strings"),
        ({"stages": ["ds_c16"]}, "stages must be a list of lists of block strings"),
        ({"head": None}, "head must be an object"),
        ({"settings": {**good["settings"], "act": ["re"]}}, "settings.act must be a number, a string"),
    ):
        with pytest.raises(ValueError, match=message):
            NetSpec.from_dict({**good, **change})


def test_a_child_without_the_head_conv_is_another_structure():
    parent = lightnets.create_model("mobilenet_v2_035")
    headless = parent.spec.replace(head=lightnets.models.HeadSpec(num_classes=1000, dropout=0.2))
    with pytest.raises(ValueError, match="head differs from the parent's in more than its width"):
        inherit_weights(parent, headless)
    assert not inherit_weights(parent.eval(), parent.spec).training
