"""Encoded digit images -> the MNIST classifiers' input, prepared the way MNIST itself was made.

    pixels = prepare_digit(open("seven.jpg", "rb").read())  # (1, 28, 28) float32, 0..1
    pixels = load_digit("seven.jpg")                         # the same, from a file

MNIST's digits are white on black, cropped to the ink, fitted into a 20x20 box keeping their
aspect ratio (anti-aliased), and placed in 28x28 so that their centre of mass is at the centre.
A photo of a digit on paper is none of that, and a model given it as it is reads it at chance
level. `prepare_digit` bridges the gap:

1. decode (PNG, JPEG, BMP, GIF, WebP; first frame; EXIF rotation applied), alpha flattened onto
   white, grayscale, shrunk to at most WORK_SIDE px (JPEGs decoded at reduced size);
2. polarity: from the frame's border when it is clearly paper-coloured, else from the side on
   which pixels stand out most from a stroke-wide median (the local paper); dark-on-light is
   inverted;
3. the paper's unevenness (lighting gradient, vignetting, shadows) is removed by subtracting
   a grey-level opening wider than any pen stroke (what is wide is paper, what is thin is ink);
4. ink is what lies above an Otsu threshold of the flattened image (a threshold from the image
   itself, not a constant); an image without a clear ink class is refused (`NoInk`);
5. lines across the whole picture (ruled or squared paper) and specks (connected blobs far
   smaller than the digit's largest stroke) are dropped;
6. crop to the ink, thicken a stroke that would be thinner than MNIST's pen at 20 px,
   fit into 20x20 keeping aspect with anti-aliasing, rescale so the ink's peak is 1;
7. pad to 28x28 with the centre of mass at (14, 14) (MNIST's own mean), as MNIST did.

It is a pure function of the bytes and the limits, shared by the model service (the
`image_bytes` input of the classifiers) and the SDK, so served and offline results agree.
Problems raise `DigitImageError` subclasses (all `ValueError`s) whose messages name them.
"""

from __future__ import annotations

import io
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

__all__ = [
    "DEFAULT_LIMITS", "DigitImageError", "FORMATS", "ImageTooLarge", "Limits", "NoInk", "NotAnImage",
    "TruncatedImage", "load_digit", "prepare_digit",
]

FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")
SIDE, BOX, CENTRE = 28, 20, 14.0  # MNIST: 28x28 field, 20x20 box, centre of mass at (14, 14)
WORK_SIDE = 512  # longest side the preparation works at; a digit needs far fewer pixels
MIN_STROKE = 2.0  # px at the 20 px scale: about MNIST's thinnest pen; thinner strokes are thickened
MIN_CONTRAST = 0.08  # the ink must stand this far (of full scale) above the paper
# Pillow's own decompression-bomb guard, set explicitly (its default is 89 Mpx, warn, 179 Mpx,
# fail). Our per-call limit (Limits.max_pixels, checked from the header) refuses first; this
# ceiling only keeps Pillow's check from warning below it. It is only ever lowered, never raised.
PILLOW_MAX_IMAGE_PIXELS = 64_000_000


class DigitImageError(ValueError):
    """An encoded image that cannot be prepared as a digit; the message says why."""


class NotAnImage(DigitImageError):
    """Not a PNG, JPEG, BMP, GIF or WebP file."""


class TruncatedImage(DigitImageError):
    """A recognised format whose data ends early or is corrupt."""


class ImageTooLarge(DigitImageError):
    """More bytes or pixels than the limits allow (decompression bombs included)."""


class NoInk(DigitImageError):
    """A blank or uniform image: nothing that stands out as a digit."""


@dataclass(frozen=True)
class Limits:
    """What one image may cost before it is decoded."""

    max_bytes: int = 10_000_000  # encoded size
    max_pixels: int = 40_000_000  # width x height from the header (a 48 Mpx phone photo is 8000x6000)

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_pixels <= 0:
            raise ValueError("image limits must be positive")
        if self.max_pixels > PILLOW_MAX_IMAGE_PIXELS:
            raise ValueError(f"max_pixels may be at most {PILLOW_MAX_IMAGE_PIXELS:,} (Pillow's ceiling here)")


DEFAULT_LIMITS = Limits()

if Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS > PILLOW_MAX_IMAGE_PIXELS:
    Image.MAX_IMAGE_PIXELS = PILLOW_MAX_IMAGE_PIXELS


