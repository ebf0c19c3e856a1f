"""The refusals of tensorgate.digits: `DigitImageError` subclasses (all `ValueError`s) whose
messages name the problem."""

from __future__ import annotations


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
