"""Steps 2-3 of tensorgate.digits: a grayscale picture -> ink strength on flat paper.

Polarity from the frame's border when it is clearly paper-coloured, else from the side on which
pixels stand out most from a stroke-wide median (the local paper); dark-on-light is inverted.
The paper's unevenness (lighting gradient, vignetting, shadows) is removed by subtracting a
grey-level opening wider than any pen stroke (what is wide is paper, what is thin is ink).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from tensorgate.digits.fitting import SIDE, fitted


def ink_map(gray: np.ndarray) -> tuple[np.ndarray, float]:
    """(H, W) gray -> (H, W) ink strength >= 0 on flattened paper (3x3-smoothed against
    sensor and JPEG noise when the image is large), and the paper's pixel noise (robust sigma)."""
    # Polarity: a frame whose border (mostly paper) is clearly at one end of the range settles
    # it; otherwise the side on which ink stands out from the local paper level.
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    low, high = np.percentile(gray, [1, 99])
    place = (float(np.median(border)) - low) / max(float(high - low), 1e-6)
    if place < 0.1 or place > 0.9:
        light_paper = place > 0.9
    else:
        light_paper = _ink_is_dark(gray)
    signal = 1.0 - gray if light_paper else gray  # ink is now bright, paper dark
    residual = signal - _background(signal)
    if max(residual.shape) >= 4 * SIDE:  # only where 3x3 px is far finer than the 28 px result
        residual = _smooth3(residual)
    # Pixel noise from neighbour differences: blind to lighting and to the (few) stroke edges.
    noise = 1.4826 * float(np.median(np.abs(np.diff(residual, axis=1)))) / np.sqrt(2.0)
    return np.clip(residual, 0.0, None), noise


def _smooth3(x: np.ndarray) -> np.ndarray:
    """3x3 mean of (H, W), edges repeated."""
    p = np.pad(x, 1, mode="edge")
    h, w = x.shape
    total = np.zeros_like(x)
    for dy in range(3):
        for dx in range(3):
            total += p[dy:dy + h, dx:dx + w]
    return total / 9.0


def _ink_is_dark(gray: np.ndarray) -> bool:
    """Whether the ink is darker than the paper. A median filter wider than a pen stroke gives
    the paper under every pixel whatever the polarity (ink is the minority of any window);
    against it, ink stands out far on one side, pixel noise a little on both, and lighting
    and shadows, being wide, hardly at all. The longer tail is the ink's."""
    pixels, k = _coarse(gray)
    residual = pixels - _rank_filter(pixels, k, "median")  # separable: close to a k x k median
    low, high = np.percentile(residual, [0.5, 99.5])
    return bool(-low > high)


def _coarse(x: np.ndarray, side: int = 128) -> tuple[np.ndarray, int]:
    """x (H, W) shrunk to at most `side` px across (box filter), and the odd window, a fifth of
    the picture, that the paper estimates use: wider than any pen stroke, narrower than shadows."""
    h, w = x.shape
    small = Image.fromarray(x.astype(np.float32))
    if max(h, w) > side:
        small = small.resize(fitted((w, h), side), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32), max(3, round(max(small.size) / 5)) | 1


def _rank_filter(x: np.ndarray, k: int, rank: str) -> np.ndarray:
    """The "min", "max" or "median" over k-wide windows (k odd) along each axis in turn, edges
    repeated: exact for min and max over a k x k square, k times cheaper than Pillow's rank
    filters. The median is the middle of a partition, min and max are van Herk's running extremes
    (a few passes, whatever k); each is exactly what np.median, np.min or np.max of the window
    gives."""
    r = k // 2
    for axis in (0, 1):
        padded = np.pad(x, [(r, r) if a == axis else (0, 0) for a in range(2)], mode="edge")
        if rank == "median":
            windows = np.lib.stride_tricks.sliding_window_view(padded, k, axis=axis)
            x = np.partition(windows, r, axis=-1)[..., r]
        else:
            x = _running_extreme(padded, k, axis, np.minimum if rank == "min" else np.maximum)
    return x.astype(np.float32)


def _running_extreme(padded: np.ndarray, k: int, axis: int, op: np.ufunc) -> np.ndarray:
    """op (np.minimum or np.maximum) over every k-wide window along `axis` of `padded`: n - k + 1
    values from n. The axis is cut into blocks of k; a window ends in one block and starts in the
    one before, so it is op(suffix of that block, prefix of the next), from running op's."""
    a = np.moveaxis(padded, axis, -1)
    n = a.shape[-1]
    blocks = -(-n // k)
    fill = np.inf if op is np.minimum else -np.inf
    tiled = np.full((*a.shape[:-1], blocks * k), fill, dtype=a.dtype)
    tiled[..., :n] = a
    tiled = tiled.reshape(*a.shape[:-1], blocks, k)
    prefix = op.accumulate(tiled, axis=-1).reshape(*a.shape[:-1], blocks * k)
    suffix = op.accumulate(tiled[..., ::-1], axis=-1)[..., ::-1].reshape(*a.shape[:-1], blocks * k)
    out = op(suffix[..., :n - k + 1], prefix[..., k - 1:n])
    return np.moveaxis(out, -1, axis)


def _background(signal: np.ndarray) -> np.ndarray:
    """The paper under the ink of signal (H, W), ink bright: a grey-level opening (min then max
    filter) wider than any pen stroke removes the strokes and keeps what is wide, the lighting
    gradient, vignetting and shadows; computed on the coarse picture, smoothed, scaled back."""
    h, w = signal.shape
    pixels, k = _coarse(signal)
    opened = _rank_filter(_rank_filter(pixels, k, "min"), k, "max")
    smooth = Image.fromarray(_box_blur(opened, k // 2))
    return np.asarray(smooth.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)


def _box_blur(x: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1) square of (H, W), edges repeated; separable, by cumulative sums."""
    for axis in (0, 1):
        p = np.pad(x, [(radius + 1, radius) if a == axis else (0, 0) for a in range(2)], mode="edge")
        c = np.cumsum(p, axis=axis, dtype=np.float64)
        n = x.shape[axis]
        x = (np.take(c, range(2 * radius + 1, 2 * radius + 1 + n), axis=axis)
             - np.take(c, range(n), axis=axis)) / (2 * radius + 1)
    return x.astype(np.float32)
