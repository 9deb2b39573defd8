"""The rows behind ``lightnets models``."""

from __future__ import annotations

import torch

from ..cost import count_madds, count_params
from ..models import create_model, get_entry, list_models


def model_rows(family: str | None = None, resolution: int = 224) -> list[dict]:
    """One row per registered model: name, family, params, MAdds at ``resolution``.

    Models are built on the meta device, so nothing is allocated or computed.
    """
    rows = []
    for name in list_models(family):
        with torch.device("meta"):
            model = create_model(name)
        rows.append(
            {
                "name": name,
                "family": get_entry(name).family,
                "params": count_params(model),
                "madds": count_madds(model, (1, 3, resolution, resolution)),
            }
        )
    return rows
