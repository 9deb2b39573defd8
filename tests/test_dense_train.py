"""Training, exporting and predicting with the dense models on the built-in digit scenes (issue 14)."""

import os

import pytest
import torch

import lightnets
from lightnets.train import fit, load_data

SEGMENTER = {"name": "lraspp_mobilenet_v3_small", "num_classes": 11, "width_mult": 0.35}


def segmenter():
    options = dict(SEGMENTER)
    return lightnets.create_model(options.pop("name"), **options)


def test_fit_trains_a_segmentation_model_and_keeps_the_best_by_mean_iou():
    model = segmenter()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = fit(model, "digit-segmentation", run_dir=None, resolution=32, epochs=2, max_steps=8, batch_size=16,
                 show_progress=False, log=lambda _msg: None)
    assert result.metric == "miou"
    assert [row["epoch"] for row in result.history] == [1]  # the cap of 8 steps ends the run in epoch 1
    row = result.final
    assert 0 <= row["val_miou"] <= 1 and 0 <= row["val_pixel_acc"] <= 1
    assert result.best_score == row["val_miou"]
    assert "train_top1" not in row and "val_top1" not in row
    assert all(isinstance(v, (int, float, str)) for v in row.values())  # no per-class lists in the metrics lines
    changed = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert changed, "training changed no weight"
    with pytest.raises(AttributeError, match="best_score"):
        _ = result.best_top1


def test_fit_refuses_data_of_another_task():
    with pytest.raises(ValueError, match="is a segmentation model and this data a classification task"):
        fit(segmenter(), "digits", run_dir=None, max_steps=1, show_progress=False, log=lambda _msg: None)
    classifier = lightnets.create_model("mobilenet_v2", num_classes=11, width_mult=0.25)
    with pytest.raises(ValueError, match="this data is a segmentation task and ConvNet a classification model"):
        fit(classifier, "digit-segmentation", run_dir=None, resolution=32, max_steps=1, show_progress=False,
            log=lambda _msg: None)


