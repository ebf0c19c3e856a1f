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

The steps live in the submodules: `errors` (the refusals), `decoding` (limits, step 1),
`paper` (steps 2-3), `ink` (steps 4-5) and `fitting` (steps 6-7); this package joins them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tensorgate.digits.decoding import DEFAULT_LIMITS, FORMATS, Limits, decode
from tensorgate.digits.errors import DigitImageError, ImageTooLarge, NoInk, NotAnImage, TruncatedImage
from tensorgate.digits.fitting import centre, fit_box
from tensorgate.digits.ink import ink_mask
from tensorgate.digits.paper import ink_map

__all__ = [
    "DEFAULT_LIMITS", "DigitImageError", "FORMATS", "ImageTooLarge", "Limits", "NoInk", "NotAnImage",
    "TruncatedImage", "load_digit", "prepare_digit",
]


def load_digit(path: str | Path, limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """An image file -> (1, 28, 28) float32 in 0..1, white digit on black (see prepare_digit)."""
    path = Path(path)
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise ImageTooLarge(f"{path.name}: image too large: {size:,} bytes, the limit is {limits.max_bytes:,}")
    return prepare_digit(path.read_bytes(), limits)


def prepare_digit(data: bytes, limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """Encoded image bytes -> (1, 28, 28) float32 in 0..1, white digit on black, MNIST-style."""
    gray = decode(data, limits)  # (H, W) float32, 0 = black, 1 = white
    ink, noise = ink_map(gray)  # (H, W) float32, 0 = paper, >0 = ink, whatever the polarity
    mask = ink_mask(ink, noise)
    box = fit_box(ink, mask)  # (h, w), max(h, w) == 20
    return centre(box)[None]
