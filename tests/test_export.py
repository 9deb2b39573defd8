import sys

import pytest
import torch
from torch import nn

import lightnets
from lightnets.export import count_batchnorms, export_onnx, fuse
from lightnets.testing import randomize_for_parity as randomise


@pytest.mark.parametrize("name", ["mobilenet_v1_025", "mobilenet_v2_035", "mobilenet_v3_small",
                                  "shufflenet_v1_g3_x0_5", "shufflenet_v2_x0_5"])
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


ONNX_MODELS = [
    "mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small_minimal", "shufflenet_v1_g8_x0_5",
    "shufflenet_v2_x1_0",
]


@pytest.mark.parametrize("name", ONNX_MODELS)
def test_onnx_export_matches_pytorch_at_any_batch_and_size(name, tmp_path, deploy):
    pytest.importorskip("onnxruntime")
    from lightnets.export.onnx import OnnxModel, export_onnx

    model = randomise(lightnets.create_model(name))
    path = export_onnx(model, str(tmp_path / "m.onnx"), resolution=64)  # onnx.checker runs inside
    session = OnnxModel(path, threads=2)
    for batch, size in ((1, 224), (4, 160), (2, 32)):
        x = torch.randn(batch, 3, size, size)
        with torch.no_grad():
            torch.testing.assert_close(session(x), model(x), atol=1e-4, rtol=1e-4)


def test_onnx_export_takes_a_forward_whose_argument_has_any_name(tmp_path, deploy):
    pytest.importorskip("onnxruntime")
    from lightnets.export.onnx import OnnxModel, export_onnx

    block = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU()).eval()  # forward(input)
    path = export_onnx(block, str(tmp_path / "block.onnx"), resolution=32)
    x = torch.randn(3, 3, 40, 48)  # another batch and size than exported at: both axes stay dynamic
    with torch.no_grad():
        torch.testing.assert_close(OnnxModel(path)(x), block(x), atol=1e-5, rtol=1e-5)


def test_onnx_sessions_spin_unless_told_not_to(tmp_path, deploy):
    pytest.importorskip("onnxruntime")
    from lightnets.export.onnx import OnnxModel, export_onnx

    path = export_onnx(torch.nn.Conv2d(3, 4, 1).eval(), str(tmp_path / "c.onnx"), resolution=32)

    def allows_spinning(session):
        options = session.session.get_session_options()
        try:
            return options.get_session_config_entry("session.intra_op.allow_spinning") != "0"
        except Exception:  # an entry never set: ONNX Runtime's default, spinning
            return True

    assert allows_spinning(OnnxModel(path, threads=2))
    assert not allows_spinning(OnnxModel(path, threads=2, spinning=False))


def test_onnx_graph_uses_single_hardswish_and_no_batchnorm(tmp_path, deploy):
    onnx = pytest.importorskip("onnx")
    from lightnets.export.onnx import export_onnx

    path = export_onnx(lightnets.create_model("mobilenet_v3_small"), str(tmp_path / "v3.onnx"), resolution=64)
    ops = {node.op_type for node in onnx.load(path).graph.node}
    assert {"HardSwish", "HardSigmoid", "Conv"} <= ops and "BatchNormalization" not in ops


def _counting_sessions(monkeypatch) -> list[tuple[int, ...]]:
    """Record the input shape of every run of the ONNX Runtime sessions the latency backends open."""
    import lightnets.export.latency as backends

    runs = []

    class Counting(backends.OnnxModel):
        def __call__(self, x):
            runs.append(tuple(x.shape))
            return super().__call__(x)

    monkeypatch.setattr(backends, "OnnxModel", Counting)
    return runs


def test_measure_latency_onnxruntime_backend(deploy, monkeypatch):
    from lightnets.cost import measure_latency

    runs = _counting_sessions(monkeypatch)
    result = measure_latency(lightnets.create_model("shufflenet_v2_x0_5"), (1, 3, 64, 64), runs=3, warmup=1,
                             backend="onnxruntime", threads=1)
    assert result.backend == "onnxruntime" and result.threads == 1 and len(result.times_ms) == 3
    assert runs == [(1, 3, 64, 64)] * 4  # the warm-up and the 3 timed runs went to ONNX Runtime


