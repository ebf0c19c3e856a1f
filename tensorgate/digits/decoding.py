"""Step 1 of tensorgate.digits: encoded bytes -> a grayscale picture, within the limits.

PNG, JPEG, BMP, GIF or WebP (first frame; EXIF rotation applied), alpha flattened onto white,
grayscale, shrunk to at most WORK_SIDE px (JPEGs decoded at reduced size). What one image may
cost is checked before decoding (`Limits`: encoded bytes, and pixels from the header), and
Pillow's own decompression-bomb ceiling is set here.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tensorgate.digits.errors import ImageTooLarge, NotAnImage, TruncatedImage

FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")
WORK_SIDE = 512  # longest side the preparation works at; a digit needs far fewer pixels
# Pillow's own decompression-bomb guard, set explicitly (its default is 89 Mpx, warn, 179 Mpx,
# fail). Our per-call limit (Limits.max_pixels, checked from the header) refuses first; this
# ceiling only keeps Pillow's check from warning below it. It is only ever lowered, never raised.
PILLOW_MAX_IMAGE_PIXELS = 64_000_000


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


def decode(data: bytes, limits: Limits) -> np.ndarray:
    """Encoded image bytes -> (H, W) float32 gray in 0..1 (0 = black), refused past `limits`."""
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
