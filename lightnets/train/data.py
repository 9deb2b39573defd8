"""Datasets for training and evaluation: the built-in digits, and ImageFolder trees.

``digits`` is scikit-learn's copy of the UCI handwritten digits (1,797 real 8x8 grey images,
values 0-16, ten classes), shipped inside lightnets as ``lightnets/data/digits.safetensors``
so that ``lightnets train mobilenet_v2`` runs with no download. Images are upscaled to the
chosen resolution (the paper's resolution multiplier) and replicated to 3 channels; the
train/val split is fixed, stratified and seeded.

ImageFolder trees (``PATH/train/<class>/*.jpg`` and ``PATH/val/<class>/*``) use the usual
ImageNet transforms: random resized crop and horizontal flip for training, resize and centre
crop (ratio 0.875) for evaluation, then mean/std normalisation. They need Pillow
(``pip install "lightnets[images]"``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources

import torch
import torch.nn.functional as F
import torch.utils.data

from ..formats.preprocessing import (
    DIGITS_MEAN,
    DIGITS_STD,
    Preprocessing,
    image_errors,
    imagenet_preprocessing,
    pillow,
    resize_center_crop,
    rgb_to_tensor,
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def check_resolution(resolution: object) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be a positive integer (the input size in pixels), got {resolution!r}")
    return resolution


@dataclass
class Batch:
    images: torch.Tensor
    # classification: int64 (N,); detection: N dicts {"boxes": float32 (k, 4), "labels": int64 (k,)};
    # segmentation: int64 (N, H, W) (see :mod:`lightnets.train.scenes`)
    labels: torch.Tensor | list[dict[str, torch.Tensor]]
    skipped: int = 0  # unreadable images dropped from this batch


@dataclass
class DataSplit:
    """One split: a way to iterate batches, its size, and its classes."""

    name: str
    size: int
    classes: list[str]
    preprocessing: Preprocessing
    loader: object = field(repr=False)  # _TensorLoader, _FolderLoader or scenes' _SceneLoader
    augmentation: str = "none"  # what the training batches go through, in words (logged, stored)
    task: str = "classification"  # or "detection", "segmentation": what the batches' labels are

    def batches(self, batch_size: int, *, shuffle: bool, epoch: int = 0, seed: int = 0, rank: int = 0, world: int = 1,
                drop_last: bool = False, skip: int = 0, workers: int = 0) -> Iterator[Batch]:
        """Batches for one epoch; the order depends only on (seed, epoch), so a run can resume mid-epoch.

        With ``world`` > 1 each rank takes every world-th index of the same permutation
        (what ``DistributedSampler`` does). ``skip`` drops the first batches (for resuming).
        ``workers`` > 0 reads image folders in that many processes (in-memory data ignores it).
        """
        generator = torch.Generator().manual_seed(seed * 1000 + epoch)
        order = torch.randperm(self.size, generator=generator) if shuffle else torch.arange(self.size)
        if world > 1:
            per_rank = self.size // world if drop_last else math.ceil(self.size / world)
            order = order[rank::world][:per_rank]
        n = len(order)
        count = n // batch_size if drop_last else math.ceil(n / batch_size)
        chunks = [order[b * batch_size:(b + 1) * batch_size] for b in range(skip, count)]
        if workers > 0 and isinstance(self.loader, _FolderLoader):
            from torch.utils.data import DataLoader

            chunked = _Chunks(self.loader, chunks)
            yield from DataLoader(chunked, batch_size=None, num_workers=workers, collate_fn=lambda b: b)
            return
        for chunk in chunks:
            yield self.loader.load(chunk)

    def num_batches(self, batch_size: int, world: int = 1, drop_last: bool = False) -> int:
        n = self.size // world if drop_last or world == 1 else math.ceil(self.size / world)
        return n // batch_size if drop_last else math.ceil(n / batch_size)


class _TensorLoader:
    """In-memory uint8 images (N, H, W) -> normalised float batches at the target resolution."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, pre: Preprocessing, augment: bool) -> None:
        self.images, self.labels, self.pre, self.augment = images, labels, pre, augment
        self.mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(pre.std).view(1, 3, 1, 1)

    def load(self, idx: torch.Tensor) -> Batch:
        x = self.images[idx].float().div_(16.0).unsqueeze(1)
        x = F.interpolate(x, size=(self.pre.resolution, self.pre.resolution), mode="bilinear", align_corners=False)
        if self.augment:
            x = random_affine(x)
        x = x.expand(-1, 3, -1, -1)
        return Batch((x - self.mean) / self.std, self.labels[idx].long())


