import pytest
import torch

# Randomly initialised networks decay to denormal activations, which slow CPU arithmetic by
# an order of magnitude; flushing them keeps the suite fast and changes no assertion.
torch.set_flush_denormal(True)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def deploy() -> None:
    """Skip unless the deploy extra is installed: ONNX export needs onnx and onnxscript, timing
    and inference need onnxruntime (``pip install "lightnets[deploy]"``)."""
    for module in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(module)