def load_digit(path: str | Path, limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """An image file -> (1, 28, 28) float32 in 0..1, white digit on black (see prepare_digit)."""
    path = Path(path)
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise ImageTooLarge(f"{path.name}: image too large: {size:,} bytes, the limit is {limits.max_bytes:,}")
    return prepare_digit(path.read_bytes(), limits)


def prepare_digit(data: bytes, limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """Encoded image bytes -> (1, 28, 28) float32 in 0..1, white digit on black, MNIST-style."""
    gray = _decode(data, limits)  # (H, W) float32, 0 = black, 1 = white
    ink, noise = _ink_map(gray)  # (H, W) float32, 0 = paper, >0 = ink, whatever the polarity
    mask = _ink_mask(ink, noise)
    box = _fit_box(ink, mask)  # (h, w), max(h, w) == 20
    return _centre(box)[None]


def _decode(data: bytes, limits: Limits) -> np.ndarray:
    if not data:
        raise NotAnImage("not an image: no bytes")
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(f"image too large: {len(data):,} bytes, the limit is {limits.max_bytes:,}")
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
    # Above Pillow's ceiling it warns (an error where warnings are errors), above twice that it
    # fails; both mean too large. Below it, the header check against Limits.max_pixels refuses.
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageTooLarge(f"image too large: {err}") from None
    except UnidentifiedImageError:
        raise NotAnImage("not an image: expected PNG, JPEG, BMP, GIF or WebP data") from None
    except MemoryError:
        raise
    except Exception as err:  # a header that starts right, then breaks (Pillow's parsers raise many kinds)
        raise TruncatedImage(f"truncated or corrupt image: {err}") from None
    with img:
        width, height = img.size
        if width * height > limits.max_pixels:
            raise ImageTooLarge(f"image too large: {width}x{height} = {width * height:,} pixels, "
                                f"the limit is {limits.max_pixels:,}")
        if img.format == "JPEG" and img.mode in ("L", "RGB"):  # decode big photos at 1/2..1/8 scale
            img.draft("L", (WORK_SIDE, WORK_SIDE))
        try:
            img.load()
            gray = _flatten_alpha(ImageOps.exif_transpose(img))
        except MemoryError:
            raise
        except Exception as err:  # OSError "image file is truncated", SyntaxError, struct.error, ...
            raise TruncatedImage(f"truncated or corrupt {img.format} image: {err}") from None
    if max(gray.size) > WORK_SIDE:
        gray.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
    return np.asarray(gray, dtype=np.float32) / 255.0


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """Any mode -> 'L', transparent parts shown as white paper."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit gray: scale, do not clip
        values = np.asarray(img, dtype=np.float64)
        top = 65535.0 if values.max() > 255 else 255.0
        return Image.fromarray((values * (255.0 / top)).clip(0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(paper, rgba).convert("L")
    return img.convert("L")


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of values in 0..1: the cut that maximises the between-class variance."""
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    p = hist.astype(np.float64) / max(1, hist.sum())
    w0 = np.cumsum(p)  # weight of the class below each cut
    m0 = np.cumsum(p * (edges[:-1] + edges[1:]) / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (m0[-1] * w0 - m0) ** 2 / (w0 * (1.0 - w0))
    return float(edges[int(np.argmax(np.nan_to_num(between, nan=0.0, posinf=0.0))) + 1])


def _ink_map(gray: np.ndarray) -> tuple[np.ndarray, float]:
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
    residual = pixels - _rank_filter(pixels, k, np.median)  # separable: close to a k x k median
    low, high = np.percentile(residual, [0.5, 99.5])
    return bool(-low > high)


def _coarse(x: np.ndarray, side: int = 128) -> tuple[np.ndarray, int]:
    """x (H, W) shrunk to at most `side` px across (box filter), and the odd window, a fifth of
    the picture, that the paper estimates use: wider than any pen stroke, narrower than shadows."""
    h, w = x.shape
    small = Image.fromarray(x.astype(np.float32))
    if max(h, w) > side:
        small = small.resize(_fitted((w, h), side), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32), max(3, round(max(small.size) / 5)) | 1


def _rank_filter(x: np.ndarray, k: int, rank: Callable[..., np.ndarray]) -> np.ndarray:
    """`rank` (np.min, np.max, np.median) over k-wide windows along each axis in turn, edges
    repeated: exact for min and max over a k x k square, k times cheaper than Pillow's rank filters."""
    r = k // 2
    for axis in (0, 1):
        padded = np.pad(x, [(r, r) if a == axis else (0, 0) for a in range(2)], mode="edge")
        x = rank(np.lib.stride_tricks.sliding_window_view(padded, k, axis=axis), axis=-1)
    return x.astype(np.float32)


def _background(signal: np.ndarray) -> np.ndarray:
    """The paper under the ink of signal (H, W), ink bright: a grey-level opening (min then max
    filter) wider than any pen stroke removes the strokes and keeps what is wide, the lighting
    gradient, vignetting and shadows; computed on the coarse picture, smoothed, scaled back."""
    h, w = signal.shape
    pixels, k = _coarse(signal)
    opened = _rank_filter(_rank_filter(pixels, k, np.min), k, np.max)
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


def _ink_mask(ink: np.ndarray, noise: float) -> np.ndarray:
    """(H, W) ink -> (H, W) bool: the digit's pixels, specks removed."""
    peak = float(ink.max())
    floor = max(MIN_CONTRAST, 8.0 * noise)
    if peak < floor:
        raise NoInk(f"no ink: nothing stands out from the background (contrast {peak:.3f}, "
                    f"at least {floor:.3f} needed)")
    threshold = _otsu(ink / peak)
    mask = ink > max(threshold * peak, 4.0 * noise)
    # Ruled or squared paper: a line across (nearly) the whole picture is not ink.
    h, w = mask.shape
    mask[_longest_run(mask) >= 0.85 * w] = False
    mask[:, _longest_run(mask.T) >= 0.85 * h] = False
    labels, areas = _components(mask)
    largest = int(areas.max())
    # Specks: far smaller than the main stroke. A digit's second stroke (the bar of a 4 or 5,
    # a detached stem) is much larger than a speck of dust or noise.
    kept = np.flatnonzero(areas >= max(0.08 * largest, 4e-5 * mask.size)) + 1
    mask = np.isin(labels, kept)
    if mask.sum() < 4:
        raise NoInk("no ink: only specks stand out from the background")
    return mask


def _longest_run(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (H,) the longest run of True in each row."""
    padded = np.pad(mask, ((0, 0), (1, 1))).astype(np.int8)
    edges = np.diff(padded, axis=1)  # +1 where a run starts, -1 just after it ends
    rows_s, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)
    longest = np.zeros(mask.shape[0], dtype=np.int64)
    np.maximum.at(longest, rows_s, ends - starts)
    return longest


def _components(mask: np.ndarray, side: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of a bool mask: labels (H, W) (0 = none, 1..n) and areas (n,) in
    pixels of the mask. Labelled on a grid of at most `side` cells across (a cell is ink if any
    of its pixels is), so pieces closer than a cell join: a speck still stands alone."""
    h, w = mask.shape
    f = -(-max(h, w) // side)
    if f == 1:
        return _label(mask)
    grid = np.zeros((-(-h // f) * f, -(-w // f) * f), dtype=bool)
    grid[:h, :w] = mask
    coarse = np.any(grid.reshape(grid.shape[0] // f, f, grid.shape[1] // f, f), axis=(1, 3))
    cells, _ = _label(coarse)
    labels = np.repeat(np.repeat(cells, f, axis=0), f, axis=1)[:h, :w] * mask
    return labels, np.bincount(labels.reshape(-1), minlength=int(cells.max()) + 1)[1:]


def _label(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components by breadth-first search: labels (H, W) and areas (n,)."""
    h, w = mask.shape
    labels = np.zeros((h, w), dtype=np.int32)
    flat_mask, flat = mask.reshape(-1), labels.reshape(-1)
    areas: list[int] = []
    for start in np.flatnonzero(flat_mask):
        if flat[start]:
            continue
        label = len(areas) + 1
        flat[start] = label
        queue, area = deque([int(start)]), 0
        while queue:
            i = queue.popleft()
            area += 1
            y, x = divmod(i, w)
            for dy in (-1, 0, 1):
                ny = y + dy
                if ny < 0 or ny >= h:
                    continue
                for dx in (-1, 0, 1):
                    nx = x + dx
                    if 0 <= nx < w:
                        j = ny * w + nx
                        if flat_mask[j] and not flat[j]:
                            flat[j] = label
                            queue.append(j)
        areas.append(area)
    return labels, np.asarray(areas, dtype=np.int64)


def _fit_box(ink: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Crop to the ink and fit into BOX x BOX keeping aspect: (h, w) float32, peak 1."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    # Keep the ink's anti-aliased edge (one pixel round the mask), drop everything else.
    halo = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(3))) > 0
    strength = float(np.percentile(ink[mask], 90))
    crop = np.clip(np.where(halo, ink, 0.0)[top:bottom, left:right] / strength, 0.0, 1.0)
    m = mask[top:bottom, left:right]

    # Stroke width ~ 2 * area / perimeter (a ribbon of width s and length L: area L*s,
    # perimeter ~2L), in px of the final 20 px box.
    perimeter = (np.count_nonzero(m[1:] != m[:-1]) + np.count_nonzero(m[:, 1:] != m[:, :-1])
                 + m[0].sum() + m[-1].sum() + m[:, 0].sum() + m[:, -1].sum())
    stroke = 2.0 * m.sum() / max(1, perimeter) * BOX / max(m.shape)

    # Through an intermediate 4x box (80 px), where a thin stroke is thickened cheaply.
    image = Image.fromarray(crop.astype(np.float32))
    mid = _fitted(image.size, 4 * BOX)
    image = image.resize(mid, Image.Resampling.LANCZOS if max(crop.shape) > 4 * BOX
                         else Image.Resampling.BICUBIC)
    grow = int(round((MIN_STROKE - stroke) * 4 / 2)) if stroke < MIN_STROKE else 0
    if grow > 0:  # radius in px of the 80 px box
        padded = np.pad(np.asarray(image), grow)
        image = Image.fromarray(padded).filter(ImageFilter.MaxFilter(2 * grow + 1))
    box = np.asarray(image.resize(_fitted(image.size, BOX), Image.Resampling.LANCZOS), dtype=np.float32)
    box = np.clip(box, 0.0, None)
    return np.clip(box / max(float(box.max()), 1e-6), 0.0, 1.0)


def _fitted(size: tuple[int, int], side: int) -> tuple[int, int]:
    """(w, h) scaled so the longer side is `side`, keeping aspect."""
    w, h = size
    scale = side / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def _centre(box: np.ndarray) -> np.ndarray:
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
