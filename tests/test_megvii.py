"""The authors' ShuffleNetV1/V2 release: our official variants, and loading their checkpoint layout.

No Megvii package exists to import, so ``_MegviiStyle`` and ``_MegviiV1Style`` below are
independent, minimal rewrites of the released networks' layout and forward (V2: even/odd
channel split at the start of each stride-1 unit, projection branch keeping the input width;
V1: channels viewed as (C/g, g) by the shuffle, hand-picked stems, no classifier bias), used
only as references.
"""

import pytest
import torch
from torch import nn

import lightnets
from lightnets.convert import from_megvii, load_megvii_file
from lightnets.cost import count_madds
from lightnets.testing import randomize_for_parity as randomise


def _bn_relu(c, relu=True):
    return [nn.BatchNorm2d(c)] + ([nn.ReLU()] if relu else [])


class _Unit(nn.Module):
    def __init__(self, inp, oup, mid, stride):
        super().__init__()
        self.stride = stride
        self.branch_main = nn.Sequential(
            nn.Conv2d(inp, mid, 1, bias=False), *_bn_relu(mid),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), *_bn_relu(mid, relu=False),
            nn.Conv2d(mid, oup - inp, 1, bias=False), *_bn_relu(oup - inp),
        )
        if stride == 2:
            self.branch_proj = nn.Sequential(
                nn.Conv2d(inp, inp, 3, 2, 1, groups=inp, bias=False), *_bn_relu(inp, relu=False),
                nn.Conv2d(inp, inp, 1, bias=False), *_bn_relu(inp),
            )

    def forward(self, x):
        if self.stride == 2:
            return torch.cat((self.branch_proj(x), self.branch_main(x)), 1)
        even, odd = x[:, 0::2], x[:, 1::2]
        return torch.cat((even, self.branch_main(odd)), 1)


class _MegviiStyle(nn.Module):
    def __init__(self, widths=(24, 116, 232, 464, 1024), classes=1000):
        super().__init__()
        self.first_conv = nn.Sequential(nn.Conv2d(3, widths[0], 3, 2, 1, bias=False), *_bn_relu(widths[0]))
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        units, inp = [], widths[0]
        for out, repeats in zip(widths[1:4], (4, 8, 4), strict=True):
            for i in range(repeats):
                units.append(_Unit(inp, out, out // 2, 2) if i == 0 else _Unit(inp // 2, out, out // 2, 1))
                inp = out
        self.features = nn.Sequential(*units)
        self.conv_last = nn.Sequential(nn.Conv2d(inp, widths[4], 1, bias=False), *_bn_relu(widths[4]))
        self.classifier = nn.Sequential(nn.Linear(widths[4], classes, bias=False))

    def forward(self, x):
        x = self.features(self.maxpool(self.first_conv(x)))
        return self.classifier(self.conv_last(x).mean((2, 3)))


def test_official_variant_has_the_papers_madds():
    with torch.device("meta"):
        model = lightnets.create_model("shufflenet_v2_x1_0_official")
    assert count_madds(model) == pytest.approx(146e6, rel=0.01)  # ShuffleNetV2 Table 5 / Megvii README: 146 M


def _assert_converts(reference, name, path, size):
    """Save ``reference`` as Megvii's training did (DataParallel keys), convert, compare outputs."""
    state = {f"module.{k}": v for k, v in reference.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 240}, path)
    ours = from_megvii(name, load_megvii_file(str(path))).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = reference(x)
        torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-5)
    assert expected.abs().max() > 0.05


def test_megvii_layout_converts_with_equal_outputs(tmp_path):
    _assert_converts(randomise(_MegviiStyle(classes=50)), "ShuffleNetV2_1.0x",
                     tmp_path / "ShuffleNetV2.1.0x.pth.tar", 96)


