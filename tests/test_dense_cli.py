"""The dense models (SSDLite, LR-ASPP) through ``lightnets profile``, ``zoo``, ``export``, ``eval`` and ``predict``."""

import json
import os
import re

import pytest
import torch

import lightnets
from lightnets.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny training run per dense task (two steps: the figures are not the point, the commands are)."""
    root = tmp_path_factory.mktemp("dense-runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, res, out in (("lraspp_mobilenet_v3_small", "32", "seg"), ("ssdlite_mobilenet_v3_small", "64", "det")):
            assert main(["train", name, "--width-mult", "0.35", "--resolution", res, "--max-steps", "2",
                         "--batch-size", "8", "--out", str(root / out), "--no-progress"]) == 0
    finally:
        torch.set_num_threads(threads)
    return {"segmentation": str(root / "seg" / "best.safetensors"),
            "detection": str(root / "det" / "best.safetensors")}


@pytest.fixture
def scene(tmp_path):
    """A PNG a user would bring: random grey noise of a size the model was not trained at."""
    pytest.importorskip("PIL")
    from PIL import Image

    path = tmp_path / "scene.png"
    Image.fromarray((torch.rand(90, 110) * 255).to(torch.uint8).numpy()).save(path)
    return str(path)


def test_profile_counts_a_detector_and_a_segmenter(capsys):
    assert main(["profile", "ssdlite_mobilenet_v3_small", "--width-mult", "0.25", "--resolution", "64"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ssdlite_mobilenet_v3_small (width 0.25) at 64x64") and "head.classification_head.0" in out
    assert main(["profile", "lraspp_mobilenet_v3_small", "--width-mult", "0.35", "--resolution", "64"]) == 0
    segmenter_out = capsys.readouterr().out
    for name, width, text in (("ssdlite_mobilenet_v3_small", 0.25, out),
                              ("lraspp_mobilenet_v3_small", 0.35, segmenter_out)):
        with torch.device("meta"):
            model = lightnets.create_model(name, width_mult=width)
        madds = lightnets.cost.count_madds(model, (1, 3, 64, 64))
        assert f"{madds / 1e6:,.1f} M MAdds" in text


def test_the_memory_check_reads_a_dense_models_backbone():
    from lightnets.models import NetSpec, estimate_memory, spec_of

    model = lightnets.create_model("lraspp_mobilenet_v3_small", width_mult=0.35)
    spec = spec_of(model)
    assert isinstance(spec, NetSpec) and spec.stages == model.backbone.spec.stages
    # the classification head the backbone does not build is not counted: a one-class linear layer stands for it
    assert estimate_memory(spec).params < estimate_memory(model.backbone.spec).params
    assert spec_of(torch.nn.Linear(2, 2)) is None


def test_zoo_measures_dense_models_with_their_task(capsys, tmp_path, idle_machine):
    js = tmp_path / "zoo.json"
    models = "ssdlite320_mobilenet_v3_large,ssdlite_mobilenet_v3_large,lraspp_mobilenet_v3_small,mobilenet_v3_small_050"
    assert main(["zoo", "--models", models, "--runs", "2", "--rounds", "1", "--warmup", "0", "--resolution", "64",
                 "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "default classes" in out
    tasks = {line.split()[0]: line.split()[1] for line in out.splitlines()
             if line.startswith(("ssdlite", "lraspp", "mobilenet"))}
    # the two SSDLite names build one network: one row
    assert tasks == {"ssdlite320_mobilenet_v3_large": "detection", "lraspp_mobilenet_v3_small": "segmentation",
                     "mobilenet_v3_small_050": "classification"}
    rows = {row["name"]: row for row in json.loads(js.read_text())["models"]}
    assert rows["ssdlite320_mobilenet_v3_large"]["aliases"] == ["ssdlite_mobilenet_v3_large"]
    assert {name: row["task"] for name, row in rows.items()} == tasks
    with torch.device("meta"):
        segmenter = lightnets.create_model("lraspp_mobilenet_v3_small")
    assert rows["lraspp_mobilenet_v3_small"]["madds"] == lightnets.cost.count_madds(segmenter, (1, 3, 64, 64))
    assert main(["zoo", "--models", models, "--task", "segmentation", "--runs", "2", "--rounds", "1", "--warmup",
                 "0", "--resolution", "64"]) == 0
    out = capsys.readouterr().out
    assert "lraspp_mobilenet_v3_small" in out and "ssdlite320" not in out and "mobilenet_v3_small_050" not in out


def test_the_zoo_lists_every_task_by_default():
    from lightnets.analysis import distinct_models
    from lightnets.catalog import TASKS, task_of

    assert {task_of(name) for name in distinct_models()} == set(TASKS)
    assert all(task_of(name) == "detection" for name in distinct_models(task="detection"))


def test_detector_exports_to_onnx_through_the_cli_with_runtime_parity(tmp_path, capsys, deploy):
    from lightnets.export import OnnxModel

    path = str(tmp_path / "det.onnx")
    torch.manual_seed(0)
    assert main(["export", "ssdlite_mobilenet_v3_small", "--width-mult", "0.5", "--resolution", "128",
                 "-o", path]) == 0
    out = capsys.readouterr().out
    assert "outputs boxes, scores" in out and "not in the file" in out and "batched_nms" in out
    torch.manual_seed(0)  # the same random weights as the exported ones
    model = lightnets.create_model("ssdlite_mobilenet_v3_small", width_mult=0.5).eval()
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        boxes, scores = model.decode(model(x), (128, 128))
    got = OnnxModel(path).outputs(x)
    assert got["boxes"].shape == boxes.shape and got["scores"].shape == scores.shape
    torch.testing.assert_close(got["boxes"], boxes, atol=1e-3, rtol=1e-4)  # pixels of a 128-pixel image
    torch.testing.assert_close(got["scores"], scores, atol=1e-5, rtol=1e-4)


def test_segmenter_checkpoint_exports_to_onnx_through_the_cli_with_runtime_parity(runs, tmp_path, capsys, deploy):
    from lightnets.export import OnnxModel
    from lightnets.formats import load_model

    path = str(tmp_path / "seg.onnx")
    assert main(["export", "lraspp_mobilenet_v3_small", "--checkpoint", runs["segmentation"], "-o", path]) == 0
    assert "output logits (N, classes, H, W)" in capsys.readouterr().out
    model = load_model(runs["segmentation"]).model.eval()
    x = torch.randn(2, 3, 48, 40)  # another size than the checkpoint's 32: the file takes any
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(OnnxModel(path)(x), expected, atol=1e-4, rtol=1e-4)


def test_int8_and_classifier_only_commands_refuse_dense_models(capsys):
    assert main(["export", "lraspp_mobilenet_v3_small", "--width-mult", "0.35", "--int8", "--calibration", "digits",
                 "-o", os.devnull, "--force"]) == 2
    assert "--int8 quantizes classifiers" in capsys.readouterr().err
    for argv in (["spec", "ssdlite_mobilenet_v2"], ["lut", "build", "--models", "lraspp_mobilenet_v3_small", "-o", "x"],
                 ["search", "--base", "ssdlite_mobilenet_v2", "--target-ms", "1"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "model; this command handles classifiers" in err and "export, eval and predict take" in err


def test_eval_of_a_segmentation_checkpoint_prints_mean_iou(runs, tmp_path, capsys):
    js = tmp_path / "eval.json"
    assert main(["eval", "lraspp_mobilenet_v3_small", "--checkpoint", runs["segmentation"], "--json", str(js)]) == 0
    out = capsys.readouterr().out
    result = json.loads(js.read_text())
    assert result["task"] == "segmentation"
    assert f"mean IoU {100 * result['miou']:.2f}%, pixel accuracy {100 * result['pixel_acc']:.2f}%" in out
    assert len(result["per_class"]) == len(result["classes"]) == 11
    assert all(re.search(rf"^{c}\s+\d+\s", out, re.M) for c in result["classes"])  # one row per class, with pixels
    assert main(["eval", "lraspp_mobilenet_v3_small", "--checkpoint", runs["segmentation"], "--plot", "x.png"]) == 2
    assert "confusion matrix" in capsys.readouterr().err


def test_eval_of_a_detection_checkpoint_prints_coco_map(runs, tmp_path, capsys, detection):
    js = tmp_path / "eval.json"
    assert main(["eval", "ssdlite_mobilenet_v3_small", "--checkpoint", runs["detection"], "--json", str(js)]) == 0
    out = capsys.readouterr().out
    result = json.loads(js.read_text())
    assert (f"mAP@[.5:.95] {100 * result['map']:.2f}%, mAP@0.5 {100 * result['map50']:.2f}%, "
            f"mAP@0.75 {100 * result['map75']:.2f}%") in out
    assert sorted(result["per_class"]) == [str(d) for d in range(10)]  # digit names, not label indices


def test_predict_draws_a_segmentation_checkpoints_masks(runs, tmp_path, capsys, scene):
    drawn = tmp_path / "drawn"
    assert main(["predict", "lraspp_mobilenet_v3_small", "--checkpoint", runs["segmentation"], scene]) == 2
    assert "give --out DIR" in capsys.readouterr().err
    assert main(["predict", "lraspp_mobilenet_v3_small", "--checkpoint", runs["segmentation"], scene,
                 "--out", str(drawn)]) == 0
    out = capsys.readouterr().out
    total = int(re.search(r"scene.png: (\d+) pixels not background", out).group(1))
    listed = [int(n) for n in re.findall(r"^  \S+\s+(\d+) pixels$", out, re.M)]
    assert sum(listed) == total <= 32 * 32
    assert f"drawn: {drawn / 'scene.png'}" in out and (drawn / "scene.png").exists()


def test_predict_draws_a_detection_checkpoints_boxes(runs, tmp_path, capsys, scene, torchvision_ops):
    drawn = tmp_path / "drawn"
    assert main(["predict", "ssdlite_mobilenet_v3_small", "--checkpoint", runs["detection"], scene,
                 "--out", str(drawn), "--score-thresh", "0"]) == 0
    out = capsys.readouterr().out
    count = int(re.search(r"scene.png: (\d+) detections scoring >= 0", out).group(1))
    boxes = re.findall(r"^  \S+\s+[\d.]+%  box ([\d.]+),([\d.]+),([\d.]+),([\d.]+)$", out, re.M)
    assert count == len(boxes) > 0
    # boxes are in the file's pixels (110 x 90), not the model's 64 x 64
    assert all(0 <= float(x1) <= float(x2) <= 110 and 0 <= float(y1) <= float(y2) <= 90 for x1, y1, x2, y2 in boxes)
    assert (drawn / "scene.png").exists()


@pytest.fixture
def torchvision_ops():
    """SSDLite.detect's NMS is torchvision's."""
    pytest.importorskip("torchvision")
