"""Parameter and multiply-add counts.

Multiply-adds follow the papers' convention: the multiply-adds of convolutions and linear
layers, nothing else (no BatchNorm, activations or pooling). ``torch.utils.flop_counter``
counts exactly those operators at the dispatch level, at 2 FLOPs per multiply-add.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Number of parameters (buffers such as BN running statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_madds(model: nn.Module, input_size: tuple[int, ...] = (1, 3, 224, 224)) -> int:
    """Multiply-adds of one forward pass at ``input_size``, counted at the dispatch level.

    The model runs in eval mode on an input of the model's own device and dtype; on the
    ``meta`` device nothing is computed, so counting a large network is instant. The
    model's training flag is restored afterwards.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(input_size, device=device, dtype=dtype))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