def random_affine(
    x: torch.Tensor, degrees: float = 10.0, scale: tuple[float, float] = (0.9, 1.1), translate: float = 0.1,
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """Small random rotation, scale and shift per image (global torch RNG, so resumable).

    ``padding_mode`` fills what moves in from outside: ``zeros`` (the digits' blank paper, before
    normalisation) or ``border`` (the edge pixels, for normalised images of any content).
    """
    n = x.shape[0]
    angle = (torch.rand(n) * 2 - 1) * math.radians(degrees)
    s = torch.empty(n).uniform_(*scale)
    tx, ty = ((torch.rand(2, n) * 2 - 1) * translate * 2)
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode=padding_mode, align_corners=False)


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The 1,797 digits as uint8 images (N, 8, 8) in 0..16 and labels (N,)."""
    from safetensors.torch import load

    data = load(resources.files("lightnets").joinpath("data/digits.safetensors").read_bytes())
    return data["images"], data["labels"]


def stratified_split(
    labels: torch.Tensor, val_fraction: float = 0.2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of a fixed, stratified, seeded train/val split."""
    g = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = round(len(idx) * val_fraction)
        val.append(idx[:k])
        train.append(idx[k:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


def digits(
    resolution: int = 32, augment: bool = True, train_fraction: float = 1.0, val_from_train: bool = False
) -> tuple[DataSplit, DataSplit]:
    """The built-in digits dataset as (train, val) splits at ``resolution`` pixels.

    The held-out 20% is a validation split, not a test split: training reports it every epoch
    and keeps the best epoch by it (``best.safetensors``), so it takes part in choosing the
    network. ``train_fraction`` < 1 keeps that share of each class's training images (a fixed,
    seeded subset; the val split is unchanged): a harder task, on which networks that all reach
    ~100% on the full split differ.

    ``val_from_train=True`` (with ``train_fraction`` < 1) returns, in place of the val split, the
    training images the fraction leaves out (split ``train-rest``): an architecture search's
    proxy then ranks its candidates on images it never trains on, and the val split stays
    unseen for the final comparison of what it found. MnasNet likewise searched on ImageNet's
    training set with 50K of its images reserved as the search's validation set (section 5).
    At train fraction 0.3 that is 1,006 images instead of 359: one image is 0.1 point, not 0.28.
    """
    check_resolution(resolution)
    if isinstance(train_fraction, bool) or not isinstance(train_fraction, (int, float)) or not 0 < train_fraction <= 1:
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction!r}")
    if val_from_train and train_fraction == 1:
        raise ValueError("val_from_train validates on the training images train_fraction leaves out: give a "
                         "train_fraction < 1")
    images, labels = load_digits()
    train_idx, val_idx = stratified_split(labels)
    val_name = "val"
    if train_fraction < 1:
        kept, rest = stratified_split(labels[train_idx], val_fraction=1 - train_fraction, seed=1)
        if val_from_train:
            val_idx, val_name = train_idx[rest], "train-rest"
        train_idx = train_idx[kept]
    pre = Preprocessing("digits", resolution, DIGITS_MEAN, DIGITS_STD)
    classes = [str(i) for i in range(10)]
    return (
        DataSplit("train", len(train_idx), classes, pre,
                  _TensorLoader(images[train_idx], labels[train_idx], pre, augment),
                  augmentation="digits: random rotation up to 10 degrees, scale 0.9-1.1, shift up to 10%"
                  if augment else "none"),
        DataSplit(val_name, len(val_idx), classes, pre, _TensorLoader(images[val_idx], labels[val_idx], pre, False)),
    )


# ---- ImageFolder ----------------------------------------------------------------------


def scan_folder(root: str, classes: list[str] | None = None) -> tuple[list[tuple[str, int]], list[str]]:
    """(path, class index) pairs of an ImageFolder split; raises on a missing or empty folder."""
    if not os.path.isdir(root):
        raise ValueError(
            f"image folder {root!r} does not exist (expected PATH/train/<class>/... and PATH/val/<class>/...)"
        )
    found = sorted(d.name for d in os.scandir(root) if d.is_dir())
    if not found:
        raise ValueError(f"image folder {root!r} has no class sub-folders")
    classes = classes or found
    if found != classes:
        raise ValueError(f"{root!r} has classes {found}, expected the training classes {classes}")
    samples = []
    for index, name in enumerate(classes):
        files = sorted(
            os.path.join(dirpath, f)
            for dirpath, _, names in os.walk(os.path.join(root, name))
            for f in names
            if f.lower().endswith(IMAGE_EXTENSIONS)
        )
        if not files:
            folder = os.path.join(root, name)
            raise ValueError(f"class folder {folder!r} contains no images ({', '.join(IMAGE_EXTENSIONS)})")
        samples.extend((f, index) for f in files)
    return samples, classes


#: ImageFolder augmentations: ``auto`` picks ``imagenet`` or ``small`` from the images' size.
AUGMENTATIONS = ("auto", "imagenet", "small", "none")
#: Images whose shorter side is below this are "small": ImageNet's random-resized crop keeps
#: 8-100% of the area, which destroys a 28-pixel digit; they get a mild affine jitter instead.
SMALL_IMAGE_PX = 64
GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "F")