def test_export_command_onnx_and_pt2(tmp_path, capsys, deploy):
    from lightnets.cli import main

    assert main(["export", "mobilenet_v3_small_050", "--resolution", "64", "-o", str(tmp_path / "m.onnx")]) == 0
    assert main(["export", "shufflenet_v2_x0_5", "--format", "pt2", "--resolution", "64", "-o",
                 str(tmp_path / "m.pt2")]) == 0
    program = torch.export.load(str(tmp_path / "m.pt2"))
    assert program.module()(torch.randn(3, 3, 64, 64)).shape == (3, 1000)  # dynamic batch
    assert "wrote" in capsys.readouterr().out


def test_predict_command_uses_stored_preprocessing(tmp_path, capsys, images):
    from PIL import Image

    from lightnets.cli import main
    from lightnets.train import fit

    run = tmp_path / "run"
    model = lightnets.create_model("mobilenet_v3_small_050", num_classes=10)
    fit(model, "digits", run_dir=str(run), epochs=1, resolution=16, max_steps=2, show_progress=False,
        log=lambda m: None,
        model_config={"name": "mobilenet_v3_small_050", "options": {"num_classes": 10}})
    image = tmp_path / "digit.png"
    Image.new("L", (40, 40), 255).save(image)
    assert main(["predict", "mobilenet_v3_small_050", "--checkpoint", str(run / "last.safetensors"), str(image)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(image) and len(lines) == 6 and lines[1].strip().startswith("1. ")
    total = sum(float(line.split()[-1].rstrip("%")) for line in lines[1:])
    assert 0 < total <= 100.01


def test_export_int8_with_digits_calibration_keeps_accuracy(tmp_path, capsys, deploy):
    pytest.importorskip("onnxruntime")
    from lightnets.cli import main
    from lightnets.export.onnx import OnnxModel
    from lightnets.train import digits, evaluate, fit

    run = tmp_path / "run"
    model = lightnets.create_model("shufflenet_v2_x0_5", num_classes=10)
    fit(model, "digits", run_dir=str(run), epochs=5, resolution=32, show_progress=False, log=lambda m: None,
        model_config={"name": "shufflenet_v2_x0_5", "options": {"num_classes": 10}})
    out = tmp_path / "int8.onnx"
    assert main(["export", "shufflenet_v2_x0_5", "--checkpoint", str(run / "last.safetensors"), "--int8",
                 "--calibration", "digits", "--calibration-batches", "4", "-o", str(out)]) == 0
    _, test = digits(32, augment=False)

    class Session(nn.Module):
        def __init__(self):
            super().__init__()
            self.session = OnnxModel(str(out))

        def forward(self, x):
            return self.session(x)

    fp32 = evaluate(model, test).top1
    assert fp32 > 0.5  # five epochs learn something
    assert evaluate(Session(), test).top1 >= fp32 - 0.03
    assert main(["export", "shufflenet_v2_x0_5", "--int8", "-o", str(out)]) == 2
    assert "--int8 needs --format onnx and --calibration DATA" in capsys.readouterr().err


def test_measure_latency_onnxruntime_int8_backend(deploy, monkeypatch):
    from lightnets.cost import measure_latency

    runs = _counting_sessions(monkeypatch)
    result = measure_latency(lightnets.create_model("mobilenet_v2_035"), (1, 3, 64, 64), runs=2, warmup=1,
                             backend="onnxruntime-int8")
    assert result.backend == "onnxruntime-int8" and len(result.times_ms) == 2
    assert runs == [(1, 3, 64, 64)] * 3  # the warm-up and the 2 timed runs went to ONNX Runtime


@pytest.mark.parametrize("backend", ["onnxruntime", "onnxruntime-int8"])
def test_onnxruntime_backends_time_the_shape_asked_for(backend, monkeypatch, deploy):
    """Not a square 3-channel stand-in: a 1-channel 48x64 input is exported and run as such."""
    pytest.importorskip("onnxruntime")
    import lightnets.export.latency as backends
    from lightnets.cost import measure_latency

    shapes = []

    class Recording(backends.OnnxModel):
        def __call__(self, x):
            shapes.append((tuple(self.session.get_inputs()[0].shape[1:]), tuple(x.shape)))
            return super().__call__(x)

    monkeypatch.setattr(backends, "OnnxModel", Recording)
    model = lightnets.create_model("mobilenet_v2_035", in_chans=1, num_classes=10)
    result = measure_latency(model, (1, 1, 48, 64), runs=2, warmup=1, backend=backend, threads=1)
    assert result.input_size == (1, 1, 48, 64)
    assert set(shapes) == {((1, 48, 64), (1, 1, 48, 64))}


def test_int8_mobilenet_v3_stays_int8_and_close_to_fp32(tmp_path, capfd, deploy):
    """SE pools become GlobalAveragePool, h-swish an int8 Add/Mul, the SE gate an int8 Add, 1/6 folded into scales.

    And the file holds no initializer that nothing reads: ONNX Runtime warned of each at every load (59).
    """
    import numpy as np  # with onnx, which the deploy fixture asks for
    import onnx

    from lightnets.export.onnx import OnnxModel
    from lightnets.export.quantize import _graph_reads, quantize_int8
    from lightnets.testing import randomize_for_parity

    torch.manual_seed(0)
    model = randomize_for_parity(lightnets.create_model("mobilenet_v3_small_075", num_classes=10)).eval()
    calibration = [torch.randn(4, 3, 64, 64) for _ in range(4)]
    path = quantize_int8(model, str(tmp_path / "v3.onnx"), calibration, resolution=64)
    ops = [node.op_type for node in onnx.load(path).graph.node]
    assert "ReduceMean" not in ops and "HardSwish" not in ops and "HardSigmoid" not in ops
    assert ops.count("GlobalAveragePool") >= 9
    graph = onnx.load(path).graph
    scalars = {i.name for i in graph.initializer if int(np.prod(i.dims)) == 1}
    producer = {out: n for n in graph.node for out in n.output}

    def scalar(name: str) -> bool:  # a one-element initializer, directly or through a DequantizeLinear
        dequantized = name in producer and producer[name].op_type == "DequantizeLinear"
        return name in scalars or (dequantized and producer[name].input[0] in scalars)

    scalar_muls = [n.name for n in graph.node if n.op_type == "Mul" and any(scalar(i) for i in n.input)]
    assert scalar_muls == []  # h-swish's 1/6 lives in a quantization scale, not in a pass over the map
    unused = {i.name for i in graph.initializer} - _graph_reads(graph)
    assert len(graph.initializer) > 100 and unused == set()
    with torch.no_grad():
        expected = model(calibration[0])
    capfd.readouterr()
    got = OnnxModel(path)(calibration[0])
    assert "Removing initializer" not in capfd.readouterr().err  # ONNX Runtime warns on fd 2 as it loads
    # int8 noise, but the same function: logits correlate and most top-1 classes agree
    assert torch.corrcoef(torch.stack([got.flatten(), expected.flatten()]))[0, 1] > 0.9


def _qdq_mul_graph(q_scale, mul_is_output=False):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    inits = [
        numpy_helper.from_array(np.array(0.1, np.float32), "s_in"), numpy_helper.from_array(np.array(0, np.uint8), "z"),
        numpy_helper.from_array(np.array(200, np.uint8), "c_q"),
        numpy_helper.from_array(np.array(0.01, np.float32), "c_s"),
        numpy_helper.from_array(np.array(q_scale, np.float32), "s_out"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s_in", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s_in", "z"], ["t"]),
        helper.make_node("DequantizeLinear", ["c_q", "c_s", "z"], ["c"]),
        helper.make_node("Mul", ["t", "c"], ["p"], name="mul"),
        helper.make_node("QuantizeLinear", ["p", "s_out", "z"], ["pq"]),
        helper.make_node("DequantizeLinear", ["pq", "s_out", "z"], ["y"]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])]
    if mul_is_output:
        outputs.append(helper.make_tensor_value_info("p", TensorProto.FLOAT, [4]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_constant_scale_folding_is_exact_or_skipped(deploy):
    import numpy as np
    import onnx
    import onnxruntime as ort

    from lightnets.export.quantize import _fold_constant_scales

    x = np.array([0.0, 3.3, 12.7, 25.5], np.float32)

    def run(model):
        return ort.InferenceSession(model.SerializeToString(),
                                    providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    exact = _qdq_mul_graph(0.2)  # c = 200 * 0.01 = 2; the product, 0..51, fits the Q (255 steps of 0.2)
    expected = run(exact)
    assert _fold_constant_scales(exact) == 1 and "Mul" not in [n.op_type for n in exact.graph.node]
    onnx.checker.check_model(exact, full_check=True)
    np.testing.assert_allclose(run(exact), expected, atol=0.1 + 1e-6)  # within half a Q step
    narrow = _qdq_mul_graph(0.01)  # the Q clamps at 2.55: folding would lose that
    assert _fold_constant_scales(narrow) == 0
    assert _fold_constant_scales(_qdq_mul_graph(0.2, mul_is_output=True)) == 0


def test_dead_initializers_are_dropped_but_subgraph_reads_and_inputs_kept(deploy):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from lightnets.export.quantize import drop_unused_initializers

    def init(name):
        return numpy_helper.from_array(np.ones(1, np.float32), name)

    then = helper.make_graph([helper.make_node("Add", ["x", "outer"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1])])
    nodes = [helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=then)]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, t, [1]) for n, t in (("x", TensorProto.FLOAT), ("c", TensorProto.BOOL),
                                                                ("w_in", TensorProto.FLOAT))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [init("outer"), init("dead"), init("w_in")],
    )
    model = helper.make_model(graph)
    assert drop_unused_initializers(model) == 1
    assert [i.name for i in model.graph.initializer] == ["outer", "w_in"]


