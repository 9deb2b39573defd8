import pytest
import torch

# Randomly initialised networks decay to denormal activations, which slow CPU arithmetic by
# an order of magnitude; flushing them keeps the suite fast and changes no assertion.
torch.set_flush_denormal(True)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# Optional extras. The suite passes with only ``pip install -e . pytest`` (the extras' tests
# skip) and with the test extra (they run). A test that needs an extra asks for it at the
# narrowest scope: one of these fixtures (or ``pytest.importorskip`` inside the test); a
# module-level ``importorskip`` only when every test of the file needs it, never a plain
# top-level import (tests/test_optional_extras.py checks that). numpy is not an extra: the
# safetensors[torch] dependency brings it.


@pytest.fixture
def deploy() -> None:
    """Skip unless the deploy extra is installed: ONNX export needs onnx and onnxscript, timing
    and inference need onnxruntime (``pip install "lightnets[deploy]"``)."""
    for module in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(module)


@pytest.fixture
def plot() -> None:
    """Skip unless the plot extra (matplotlib) is installed: ``--plot``, ``--plot-dir``, plot_* functions."""
    pytest.importorskip("matplotlib")


@pytest.fixture
def images() -> None:
    """Skip unless the images extra (Pillow) is installed: ImageFolder trees, ``predict`` on image files."""
    pytest.importorskip("PIL")


@pytest.fixture
def detection() -> None:
    """Skip unless pycocotools (the detection extra's COCO mAP) is installed: detection_map, evaluate_detection."""
    pytest.importorskip("pycocotools")


@pytest.fixture
def optuna():
    """The optuna module (the search extra), or skip: ``lightnets search`` and its studies."""
    return pytest.importorskip("optuna")


@pytest.fixture
def idle_machine(monkeypatch):
    """Measurements read no other load: tests with injected timings must not depend on what
    else runs on the machine. Returns the reading they get."""
    from lightnets.cost import latency
    from lightnets.cost.load import MachineLoad

    reading = MachineLoad(0.0, 2, 1.0, "/proc/stat")

    class Idle:
        def start(self):
            return self

        def reading(self):
            return reading

    monkeypatch.setattr(latency, "LoadWatch", Idle)
    return reading


@pytest.fixture
def one_thread():
    """torch on one intra-op thread for the test (many small networks: threads only add overhead)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