def test_megvii_mismatch_is_named():
    state = _MegviiStyle().state_dict()
    state["features.99.branch_main.0.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="Megvii ShuffleNetV2 has 16 units"):
        from_megvii("shufflenet_v2_x1_0_official", state)
    with pytest.raises(ValueError, match="no Megvii converter for 'shufflenet_v2_x1_0'"):
        from_megvii("shufflenet_v2_x1_0", {})


def _megvii_v1_shuffle(x, groups):
    n, c, h, w = x.shape
    return x.reshape(n, c // groups, groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class _V1Unit(nn.Module):
    def __init__(self, inp, oup, groups, stride, first_grouped):
        super().__init__()
        self.stride, self.groups = stride, groups
        mid, out = oup // 4, oup - inp if stride == 2 else oup
        self.branch_main_1 = nn.Sequential(
            nn.Conv2d(inp, mid, 1, groups=groups if first_grouped else 1, bias=False), *_bn_relu(mid),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), *_bn_relu(mid, relu=False),
        )
        self.branch_main_2 = nn.Sequential(nn.Conv2d(mid, out, 1, groups=groups, bias=False),
                                           *_bn_relu(out, relu=False))

    def forward(self, x):
        y = self.branch_main_2(_megvii_v1_shuffle(self.branch_main_1(x), self.groups))
        if self.stride == 2:
            return torch.cat((nn.functional.avg_pool2d(x, 3, 2, 1), torch.relu(y)), 1)
        return torch.relu(x + y)


class _MegviiV1Style(nn.Module):
    def __init__(self, groups, widths, classes=1000):
        super().__init__()
        self.first_conv = nn.Sequential(nn.Conv2d(3, widths[0], 3, 2, 1, bias=False), *_bn_relu(widths[0]))
        units, inp = [], widths[0]
        for stage, (out, repeats) in enumerate(zip(widths[1:], (4, 8, 4), strict=True)):
            for i in range(repeats):
                units.append(_V1Unit(inp, out, groups, 2 if i == 0 else 1, first_grouped=stage > 0 or i > 0))
                inp = out
        self.features = nn.Sequential(*units)
        self.classifier = nn.Sequential(nn.Linear(inp, classes, bias=False))

    def forward(self, x):
        x = self.features(nn.functional.max_pool2d(self.first_conv(x), 3, 2, 1))
        return self.classifier(x.mean((2, 3)))


@pytest.mark.parametrize(
    ("theirs", "groups", "widths"),
    [("ShuffleNetV1_group3_1.5x", 3, (24, 360, 720, 1440)), ("ShuffleNetV1_group8_0.5x", 8, (16, 192, 384, 768))],
)
def test_megvii_v1_layout_converts_with_equal_outputs(tmp_path, theirs, groups, widths):
    _assert_converts(randomise(_MegviiV1Style(groups, widths, classes=30)), theirs, tmp_path / "checkpoint.pth.tar", 64)


def test_official_v1_differs_from_ours_only_where_the_release_does():
    official = lightnets.create_model("shufflenet_v1_g3_x1_5_official")
    uniform = lightnets.create_model("shufflenet_v1_g3_x1_5")
    assert official.conv_stem.out_channels == 24 and uniform.conv_stem.out_channels == 36
    assert official.classifier.bias is None
    unit = official.blocks[1][1]  # 720 outputs, bottleneck 180: the release's shuffle is ours with 180 / 3 groups
    assert unit.shuffle.groups == 60 and uniform.blocks[1][1].shuffle.groups == 3
    with torch.device("meta"):
        for groups in (3, 8):  # ShuffleNetV1 Table 2: 1x costs 140 MFLOPs (g = 3) and 137 (g = 8)
            model = lightnets.create_model(f"shufflenet_v1_g{groups}_x1_0_official")
            assert count_madds(model) == pytest.approx(138e6, rel=0.01)
    with pytest.raises(ValueError, match="groups in \\(3, 8\\)"):
        lightnets.create_model("shufflenet_v1", groups=4, official=True)


def test_megvii_v1_mismatch_is_named():
    state = _MegviiV1Style(3, (24, 240, 480, 960)).state_dict()
    state["features.0.branch_main_2.0.weight"] = torch.zeros(216, 10, 1, 1)
    with pytest.raises(ValueError, match=r"features.0.branch_main_2.0.weight|blocks.0.0.conv_pwl.weight"):
        from_megvii("ShuffleNetV1_group3_1.0x", state)
    state = _MegviiV1Style(3, (24, 240, 480, 960)).state_dict()
    state["features.3.branch_proj.0.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="unexpected key in the Megvii ShuffleNetV1 checkpoint"):
        from_megvii("shufflenet_v1_g3_x1_0_official", state)


def test_converted_megvii_checkpoint_predicts_like_the_bgr_original(tmp_path, images):
    """lightnets convert: stem reordered to RGB, 0..255 stored as the preprocessing; predict agrees."""
    from PIL import Image

    from lightnets.convert import convert_checkpoint
    from lightnets.export import predict
    from lightnets.formats import Preprocessing, load_image

    reference = randomise(_MegviiV1Style(8, (16, 192, 384, 768), classes=7)).eval()
    source = tmp_path / "snet.pth.tar"
    torch.save({"state_dict": reference.state_dict()}, source)
    out = tmp_path / "converted.safetensors"
    config = convert_checkpoint("megvii", "ShuffleNetV1_group8_0.5x", str(source), str(out), resolution=64,
                                classes=[f"c{i}" for i in range(7)])
    assert config["model"] == {"name": "shufflenet_v1_g8_x0_5_official", "options": {"num_classes": 7}}
    image = tmp_path / "img.png"
    pixels = (torch.rand(80, 100, 3) * 255).to(torch.uint8)
    Image.frombytes("RGB", (100, 80), bytes(pixels.flatten().tolist())).save(image)  # Pillow needs no numpy
    [prediction] = predict("shufflenet_v1_g8_x0_5_official", str(out), [str(image)], top=3)
    rgb01 = load_image(str(image), Preprocessing("imagenet", 64, (0.0,) * 3, (1.0,) * 3, resize=73))
    with torch.no_grad():
        expected = reference(rgb01.flip(0).unsqueeze(0) * 255).softmax(1)[0]  # what Megvii's code is fed: BGR 0..255
    top = expected.topk(3)
    assert [label for label, _ in prediction.top] == [f"c{i}" for i in top.indices.tolist()]
    torch.testing.assert_close(torch.tensor([p for _, p in prediction.top]), top.values, atol=1e-5, rtol=1e-4)
