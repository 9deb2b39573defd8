"""The built-in digit scenes, the target checks, and the detection / segmentation metrics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightnets.models import check_detection_targets, check_segmentation_targets, create_model
from lightnets.train import (
    SCENE_CLASSES,
    detection_map,
    digit_scenes,
    evaluate_detection,
    evaluate_segmentation,
    load_data,
    mean_iou,
    segmentation_confusion,
)
from lightnets.train.scenes import INK_THRESHOLD

SMALL = {"canvas": 64, "digit_size": (16, 24), "train_images": 60, "test_images": 20}


def _targets(split):
    return [t for b in split.batches(64, shuffle=False) for t in b.labels]


def test_same_seed_same_scenes_other_seed_other_scenes():
    a, _ = digit_scenes("detection", **SMALL, seed=3)
    b, _ = digit_scenes("detection", **SMALL, seed=3)
    c, _ = digit_scenes("detection", **SMALL, seed=4)
    assert torch.equal(a.loader.scenes.images, b.loader.scenes.images)
    assert all(torch.equal(x["boxes"], y["boxes"]) for x, y in zip(_targets(a), _targets(b), strict=True))
    assert not torch.equal(a.loader.scenes.images, c.loader.scenes.images)


def test_train_and_test_scenes_use_disjoint_source_digits():
    train, test = digit_scenes("detection", **SMALL)
    used_train = set(torch.cat(train.loader.scenes.sources).tolist())
    used_test = set(torch.cat(test.loader.scenes.sources).tolist())
    assert used_train and used_test and not used_train & used_test
    assert (train.name, test.name) == ("train", "test")


def test_boxes_are_the_tight_boxes_of_the_masks_and_the_masks_the_ink():
    det, _ = digit_scenes("detection", **SMALL, seed=1)
    seg, _ = digit_scenes("segmentation", **SMALL, seed=1)
    images, masks = seg.loader.scenes.images, seg.loader.scenes.masks
    assert torch.equal(images, det.loader.scenes.images)  # the same scenes for both tasks
    assert torch.equal(masks > 0, images >= INK_THRESHOLD)
    for i, target in enumerate(_targets(det)):
        covered = torch.zeros_like(masks[i], dtype=torch.bool)
        for (x1, y1, x2, y2), label in zip(target["boxes"].int().tolist(), target["labels"].tolist(), strict=True):
            inside = masks[i, y1:y2, x1:x2]
            assert set(inside.unique().tolist()) == {0, label}  # only this digit's class within its box
            rows, cols = (inside > 0).any(1).nonzero().flatten(), (inside > 0).any(0).nonzero().flatten()
            assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (0, y2 - y1, 0, x2 - x1)  # tight
            covered[y1:y2, x1:x2] = True
        assert not (masks[i][~covered] > 0).any()  # no ink outside the boxes


def test_counts_classes_and_batches():
    train, _ = digit_scenes("detection", **SMALL)
    counts = [len(t["labels"]) for t in _targets(train)]
    assert min(counts) >= 1 and max(counts) <= 4 and len(set(counts)) > 1
    assert train.classes == SCENE_CLASSES == ["background"] + [str(d) for d in range(10)]
    batch = next(train.batches(8, shuffle=True, epoch=1, seed=2, drop_last=True, skip=1))
    assert batch.images.shape == (8, 3, 64, 64) and batch.images.dtype == torch.float32
    assert batch.labels[0]["boxes"].dtype == torch.float32 and batch.labels[0]["labels"].dtype == torch.int64
    seg, _ = digit_scenes("segmentation", **SMALL)
    batch = next(seg.batches(5, shuffle=False))
    assert batch.labels.shape == (5, 64, 64) and batch.labels.dtype == torch.int64
    assert 0 < batch.labels.max() <= 10


def test_resolution_scales_boxes_and_masks():
    full, _ = digit_scenes("detection", **SMALL)
    half, _ = digit_scenes("detection", **SMALL, resolution=32)
    a, b = next(full.batches(4, shuffle=False)), next(half.batches(4, shuffle=False))
    assert b.images.shape == (4, 3, 32, 32)
    assert torch.equal(b.labels[0]["boxes"] * 2, a.labels[0]["boxes"])
    seg, _ = digit_scenes("segmentation", **SMALL, resolution=32)
    assert next(seg.batches(4, shuffle=False)).labels.shape == (4, 32, 32)


def test_load_data_names():
    train, test = load_data("digit-segmentation", 128)
    assert train.task == test.task == "segmentation" and (train.size, test.size) == (2000, 500)
    assert train.preprocessing.kind == "digits" and train.augmentation.startswith("none")
    with pytest.raises(ValueError, match="no augmentation"):
        load_data("digit-detection", 128, augment="imagenet")


@pytest.mark.parametrize("kwargs, message", [
    ({"task": "keypoints"}, "task must be one of detection, segmentation"),
    ({"digits_per_image": (0, 2)}, "digits_per_image must be a"),
    ({"digit_size": (16, 200)}, "digit_size must be a"),
    ({"train_images": 0}, "train_images must be an integer >= 1"),
])
def test_bad_scene_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        digit_scenes(**({"task": "detection"} | kwargs))


def test_classifiers_refuse_scene_splits():
    from lightnets.train import evaluate, fit

    train, test = digit_scenes("detection", **SMALL)
    with pytest.raises(ValueError, match="this data is a detection task and ConvNet a classification model; train "
                                         r"a detection model on it \(lightnets.list_models\(task='detection'\)\)"):
        fit(create_model("mobilenet_v3_small_050", num_classes=11), (train, test), run_dir=None, epochs=1)
    with pytest.raises(ValueError, match="evaluate_detection"):
        evaluate(create_model("mobilenet_v3_small_050", num_classes=11), test)


def _box(*xyxy, label=1):
    return {"boxes": torch.tensor([xyxy], dtype=torch.float32), "labels": torch.tensor([label])}


@pytest.mark.parametrize("target, message", [
    ({"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}, "an image without boxes"),
    (_box(0, 0, 70, 10), "outside the 64x64 image"),
    (_box(-1, 0, 10, 10), "outside"),
    (_box(5, 0, 5, 10), "degenerate"),
    (_box(0, 9, 5, 3), "degenerate"),
    (_box(0, 0, float("nan"), 3), "not finite"),
    ({"boxes": torch.zeros(2, 5), "labels": torch.ones(2, dtype=torch.long)}, r"shape \(k, 4\)"),
    (_box(0, 0, 5, 5, label=0), r"label 0; allowed 1..10"),
    (_box(0, 0, 5, 5, label=11), r"label 11; allowed 1..10"),
    ({"boxes": torch.ones(1, 4).cumsum(1), "labels": torch.ones(2, dtype=torch.long)}, "one per box"),
    ({"boxes": torch.ones(1, 4).cumsum(1), "labels": torch.ones(1)}, "integer tensor"),
    ({"boxes": torch.ones(1, 4)}, "'boxes' and 'labels'"),
])
def test_detection_target_checks(target, message):
    check_detection_targets([_box(1, 1, 9, 9)], 64, 11)  # a valid one passes
    with pytest.raises(ValueError, match=message) as err:
        check_detection_targets([_box(1, 1, 9, 9), target], 64, 11)
    assert "detection target 1" in str(err.value)


def test_segmentation_target_checks():
    images = torch.zeros(2, 3, 8, 8)
    check_segmentation_targets(torch.zeros(2, 8, 8, dtype=torch.long), images, 11)
    with pytest.raises(ValueError, match=r"shape \(2, 8, 7\); the images need \(2, 8, 8\)"):
        check_segmentation_targets(torch.zeros(2, 8, 7, dtype=torch.long), images, 11)
    with pytest.raises(ValueError, match="integer tensor"):
        check_segmentation_targets(torch.zeros(2, 8, 8), images, 11)
    bad = torch.zeros(2, 8, 8, dtype=torch.long)
    bad[1, 3, 3] = 11
    with pytest.raises(ValueError, match=r"mask 1 has class 11; allowed 0..10"):
        check_segmentation_targets(bad, (2, 8, 8), 11)


# ---- metrics ----------------------------------------------------------------------------


def _pred(boxes, labels, scores=None):
    boxes = torch.tensor(boxes, dtype=torch.float32)
    return {"boxes": boxes, "labels": torch.tensor(labels),
            "scores": torch.tensor(scores if scores is not None else [0.9] * len(boxes))}


def test_detection_map_hand_cases(detection):
    targets = [_box(10, 10, 30, 30, label=1), _box(0, 0, 20, 40, label=3)]
    perfect = [_pred([[10, 10, 30, 30]], [1]), _pred([[0, 0, 20, 40]], [3])]
    assert detection_map(perfect, targets)["map"] == pytest.approx(1.0)
    wrong = [_pred([[10, 10, 30, 30]], [2]), _pred([[0, 0, 20, 40]], [4])]
    assert detection_map(wrong, targets)["map"] == pytest.approx(0.0)
    # 20x20 box shifted by 5 px: intersection 15x20 = 300, union 500: IoU 0.6
    shifted = [_pred([[15, 10, 35, 30]], [1]), _pred([[0, 0, 20, 40]], [3])]
    result = detection_map(shifted, targets)
    assert result["map50"] == pytest.approx(1.0) and result["map75"] == pytest.approx(0.5)
    assert result["per_class"][1] < 1 and result["per_class"][3] == pytest.approx(1.0)
    only_shifted = detection_map(shifted[:1], targets[:1])
    assert (only_shifted["map50"], only_shifted["map75"]) == (pytest.approx(1.0), pytest.approx(0.0))
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long), "scores": torch.zeros(0)}
             for _ in targets]
    assert detection_map(empty, targets)["map"] == 0.0
    with pytest.raises(ValueError, match="one per image"):
        detection_map(perfect[:1], targets)


def test_mean_iou_hand_case():
    target = torch.tensor([[[0, 0], [1, 1]]])
    pred = torch.tensor([[[0, 1], [1, 1]]])
    confusion = segmentation_confusion(pred, target, 3)
    assert confusion.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    result = mean_iou(confusion)
    # class 0: TP 1, FN 1 -> 1/2; class 1: TP 2, FP 1 -> 2/3; class 2 absent from both
    assert result["per_class"] == [pytest.approx(0.5), pytest.approx(2 / 3), None]
    assert result["miou"] == pytest.approx((0.5 + 2 / 3) / 2) and result["pixel_acc"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="allowed 0..2"):
        segmentation_confusion(pred + 2, target, 3)


# ---- evaluation of models ---------------------------------------------------------------


class _Oracle(nn.Module):
    """Returns the ground truth of the split (in batch order) as detections, shifted by ``shift`` px."""

    def __init__(self, split, shift=0.0):
        super().__init__()
        self.targets, self.shift, self.seen = _targets(split), shift, 0

    def detect(self, x):
        out = []
        for t in self.targets[self.seen:self.seen + len(x)]:
            boxes = t["boxes"] + torch.tensor([self.shift, 0, self.shift, 0])
            out.append({"boxes": boxes, "labels": t["labels"], "scores": torch.ones(len(boxes))})
        self.seen += len(x)
        return out


def test_evaluate_detection_with_fake_detectors(detection):
    _, test = digit_scenes("detection", **SMALL)
    assert evaluate_detection(_Oracle(test), test, batch_size=7)["map"] == pytest.approx(1.0)
    shifted = evaluate_detection(_Oracle(test, shift=6.0), test, batch_size=7)
    assert 0 <= shifted["map"] < 1 and shifted["images"] == test.size
    with pytest.raises(ValueError, match="detect"):
        evaluate_detection(nn.Identity(), test)


class _PerfectSegmenter(nn.Module):
    def __init__(self, split):
        super().__init__()
        self.masks = torch.cat([b.labels for b in split.batches(64, shuffle=False)])
        self.seen = 0

    def forward(self, x):
        m = self.masks[self.seen:self.seen + len(x)]
        self.seen += len(x)
        return nn.functional.one_hot(m, 11).permute(0, 3, 1, 2).float()


def test_evaluate_segmentation(one_thread):
    _, test = digit_scenes("segmentation", **SMALL, resolution=32)
    assert evaluate_segmentation(_PerfectSegmenter(test), test, batch_size=8)["miou"] == pytest.approx(1.0)
    model = create_model("lraspp_mobilenet_v3_small", num_classes=11, width_mult=0.5)
    result = evaluate_segmentation(model, test, batch_size=10)
    assert 0 <= result["miou"] <= 1 and len(result["per_class"]) == 11 and result["count"] == test.size
    with pytest.raises(ValueError, match="num_classes=11"):
        evaluate_segmentation(create_model("lraspp_mobilenet_v3_small", num_classes=3, width_mult=0.5), test)