class _FolderLoader:
    """Reads and transforms images with Pillow; unreadable images are skipped or raise.

    ``mode``: ``imagenet`` (random-resized crop, ImageNet's training transform), ``small``
    (the whole image resized as for evaluation, then a random rotation of up to 10 degrees,
    scale 0.9-1.1 and shift up to 10%, as the built-in digits get) or ``none`` (the evaluation
    transform). ``flip`` adds a random horizontal flip.
    """

    def __init__(self, samples: list[tuple[str, int]], pre: Preprocessing, mode: str, flip: bool,
                 bad_images: str) -> None:
        self.samples, self.pre, self.mode, self.flip, self.bad_images = samples, pre, mode, flip, bad_images

    def transform(self, img) -> torch.Tensor:
        Image = pillow()
        img = img.convert("RGB")  # grayscale replicated to 3 channels (logged by image_folder)
        r = self.pre.resolution
        if self.mode == "imagenet":
            img = _random_resized_crop(img, r, Image)
        else:
            img = resize_center_crop(img, r, self.pre.resize)
        if self.flip and random.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        x = rgb_to_tensor(img, self.pre)
        if self.mode == "small":
            x = random_affine(x.unsqueeze(0), padding_mode="border")[0]
        return x

    def load(self, idx: torch.Tensor) -> Batch:
        Image = pillow()
        unreadable = image_errors()
        images, labels, skipped = [], [], 0
        for i in idx.tolist():
            path, label = self.samples[i]
            try:
                with Image.open(path) as img:
                    images.append(self.transform(img))
                labels.append(label)
            except unreadable as err:
                if self.bad_images == "error":
                    hint = "use --bad-images skip to skip and count"
                    raise ValueError(f"cannot read image {path!r}: {err} ({hint})") from None
                skipped += 1
        if not images:
            r = self.pre.resolution
            return Batch(torch.empty(0, 3, r, r), torch.empty(0, dtype=torch.long), skipped)
        return Batch(torch.stack(images), torch.tensor(labels), skipped)


class _Chunks(torch.utils.data.Dataset):
    """Whole batches as dataset items, so DataLoader workers read them in parallel."""

    def __init__(self, loader: _FolderLoader, chunks: list[torch.Tensor]) -> None:
        self.loader, self.chunks = loader, chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> Batch:
        return self.loader.load(self.chunks[i])


