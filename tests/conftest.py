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


@pytest.fixture
def fake_exports():
    """A factory of stand-ins for :class:`lightnets.export.TimingExports` over a fake
    ``onnxruntime_rounds(modules, shapes, ...)``: ``make(rounds_fn, plain_extra_ms)``.

    Layouts as ONNX Runtime gives them to the zoo's kinds of site: a ShuffleNet unit ends in the
    plain layout (its concatenation and shuffle), every other site in the blocked one; every
    site but a stem (whose 3-channel convolution reads the plain input) changes with its input's
    layout. A part timed with its input plain takes ``plain_extra_ms`` more (the conversion)."""
    from lightnets.export import PartLayout

    def make(rounds_fn, plain_extra_ms=0.0):
        class FakeExports:
            opened: list = []  # every instance, to see how the table opened them

            def __init__(self, models, shapes, *, int8=False, workers=None, on_step=None, fold_residuals=False):
                self.models, self.shapes, self.int8 = list(models), list(shapes), int8
                self.fold_residuals = fold_residuals
                FakeExports.opened.append(self)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                pass

            def layout(self, i):
                kind = type(self.models[i]).__name__
                if kind.startswith("Shuffle"):
                    return PartLayout(False, False, True)
                return PartLayout(True, True, kind != "Stem")

            def rounds(self, items, *, threads, runs=30, warmup=10, rounds=3, reference=False, reference_every=4,
                       on_step=None):
                index = [item if isinstance(item, int) else item[0] for item in items]
                timed = rounds_fn([self.models[i] for i in index], [self.shapes[i] for i in index], threads=threads,
                                  runs=runs, warmup=warmup, int8=self.int8, rounds=rounds, part=True,
                                  reference=reference, reference_every=reference_every)
                for item, per_round in zip(items, timed.times_ms, strict=True):
                    if not isinstance(item, int) and not item[1]:
                        for times in per_round:
                            times[:] = [t + plain_extra_ms for t in times]
                return timed

        return FakeExports

    return make
