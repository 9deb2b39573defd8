"""Exponential moving average of weights (MobileNetV3 section 6.1 uses decay 0.9998)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    """Keeps ``shadow = decay * shadow + (1 - decay) * weights`` after every optimizer step.

    Buffers (BN running statistics) are copied, not averaged. The shadow is a full model so
    it can be evaluated directly.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay!r}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for shadow, p in zip(self.module.parameters(), model.parameters(), strict=True):
            shadow.lerp_(p.detach(), 1.0 - self.decay)
        for shadow, b in zip(self.module.buffers(), model.buffers(), strict=True):
            shadow.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