def _random_resized_crop(img, size: int, Image, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    w, h = img.size
    area = w * h
    for _ in range(10):
        target = area * random.uniform(*scale)
        aspect = math.exp(random.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = random.randint(0, w - cw), random.randint(0, h - ch)
            return img.resize((size, size), Image.BILINEAR, box=(left, top, left + cw, top + ch))
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return img.resize((size, size), Image.BILINEAR, box=(left, top, left + side, top + side))


def image_stats(samples: list[tuple[str, int]], sample: int = 32) -> tuple[int, bool]:
    """Median shorter side of up to ``sample`` images spread over ``samples``, and whether they
    are grayscale (Pillow reads only the headers)."""
    Image = pillow()
    unreadable = image_errors()
    step = max(1, len(samples) // sample)
    sides, gray = [], 0
    for path, _ in samples[::step][:sample]:
        try:
            with Image.open(path) as img:
                sides.append(min(img.size))
                gray += img.mode in GRAYSCALE_MODES
        except unreadable:
            continue  # counted when the batches are read
    if not sides:
        raise ValueError(f"none of the {min(len(samples), sample)} sampled images could be read")
    return sorted(sides)[len(sides) // 2], gray > len(sides) // 2


def image_folder(
    path: str, resolution: int = 224, bad_images: str = "skip", preprocessing: Preprocessing | None = None,
    augment: bool | str = "auto", flip: bool | None = None,
) -> tuple[DataSplit, DataSplit]:
    """``PATH/train`` and ``PATH/val`` ImageFolder trees as (train, val) splits.

    ``augment`` is one of :data:`AUGMENTATIONS`: ``auto`` (the default, or True) picks
    ``small`` when the images' median shorter side is below :data:`SMALL_IMAGE_PX` and
    ``imagenet`` otherwise; ``none`` (or False) prepares the train split like the val split,
    as int8 calibration needs. ``flip`` (random horizontal flips) defaults to on for
    ``imagenet`` and off otherwise (a flipped digit or letter is another symbol). Small images
    are resized whole for evaluation (no centre-crop margin). Grayscale images are replicated
    to 3 channels. The choice is in ``train.augmentation``.

    ``preprocessing`` (an ``imagenet``-kind one, such as a converted checkpoint's) sets the mean,
    std and resize; the default is ImageNet's mean and std, resize to resolution / 0.875.
    """
    mode = "auto" if augment is True else "none" if augment is False else augment
    if mode not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}, got {augment!r}")
    if flip is not None and not isinstance(flip, bool):
        raise ValueError(f"flip must be True, False or None (the augmentation's default), got {flip!r}")
    if preprocessing is not None and preprocessing.kind != "imagenet":
        raise ValueError(f"an ImageFolder tree takes 'imagenet' preprocessing, got {preprocessing.kind!r}")
    check_resolution(resolution)
    if bad_images not in ("skip", "error"):
        raise ValueError(f"bad_images must be 'skip' or 'error', got {bad_images!r}")
    pillow()
    train_samples, classes = scan_folder(os.path.join(path, "train"))
    val_samples, _ = scan_folder(os.path.join(path, "val"), classes)
    side, gray = image_stats(train_samples)
    small = side < SMALL_IMAGE_PX
    pre = imagenet_preprocessing(resolution)
    if small:
        pre = dataclasses.replace(pre, resize=resolution)
    if preprocessing is not None:
        resize = round(resolution * preprocessing.resize / preprocessing.resolution) if preprocessing.resize else None
        pre = Preprocessing("imagenet", resolution, tuple(preprocessing.mean), tuple(preprocessing.std), resize=resize)
    if mode == "auto":
        mode = "small" if small else "imagenet"
    flip = mode == "imagenet" if flip is None else flip
    words = {
        "imagenet": "random-resized crop (8-100% of the area)",
        "small": "whole image, random rotation up to 10 degrees, scale 0.9-1.1, shift up to 10%",
        "none": "none (evaluation transform)",
    }[mode]
    described = (
        f"{mode}: {words}, {'random horizontal flip' if flip else 'no flip'}; images {side} px (median shorter "
        f"side){', grayscale, replicated to 3 channels' if gray else ''}"
    )
    return (
        DataSplit("train", len(train_samples), classes, pre,
                  _FolderLoader(train_samples, pre, mode, flip, bad_images), augmentation=described),
        DataSplit("val", len(val_samples), classes, pre, _FolderLoader(val_samples, pre, "none", False, bad_images)),
    )


def load_data(
    data: str, resolution: int, bad_images: str = "skip", augment: bool | str = True,
    preprocessing: Preprocessing | None = None, flip: bool | None = None,
) -> tuple[DataSplit, DataSplit]:
    """``"digits"``, ``"digit-detection"``, ``"digit-segmentation"`` or a path to an ImageFolder tree
    (``augment``, ``flip``, ``preprocessing``: see :func:`image_folder`; the digits take their own
    augmentation, on or off; the digit scenes of :mod:`lightnets.train.scenes` take none, as
    ``augment=True`` asks for the data's own augmentation, they accept it)."""
    from .scenes import SCENE_DATA, digit_scenes

    if data in SCENE_DATA:
        if augment in ("imagenet", "small") or flip:
            raise ValueError(f"the built-in {data} scenes take no augmentation (random placement varies them; a flip "
                             "mirrors digits): --augment and flips apply to ImageFolder trees")
        if preprocessing is not None and preprocessing.kind != "digits":
            raise ValueError(f"the built-in {data} scenes take 'digits' preprocessing, got {preprocessing.kind!r}")
        return digit_scenes(SCENE_DATA[data], resolution=resolution)
    if data == "digits":
        if augment == "imagenet" or flip:
            raise ValueError("the built-in digits take their own augmentation (random affine, no flip); "
                             "--augment imagenet and flips apply to ImageFolder trees")
        return digits(resolution, augment=augment not in (False, "none"))
    return image_folder(data, resolution, bad_images, preprocessing, augment=augment, flip=flip)


def checkpoint_preprocessing(data: str, stored: Preprocessing) -> Preprocessing | None:
    """A checkpoint's ``stored`` preprocessing where it applies to ``data``, for :func:`load_data`.

    It applies to an ImageFolder tree when it is an ``imagenet``-kind record: a converted
    checkpoint's mean and std (Keras, Megvii) must reach the folder's images too. It does not
    apply to the digits, which prepare themselves, nor does a digits record describe photographs
    (None: the folder's ImageNet default).
    """
    return stored if data != "digits" and stored.kind == "imagenet" else None


def calibration_batches(
    data: str,
    resolution: int,
    *,
    preprocessing: Preprocessing | None = None,
    batches: int = 10,
    batch_size: int = 32,
    seed: int = 0,
    report: Callable[[str], None] | None = None,
) -> list[torch.Tensor]:
    """Int8 calibration inputs: ``batches`` batches of ``data``'s train split, prepared as for evaluation.

    No augmentation: random crops and flips would widen the activation ranges the quantizer
    measures beyond what inference sees. Shuffled with a fixed ``seed`` so that the batches mix
    the classes and the quantized file is reproducible. ``preprocessing`` is the checkpoint's,
    used where it applies (see :func:`checkpoint_preprocessing`). Unreadable images are skipped;
    ``report`` (e.g. ``print``) is told how many.
    """
    for name, value in (("batches", batches), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    pre = checkpoint_preprocessing(data, preprocessing) if preprocessing is not None else None
    train, _ = load_data(data, resolution, augment=False, preprocessing=pre)
    chosen, skipped = [], 0
    for batch in train.batches(batch_size, shuffle=True, seed=seed):
        skipped += batch.skipped
        if len(batch.images):  # a batch whose every image was unreadable is empty; the quantizer needs images
            chosen.append(batch.images)
        if len(chosen) == batches:
            break
    if skipped and report is not None:
        report(f"calibration: {skipped} unreadable images skipped")
    return chosen


def check_classes(split: DataSplit, class_names: list[str]) -> None:
    """Raise a ValueError when ``split``'s classes are not a checkpoint's ``class_names``, in order.

    A model's output i means class_names[i]; evaluating it on data whose folders sort into
    another order would report a wrong accuracy without any error.
    """
    if split.classes == list(class_names):
        return
    pairs = [(i, a, b) for i, (a, b) in enumerate(zip(split.classes, class_names, strict=False)) if a != b][:3]
    raise ValueError(
        f"the data's {len(split.classes)} classes differ from the checkpoint's {len(class_names)}"
        + (f"; first differences (index, data, checkpoint): {pairs}" if pairs else "")
        + " (a converted checkpoint takes its class names from `lightnets convert --classes FILE`)"
    )
