"""lightnets: MobileNet V1-V3 and ShuffleNet V1-V2, faithful to their papers."""

from .export import register_backends
from .models import NetSpec, build, create_model, list_models

# measure_latency's ONNX Runtime backends: the exporter sits above cost, so cost cannot import it.
register_backends()

__version__ = "0.1.0"
__all__ = ["NetSpec", "__version__", "build", "create_model", "list_models"]
