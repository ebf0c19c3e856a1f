"""Steps 6-7 of tensorgate.digits: the digit's pixels -> MNIST's 28x28 field.

Crop to the ink, thicken a stroke that would be thinner than MNIST's pen at 20 px, fit into
20x20 keeping aspect with anti-aliasing, rescale so the ink's peak is 1; pad to 28x28 with the
centre of mass at (14, 14) (MNIST's own mean), as MNIST did.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

SIDE, BOX, CENTRE = 28, 20, 14.0  # MNIST: 28x28 field, 20x20 box, centre of mass at (14, 14)
MIN_STROKE = 2.0  # px at the 20 px scale: about MNIST's thinnest pen; thinner strokes are thickened


def fit_box(ink: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Crop to the ink and fit into BOX x BOX keeping aspect: (h, w) float32, peak 1."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    # Keep the ink's anti-aliased edge (one pixel round the mask), drop everything else. The
    # mask is empty outside the crop, so the crop's own mask, dilated, is that edge.
    m = mask[top:bottom, left:right]
    strength = float(np.percentile(ink[mask], 90))
    crop = np.clip(np.where(_dilate3(m), ink[top:bottom, left:right], 0.0) / strength, 0.0, 1.0)

    # Stroke width ~ 2 * area / perimeter (a ribbon of width s and length L: area L*s,
    # perimeter ~2L), in px of the final 20 px box.
    perimeter = (np.count_nonzero(m[1:] != m[:-1]) + np.count_nonzero(m[:, 1:] != m[:, :-1])
                 + m[0].sum() + m[-1].sum() + m[:, 0].sum() + m[:, -1].sum())
    stroke = 2.0 * m.sum() / max(1, perimeter) * BOX / max(m.shape)

    # Through an intermediate 4x box (80 px), where a thin stroke is thickened cheaply.
    image = Image.fromarray(crop.astype(np.float32))
    mid = fitted(image.size, 4 * BOX)
    image = image.resize(mid, Image.Resampling.LANCZOS if max(crop.shape) > 4 * BOX
                         else Image.Resampling.BICUBIC)
    grow = int(round((MIN_STROKE - stroke) * 4 / 2)) if stroke < MIN_STROKE else 0
    if grow > 0:  # radius in px of the 80 px box
        padded = np.pad(np.asarray(image), grow)
        image = Image.fromarray(padded).filter(ImageFilter.MaxFilter(2 * grow + 1))
    box = np.asarray(image.resize(fitted(image.size, BOX), Image.Resampling.LANCZOS), dtype=np.float32)
    box = np.clip(box, 0.0, None)
    return np.clip(box / max(float(box.max()), 1e-6), 0.0, 1.0)


def _dilate3(mask: np.ndarray) -> np.ndarray:
    """A bool mask grown by one pixel in all 8 directions (a 3x3 max filter)."""
    h, w = mask.shape
    padded = np.pad(mask, 1)
    out = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            out |= padded[dy:dy + h, dx:dx + w]
    return out


def fitted(size: tuple[int, int], side: int) -> tuple[int, int]:
    """(w, h) scaled so the longer side is `side`, keeping aspect."""
    w, h = size
    scale = side / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def centre(box: np.ndarray) -> np.ndarray:
    """Place box (h, w) in SIDE x SIDE with its centre of mass at (CENTRE, CENTRE)."""
    h, w = box.shape
    total = float(box.sum())
    ys, xs = np.mgrid[0:h, 0:w]
    cy, cx = float((box * ys).sum()) / total, float((box * xs).sum()) / total
    top = int(np.clip(round(CENTRE - cy), 0, SIDE - h))
    left = int(np.clip(round(CENTRE - cx), 0, SIDE - w))
    out = np.zeros((SIDE, SIDE), dtype=np.float32)
    out[top:top + h, left:left + w] = box
    return out
