import pytest
import torch
from torch import nn

import lightnets
from lightnets.export import count_batchnorms, fuse

from .test_convert import randomise


@pytest.mark.parametrize("name", ["mobilenet_v1_025", "mobilenet_v2_035", "mobilenet_v3_small", "shufflenet_v1_g3_x0_5", "shufflenet_v2_x0_5"])
def test_fuse_folds_every_batchnorm_and_keeps_outputs(name):
    model = randomise(lightnets.create_model(name, num_classes=10))
    with torch.no_grad():
        nn.init.normal_(model.classifier.weight, 0, 0.3)
    fused = fuse(model)
    assert count_batchnorms(fused) == 0 and count_batchnorms(model) > 0  # the original is untouched
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(fused(x), expected, atol=1e-5, rtol=1e-4)
    assert expected.abs().max() > 0.1
