"""Built-in detection and segmentation data: the shipped handwritten digits pasted onto larger canvases.

Each scene is a black ``canvas`` x ``canvas`` image with 1-4 of the 1,797 real UCI digits
(:func:`~lightnets.train.data.load_digits`) pasted at random integer positions and sizes. The
scenes are generated once, deterministically from ``seed`` (a ``torch.Generator``), and kept in
memory as uint8; detection and segmentation scenes of the same seed are the same scenes.

Choices, and why:

- **Sizes 16-48 px** (square, bilinear upscaling of the 8x8 image, ``align_corners=False``): 16
  px (2x) is the smallest size at which the strokes stay apart after interpolation and an
  object still covers a cell of a stride-16 feature map; 48 px (6x) keeps four digits placeable
  side by side on a 128 canvas (a 2x2 grid of 48 px squares needs 96 px) and gives a 3:1 range
  of object scales for a detector's anchors to cover.
- **No overlap**: the pasted squares (not only the ink) of one scene never intersect, so every
  pixel belongs to at most one digit and the masks and boxes are exact without a stacking rule.
  Positions and sizes are drawn by rejection: a digit that finds no free place in
  :data:`PLACEMENT_TRIES` draws is left out (at the defaults this is rare; crowded settings give
  fewer digits than drawn, never overlapping ones).
- **Ink threshold 1/2** (:data:`INK_THRESHOLD`, 128 of 255): a UCI pixel value is the number of
  inked pixels in a 4x4 block of the original 32x32 bitmap (0-16), i.e. ink coverage, and the
  bilinear upscale interpolates that coverage; a pixel is ink when at least half of it is
  covered, the majority rule of rasterisation. Masks are the pixels at or above it; a box is the
  tight box around them in pixel edges (``x2 = last column + 1``), so a box encloses exactly its
  mask. The fainter halo of the upscale stays in the image and is background.
- **Classes** follow torchvision's detection convention: 0 is the background and the digit d is
  class d + 1 (``classes = ["background", "0", ..., "9"]``).
- **Split**: train scenes draw their digits from the train part of the fixed stratified split
  of :func:`~lightnets.train.data.digits`, test scenes from its held-out part, so no source
  digit appears in both; ``seed`` changes the scenes, not that split.
- **No augmentation**: random placement, sizes and source digits already vary every scene, and
  a horizontal flip would mirror digits into other symbols.
- **Preprocessing** is the digits' (kind ``digits``, mean = std = 0.5 per channel, grey levels
  replicated to 3 channels): the pixels are the digits' ink on the digits' dark paper, and
  ``load_image``'s digits path (resize the whole image, invert dark-ink scans) prepares a scene
  image file the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..catalog import SCENE_CANVAS, SCENE_DATA  # noqa: F401  (SCENE_DATA: load_data's names, re-exported)
from ..formats.preprocessing import DIGITS_MEAN, DIGITS_STD, Preprocessing
from ..models.targets import check_detection_targets, check_segmentation_targets
from .data import Batch, DataSplit, check_resolution, load_digits, stratified_split

SCENE_TASKS = ("detection", "segmentation")
SCENE_CLASSES = ["background"] + [str(d) for d in range(10)]
INK_THRESHOLD = 128  # of 255: half ink coverage, see the module docstring
PLACEMENT_TRIES = 20
AUGMENTATION = ("none: random placement, sizes and source digits vary every scene; a horizontal flip would "
                "mirror digits into other symbols")


@dataclass
class Scenes:
    """Generated scenes: uint8 canvases, per-scene boxes and labels, the class map, the source digits."""

    images: torch.Tensor  # uint8 (S, canvas, canvas), 0..255
    boxes: list[torch.Tensor]  # float32 (k, 4) x1, y1, x2, y2 in pixel edges
    labels: list[torch.Tensor]  # int64 (k,), digit + 1
    masks: torch.Tensor  # uint8 (S, canvas, canvas), 0 background, digit + 1 on its ink
    sources: list[torch.Tensor]  # int64 (k,): indices into load_digits()
    dropped: int  # digits that found no free place


def _pair(name: str, value: object, low: int, high: int | None = None) -> tuple[int, int]:
    ok = (
        isinstance(value, tuple | list) and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        and low <= value[0] <= value[1] and (high is None or value[1] <= high)
    )
    if not ok:
        bound = f"{low} <= min <= max" + (f" <= {high}" if high is not None else "")
        raise ValueError(f"{name} must be a (min, max) pair of integers with {bound}, got {value!r}")
    return int(value[0]), int(value[1])


def _count(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def generate_scenes(
    images: torch.Tensor, labels: torch.Tensor, pool: torch.Tensor, count: int, canvas: int,
    digits_per_image: tuple[int, int], digit_size: tuple[int, int], generator: torch.Generator,
) -> Scenes:
    """``count`` scenes from the digits ``images[pool]`` (uint8 0..16, (N, 8, 8)), drawn with ``generator``."""
    lo_k, hi_k = digits_per_image
    lo_s, hi_s = digit_size
    # All random numbers in one draw: a fixed budget per scene (count, then per digit a source
    # and PLACEMENT_TRIES (size, x, y) triples), so a scene's draws do not depend on earlier scenes' luck.
    per_digit = 1 + 3 * PLACEMENT_TRIES
    draws = torch.rand(count, 1 + hi_k * per_digit, generator=generator, dtype=torch.float64).tolist()
    placed: list[list[tuple[int, int, int, int]]] = []  # per scene: (x, y, size, source)
    dropped = 0
    for u in draws:
        k = lo_k + int(u[0] * (hi_k - lo_k + 1))
        squares: list[tuple[int, int, int, int]] = []
        for d in range(k):
            base = 1 + d * per_digit
            source = int(pool[int(u[base] * len(pool))])
            for t in range(PLACEMENT_TRIES):
                us, ux, uy = u[base + 1 + 3 * t: base + 4 + 3 * t]
                s = lo_s + int(us * (hi_s - lo_s + 1))
                x, y = int(ux * (canvas - s + 1)), int(uy * (canvas - s + 1))
                if all(x + s <= qx or qx + qs <= x or y + s <= qy or qy + qs <= y for qx, qy, qs, _ in squares):
                    squares.append((x, y, s, source))
                    break
            else:
                dropped += 1
        placed.append(squares)

    # Upscale every pasted digit once, grouped by size.
    by_size: dict[int, list[tuple[int, int]]] = {}
    for i, squares in enumerate(placed):
        for j, (_, _, s, _) in enumerate(squares):
            by_size.setdefault(s, []).append((i, j))
    patches: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, list[int] | None]] = {}
    for s, keys in by_size.items():
        src = torch.tensor([placed[i][j][3] for i, j in keys])
        up = F.interpolate(images[src].float().div(16).unsqueeze(1), size=(s, s), mode="bilinear",
                           align_corners=False)
        up = up.squeeze(1).mul(255).round().clamp(0, 255).to(torch.uint8)
        ink = up >= INK_THRESHOLD
        rows, cols = ink.any(2), ink.any(1)  # (n, s): which rows / columns hold ink
        # tight box in pixel edges: first inked column, last inked column + 1 (and rows)
        first = lambda m: m.to(torch.uint8).argmax(1)  # noqa: E731
        spans = torch.stack([first(cols), first(rows), s - first(cols.flip(1)), s - first(rows.flip(1))], 1)
        for key, patch, mask, span, has in zip(keys, up, ink, spans.tolist(), rows.any(1).tolist(), strict=True):
            patches[key] = (patch, mask, span if has else None)

    canvases = torch.zeros(count, canvas, canvas, dtype=torch.uint8)
    masks = torch.zeros(count, canvas, canvas, dtype=torch.uint8)
    all_boxes, all_labels, all_sources = [], [], []
    for i, squares in enumerate(placed):
        boxes, classes, sources = [], [], []
        for j, (x, y, s, source) in enumerate(squares):
            patch, ink, span = patches[(i, j)]
            if span is None:  # no pixel reaches half coverage: not an object anyone could box
                dropped += 1
                continue
            label = int(labels[source]) + 1
            canvases[i, y:y + s, x:x + s] = patch
            masks[i, y:y + s, x:x + s][ink] = label
            boxes.append([x + span[0], y + span[1], x + span[2], y + span[3]])
            classes.append(label)
            sources.append(source)
        all_boxes.append(torch.tensor(boxes, dtype=torch.float32).view(-1, 4))
        all_labels.append(torch.tensor(classes, dtype=torch.int64))
        all_sources.append(torch.tensor(sources, dtype=torch.int64))
    return Scenes(canvases, all_boxes, all_labels, masks, all_sources, dropped)


class _SceneLoader:
    """In-memory scenes -> normalised float batches (N, 3, R, R) and their targets at resolution R."""

    def __init__(self, scenes: Scenes, task: str, pre: Preprocessing) -> None:
        self.scenes, self.task, self.pre = scenes, task, pre
        self.canvas = scenes.images.shape[-1]
        self.mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(pre.std).view(1, 3, 1, 1)

    def load(self, idx: torch.Tensor) -> Batch:
        r, canvas = self.pre.resolution, self.canvas
        x = self.scenes.images[idx].float().div_(255).unsqueeze(1)
        if r != canvas:
            x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False, antialias=r < canvas)
        x = (x.expand(-1, 3, -1, -1) - self.mean) / self.std
        if self.task == "detection":
            # (box * r) / canvas: exact for the integer boxes, so a box at the border stays at r.
            targets = [{"boxes": self.scenes.boxes[i] * r / canvas, "labels": self.scenes.labels[i].clone()}
                       for i in idx.tolist()]
            return Batch(x, targets)
        masks = self.scenes.masks[idx]
        if r != canvas:  # nearest-exact: a class index is not interpolated
            masks = F.interpolate(masks.unsqueeze(1).float(), size=(r, r), mode="nearest-exact").squeeze(1)
        return Batch(x, masks.long())


def digit_scenes(
    task: str,
    *,
    canvas: int = SCENE_CANVAS,
    digits_per_image: tuple[int, int] = (1, 4),
    digit_size: tuple[int, int] = (16, 48),
    train_images: int = 2000,
    test_images: int = 500,
    seed: int = 0,
    resolution: int | None = None,
) -> tuple[DataSplit, DataSplit]:
    """The built-in digit scenes for ``task`` (``"detection"`` or ``"segmentation"``) as (train, test) splits.

    ``canvas`` is the scene size in pixels, ``digits_per_image`` and ``digit_size`` (pixels,
    square) the inclusive ranges drawn from; ``seed`` fixes the scenes (the same call gives the
    same scenes; train and test use separate streams). ``resolution`` (default: the canvas)
    resizes the images (bilinear), boxes (scaled) and masks (nearest) for the network.

    Batches: images float (N, 3, R, R) normalised with the split's preprocessing; labels, for
    detection, a list of N dicts ``{"boxes": float32 (k, 4) x1, y1, x2, y2, "labels": int64
    (k,)}``, and for segmentation an int64 map (N, R, R) of classes 0 (background) .. 10.
    The test split is a test split only while nothing is chosen by it: a training run that keeps
    its best epoch by this split makes it a validation split.
    """
    if task not in SCENE_TASKS:
        raise ValueError(f"task must be one of {', '.join(SCENE_TASKS)}, got {task!r}")
    canvas = check_resolution(canvas)
    if canvas < 16:
        raise ValueError(f"canvas must be at least 16 pixels (a 2x upscaled digit), got {canvas}")
    resolution = canvas if resolution is None else check_resolution(resolution)
    digits_per_image = _pair("digits_per_image", digits_per_image, 1)
    digit_size = _pair("digit_size", digit_size, 8, canvas)
    train_images, test_images = _count("train_images", train_images, 1), _count("test_images", test_images, 1)
    _count("seed", seed, 0)

    images, labels = load_digits()
    train_idx, val_idx = stratified_split(labels)
    pre = Preprocessing("digits", resolution, DIGITS_MEAN, DIGITS_STD)
    splits = []
    for name, pool, count, stream in (("train", train_idx, train_images, 0), ("test", val_idx, test_images, 1)):
        generator = torch.Generator().manual_seed(2 * seed + stream)
        scenes = generate_scenes(images, labels, pool, count, canvas, digits_per_image, digit_size, generator)
        # The dataset's own targets pass the checks every consumer applies.
        check_detection_targets([{"boxes": b, "labels": c} for b, c in zip(scenes.boxes, scenes.labels, strict=True)],
                                canvas, len(SCENE_CLASSES))
        if task == "segmentation":
            check_segmentation_targets(scenes.masks, scenes.masks.shape, len(SCENE_CLASSES))
        else:
            scenes.masks = torch.empty(0, dtype=torch.uint8)  # not needed: free the memory
        splits.append(DataSplit(name, count, list(SCENE_CLASSES), pre, _SceneLoader(scenes, task, pre),
                                augmentation=AUGMENTATION if name == "train" else "none", task=task))
    return splits[0], splits[1]
