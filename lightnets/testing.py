"""Helpers for parity checks against other implementations."""

from __future__ import annotations

from torch import nn


def randomize_for_parity(model: nn.Module) -> nn.Module:
    """Random BN statistics and affine terms, and a large classifier, in place; returns the model in eval mode.

    Freshly initialised networks have identity BatchNorms and a near-zero classifier, so two
    different networks can agree to 1e-5; after this, equal outputs mean equal networks.
    """
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.2)
    return model.eval()
