"""The counted columns of ``lightnets models --counts``."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..cost import count_madds, count_params
from ..models import create_model
from ..report import progress


def model_counts(names: Sequence[str], resolution: int = 224) -> dict[str, dict[str, int]]:
    """Params and MAdds at ``resolution`` of each registered model, with a progress bar on a terminal.

    Models are built on the meta device, so no weight is allocated or initialised.
    """
    counts = {}
    for name in progress(names, len(names), "counting"):
        with torch.device("meta"):
            model = create_model(name)
        counts[name] = {"params": count_params(model), "madds": count_madds(model, (1, 3, resolution, resolution))}
    return counts