@pytest.mark.parametrize("argv, message", [
    (["mobilenet_v2", "--task", "digit-segmentation"], "mobilenet_v2 is a classifier; digit-segmentation trains "
                                                       "segmentation models"),
    (["lraspp_mobilenet_v3_small", "--data", "digits"], "it trains on the built-in scenes"),
    (["lraspp_mobilenet_v3_small", "--task", "digit-segmentation", "--data", "digits"], "--data 'digits' names"),
])
def test_cli_train_matches_the_model_to_the_task(argv, message, capsys):
    from lightnets.cli import main

    assert main(["train", *argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_trains_a_segmentation_model_and_predict_draws_its_masks(tmp_path, capsys, images):
    from PIL import Image

    from lightnets.cli import main
    from lightnets.export import predict_dense
    from lightnets.export.draw import MIN_DRAW_SIZE

    run = tmp_path / "run"
    assert main(["train", "lraspp_mobilenet_v3_small", "--width-mult", "0.35", "--resolution", "32",
                 "--max-steps", "2", "--batch-size", "8", "--out", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "val miou" in out and "best validation mean IoU" in out
    # one test scene as the PNG a user would bring: grey digits on black
    _, test = load_data("digit-segmentation", 128, augment=False)
    scene = test.loader.load(torch.tensor([0])).images[0, 0]
    grey = ((scene * 0.5 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    path = tmp_path / "scene.png"
    Image.fromarray(grey.numpy()).save(path)
    (result,) = predict_dense(None, str(run / "best.safetensors"), [str(path)], str(tmp_path / "drawn"))
    assert result.error is None and os.path.exists(result.drawn)
    with Image.open(result.drawn) as drawn:
        assert drawn.width >= MIN_DRAW_SIZE and drawn.mode == "RGB"
    assert set(result.pixels) <= set(test.classes[1:])  # digit classes only; background is not listed
    with pytest.raises(ValueError, match="holds a classifier"):
        classifier = tmp_path / "cls"
        assert main(["train", "mobilenet_v2", "--width-mult", "0.25", "--max-steps", "1", "--out", str(classifier),
                     "--no-progress"]) == 0
        predict_dense(None, str(classifier / "best.safetensors"), [str(path)], str(tmp_path / "drawn"))


def test_segmentation_model_exports_to_onnx_at_any_size(tmp_path, deploy):
    from lightnets.export import OnnxModel, export_onnx

    model = segmenter().eval()
    path = export_onnx(model, str(tmp_path / "seg.onnx"), resolution=64)
    x = torch.randn(2, 3, 96, 80)
    with torch.no_grad():
        expected = model(x)
    got = OnnxModel(path)(x)
    assert got.shape == (2, 11, 96, 80)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


DETECTOR = {"name": "ssdlite_mobilenet_v3_small", "num_classes": 11, "width_mult": 0.35}


def detector():
    options = dict(DETECTOR)
    return lightnets.create_model(options.pop("name"), **options)


def few_scenes(resolution: int = 64):
    """A few scenes: an untrained detector returns hundreds of boxes per image, which COCOeval then matches."""
    from lightnets.train import digit_scenes

    return digit_scenes("detection", train_images=32, test_images=8, resolution=resolution)


def test_fit_trains_a_detector_and_keeps_the_best_by_coco_map(detection):
    model = detector()
    result = fit(model, few_scenes(), run_dir=None, max_steps=4, batch_size=8, show_progress=False,
                 log=lambda _msg: None)
    assert result.metric == "map"
    row = result.final
    assert {"val_map", "val_map50", "val_map75"} <= set(row) and "val_score_thresh" not in row
    assert 0 <= row["val_map"] <= row["val_map50"] <= 1
    assert result.best_score == row["val_map"]


def test_detector_exports_decoded_boxes_and_scores_at_a_fixed_size(tmp_path, deploy):
    from lightnets.export import OnnxModel, export_onnx

    model = detector().eval()
    with pytest.raises(ValueError, match="exports at a fixed input size"):
        export_onnx(model, str(tmp_path / "det.onnx"), resolution=96, dynamic_size=True)
    path = export_onnx(model, str(tmp_path / "det.onnx"), resolution=96)
    x = torch.randn(3, 3, 96, 96)  # the batch stays dynamic
    with torch.no_grad():
        boxes, scores = model.decode(model(x), (96, 96))
    got = OnnxModel(path).outputs(x)
    assert set(got) == {"boxes", "scores"}
    torch.testing.assert_close(got["boxes"], boxes, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(got["scores"], scores, rtol=1e-4, atol=1e-5)


def test_predict_draws_a_detectors_boxes(tmp_path, detection, images):
    from PIL import Image

    from lightnets.export import predict_dense

    run = tmp_path / "run"
    options = {k: v for k, v in DETECTOR.items() if k != "name"}
    fit(detector(), few_scenes(), run_dir=str(run), max_steps=2, batch_size=8, show_progress=False,
        log=lambda _msg: None, model_config={"name": DETECTOR["name"], "options": options})
    path = tmp_path / "scene.png"
    Image.new("L", (100, 80)).save(path)  # any size: resized whole to the model's input, boxes mapped back
    (result,) = predict_dense(None, str(run / "last.safetensors"), [str(path)], str(tmp_path / "drawn"),
                              score_thresh=0.0)
    assert result.error is None and os.path.exists(result.drawn)
    assert result.detections, "a score threshold of 0 keeps every detection the model returns"
    for label, score, (x1, y1, x2, y2) in result.detections:
        assert label in [str(d) for d in range(10)] and 0 <= score <= 1
        assert 0 <= x1 <= x2 <= 100 and 0 <= y1 <= y2 <= 80  # in the file's pixels


@pytest.mark.parametrize("name", lightnets.list_models(task="detection") + lightnets.list_models(task="segmentation"))
def test_every_dense_model_exports_with_torch_export(name, tmp_path):
    from lightnets.export import export_pt2
    from lightnets.models import get_entry

    fixed = get_entry(name).fixed
    model = lightnets.create_model(name, num_classes=5, **({} if "width_mult" in fixed else {"width_mult": 0.35}))
    model.eval()
    path = export_pt2(model, str(tmp_path / f"{name}.pt2"), resolution=64)
    program = torch.export.load(path)
    x = torch.randn(3, 3, 64, 64)  # another batch size than the example's
    with torch.no_grad():
        got = program.module()(x)
        expected = model.decode(model(x), (64, 64)) if model.task == "detection" else model(x)
    for g, e in zip(got if isinstance(got, tuple) else (got,), expected if isinstance(expected, tuple) else (expected,),
                    strict=True):
        torch.testing.assert_close(g, e, rtol=1e-3, atol=1e-3)  # BatchNorm folded into the convolutions


@pytest.mark.parametrize("blocked, message", [
    ("pycocotools", "COCO mAP needs pycocotools"), ("torchvision.ops", "need torchvision"),
])
def test_training_a_detector_without_its_extra_stops_before_the_first_step(blocked, message, monkeypatch):
    import sys

    for name in ("pycocotools", "pycocotools.coco", "pycocotools.cocoeval", "torchvision.ops"):
        if name.startswith(blocked):
            monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    steps = []
    with pytest.raises(ValueError, match=message):
        fit(detector(), few_scenes(), run_dir=None, max_steps=1, batch_size=8, show_progress=False, log=steps.append)
    assert steps == [], "it stopped before loading data or training"