def test_onnx_export_silences_only_the_torchvision_skip_lines(tmp_path, monkeypatch, deploy):
    """Without torchvision, torch.onnx logged 'torchvision is not installed. Skipping torchvision::nms' and
    three more at every export; our networks use none of torchvision's ops."""
    import logging

    from torch.onnx._internal.exporter._registration import _get_overload

    from lightnets.export.onnx import _REGISTRATION_LOGGER, _quiet_torchvision_skips

    monkeypatch.setitem(sys.modules, "torchvision", None)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger(_REGISTRATION_LOGGER)
    logger.addHandler(handler)
    try:
        _get_overload("torchvision::nms")  # outside an export: the line torch logs, which the handler sees
        assert [r.getMessage() for r in records] == ["torchvision is not installed. Skipping torchvision::nms"]
        records.clear()
        export_onnx(lightnets.create_model("mobilenet_v1_025", num_classes=4), str(tmp_path / "m.onnx"),
                    resolution=32, check=False)
        with _quiet_torchvision_skips():
            logger.warning("another exporter message")
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == ["another exporter message"]


def test_onnx_export_with_a_fixed_batch_takes_one_image(tmp_path, deploy):
    onnx = pytest.importorskip("onnx")
    from lightnets.export.onnx import export_onnx

    path = export_onnx(torch.nn.Conv2d(3, 4, 1).eval(), str(tmp_path / "c.onnx"), resolution=32,
                       dynamic_batch=False, dynamic_size=False)
    dims = [d.dim_value for d in onnx.load(path).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 32, 32]
