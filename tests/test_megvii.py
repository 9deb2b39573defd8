"""The authors' ShuffleNetV2 release: our official variant, and loading their checkpoint layout.

No Megvii package exists to import, so ``_MegviiStyle`` below is an independent, minimal
rewrite of the released network's layout and forward (even/odd channel split at the start of
each stride-1 unit, projection branch keeping the input width), used only as a reference.
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
        for out, repeats in zip(widths[1:4], (4, 8, 4)):
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


def test_megvii_layout_converts_with_equal_outputs(tmp_path):
    reference = randomise(_MegviiStyle(classes=50))
    state = {f"module.{k}": v for k, v in reference.state_dict().items()}  # saved from DataParallel
    path = tmp_path / "ShuffleNetV2.1.0x.pth.tar"
    torch.save({"state_dict": state, "epoch": 240}, path)
    ours = from_megvii("ShuffleNetV2_1.0x", load_megvii_file(str(path))).eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        expected = reference(x)
        torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-5)
    assert expected.abs().max() > 0.05


def test_megvii_mismatch_is_named():
    state = _MegviiStyle().state_dict()
    state["features.99.branch_main.0.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="Megvii ShuffleNetV2 has 16 units"):
        from_megvii("shufflenet_v2_x1_0_official", state)
    with pytest.raises(ValueError, match="no Megvii converter for 'shufflenet_v2_x1_0'"):
        from_megvii("shufflenet_v2_x1_0", {})
