"""Drawing dense predictions onto images: boxes with class and score, class masks as a tinted overlay."""

from __future__ import annotations

import colorsys

import torch

from ..formats.preprocessing import pillow

#: Drawings are made at least this many pixels wide, so a 128-px scene's labels stay legible.
MIN_DRAW_SIZE = 384


def palette(num_classes: int) -> list[tuple[int, int, int]]:
    """One distinct colour per class, background (0) black: evenly spaced hues."""
    colours = [(0, 0, 0)]
    for i in range(1, num_classes):
        r, g, b = colorsys.hsv_to_rgb((i - 1) / max(num_classes - 1, 1), 0.85, 1.0)
        colours.append((int(255 * r), int(255 * g), int(255 * b)))
    return colours


def _canvas(image):
    """The image in RGB, enlarged to at least MIN_DRAW_SIZE wide, and the factor it was enlarged by."""
    Image = pillow()
    rgb = image.convert("RGB")
    factor = max(1, -(-MIN_DRAW_SIZE // rgb.width))
    if factor > 1:
        rgb = rgb.resize((rgb.width * factor, rgb.height * factor), Image.NEAREST)
    return rgb, factor


def draw_boxes(image, boxes: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor, class_names: list[str]):
    """A copy of the Pillow ``image`` with each box (xyxy in the image's pixels) outlined and labelled."""
    from PIL import ImageDraw

    rgb, factor = _canvas(image)
    draw = ImageDraw.Draw(rgb)
    colours = palette(len(class_names))
    for box, label, score in zip(boxes.tolist(), labels.tolist(), scores.tolist(), strict=True):
        x1, y1, x2, y2 = (v * factor for v in box)
        colour = colours[label % len(colours)]
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=2)
        text = f"{class_names[label]} {score:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), text)
        y = max(0, y1 - (bottom - top) - 2)
        draw.rectangle((x1, y, x1 + right - left + 2, y + bottom - top + 2), fill=colour)
        draw.text((x1 + 1, y), text, fill=(0, 0, 0))
    return rgb


def draw_mask(image, mask: torch.Tensor, num_classes: int, alpha: float = 0.55):
    """A copy of the Pillow ``image`` with the class mask ``(H, W)`` (any size: resized, nearest) tinted over it."""
    Image = pillow()
    rgb, _ = _canvas(image)
    colours = torch.tensor(palette(num_classes), dtype=torch.uint8)
    coloured = colours[mask.long().clamp(0, num_classes - 1)]  # (H, W, 3)
    overlay = Image.frombytes("RGB", (mask.shape[1], mask.shape[0]), coloured.numpy().tobytes())
    overlay = overlay.resize(rgb.size, Image.NEAREST)
    keep = Image.frombytes("L", (mask.shape[1], mask.shape[0]),
                           ((mask > 0).to(torch.uint8) * int(255 * alpha)).numpy().tobytes())
    return Image.composite(overlay, rgb, keep.resize(rgb.size, Image.NEAREST))
