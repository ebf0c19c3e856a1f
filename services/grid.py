"""Digit images tiled into one grayscale PNG (what Generate answers beside the raw pixels)."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

GAP = 2  # black pixels between images and around the grid


def tile(images: np.ndarray, columns: int) -> np.ndarray:
    """Images (N, H, W) in 0..1 -> one uint8 picture, `columns` per row, row-major order."""
    count, height, width = images.shape
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    canvas = np.zeros((GAP + rows * (height + GAP), GAP + columns * (width + GAP)), np.uint8)
    pixels = (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)
    for i, image in enumerate(pixels):
        y, x = GAP + (i // columns) * (height + GAP), GAP + (i % columns) * (width + GAP)
        canvas[y : y + height, x : x + width] = image
    return canvas


def png(images: np.ndarray, columns: int = 8) -> bytes:
    """Images (N, H, W) in 0..1 -> the bytes of a PNG file of their grid (CPU work: run it off the event loop)."""
    out = io.BytesIO()
    Image.fromarray(tile(images, columns)).save(out, format="PNG")
    return out.getvalue()
