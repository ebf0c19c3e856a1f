"""tensorgate.digits: encoded images made here -> MNIST-style input, and every refusal."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tensorgate.digits import (
    DEFAULT_LIMITS,
    DigitImageError,
    ImageTooLarge,
    Limits,
    NoInk,
    NotAnImage,
    TruncatedImage,
    load_digit,
    prepare_digit,
)
from tests.support import REPO_ROOT

SAMPLES = REPO_ROOT / "samples" / "mnist"


def seven(size: tuple[int, int] = (300, 240), at: tuple[int, int] = (60, 40), scale: float = 1.0,
          ink: int = 30, paper: int = 235, width: int = 9) -> Image.Image:
    """A dark 7 on light paper, placed at `at` (top-left of its strokes)."""
    img = Image.new("L", size, paper)
    draw = ImageDraw.Draw(img)
    x, y = at
    draw.line([(x, y), (x + 100 * scale, y), (x + 45 * scale, y + 150 * scale)], fill=ink, width=width,
              joint="curve")
    return img


def encode(img: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **options)
    return out.getvalue()


def bbox(x: np.ndarray, level: float = 0.05) -> tuple[int, int]:
    """(height, width) of what is above `level` in a (28, 28) image."""
    rows, cols = np.flatnonzero((x > level).any(axis=1)), np.flatnonzero((x > level).any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def centre_of_mass(x: np.ndarray) -> tuple[float, float]:
    ys, xs = np.mgrid[0:28, 0:28]
    return float((x * ys).sum() / x.sum()), float((x * xs).sum() / x.sum())


def assert_mnist_style(out: np.ndarray) -> np.ndarray:
    assert out.shape == (1, 28, 28) and out.dtype == np.float32
    x = out[0]
    assert 0.0 <= x.min() and x.max() == pytest.approx(1.0)
    h, w = bbox(x, 0.0)
    assert max(h, w) <= 20 and max(h, w) >= 19  # fitted into the 20x20 box, the long side fills it
    cy, cx = centre_of_mass(x)
    assert abs(cy - 14.0) <= 0.6 and abs(cx - 14.0) <= 0.6  # centred by mass, as MNIST
    assert x[0].max() == x[-1].max() == x[:, 0].max() == x[:, -1].max() == 0.0  # black border
    return x


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.reshape(-1), b.reshape(-1))[0, 1])


def test_dark_on_light_becomes_white_on_black_and_mnist_style() -> None:
    x = assert_mnist_style(prepare_digit(encode(seven(), "PNG")))
    h, w = bbox(x)
    assert h == 20 and w < h  # a 7 is taller than wide: aspect kept
    assert (x > 0.5).mean() < 0.25 and (x == 0).mean() > 0.5  # white strokes on black, not the reverse


def test_position_size_and_polarity_do_not_matter() -> None:
    reference = prepare_digit(encode(seven(), "PNG"))[0]
    off_centre = prepare_digit(encode(seven(size=(500, 400), at=(330, 200), scale=0.9), "PNG"))[0]
    light_on_dark = prepare_digit(encode(seven(ink=230, paper=20), "PNG"))[0]
    big = prepare_digit(encode(seven(size=(1200, 900), at=(100, 100), scale=4.0, width=36), "PNG"))[0]
    for other in (off_centre, light_on_dark, big):
        assert correlation(reference, other) > 0.9


def test_rotated_digit_still_fits_the_box() -> None:
    rotated = seven(size=(400, 400), at=(140, 110)).rotate(25, fillcolor=235, resample=Image.Resampling.BICUBIC)
    x = assert_mnist_style(prepare_digit(encode(rotated, "PNG")))
    assert correlation(x, prepare_digit(encode(seven(), "PNG"))[0]) < 0.9  # fitted as it leans, not undone


def test_jpeg_and_uneven_lighting() -> None:
    img = np.asarray(seven(size=(400, 320)), dtype=np.float32)
    gradient = np.linspace(0.55, 1.0, img.shape[1])[None, :]  # a shadow over the left side
    noisy = img * gradient + np.random.default_rng(0).normal(0, 6, img.shape)
    photo = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).convert("RGB")
    x = assert_mnist_style(prepare_digit(encode(photo, "JPEG", quality=40)))
    assert correlation(x, prepare_digit(encode(seven(), "PNG"))[0]) > 0.85


def test_alpha_is_flattened_onto_white() -> None:
    # A drawing app's export: black strokes on a fully transparent canvas (whose RGB is black too).
    mask = Image.eval(seven(ink=255, paper=0), lambda v: v)
    rgba = Image.new("RGBA", mask.size, (0, 0, 0, 0))
    rgba.putalpha(mask)
    x = assert_mnist_style(prepare_digit(encode(rgba, "PNG")))
    assert correlation(x, prepare_digit(encode(seven(), "PNG"))[0]) > 0.9


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "BMP", "JPEG"])
def test_every_format(fmt: str) -> None:
    img = seven().convert("RGB")
    assert_mnist_style(prepare_digit(encode(img, fmt)))


def test_first_frame_of_an_animated_gif() -> None:
    frames = [seven().convert("P"), Image.new("P", (300, 240), 0)]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:])
    assert_mnist_style(prepare_digit(out.getvalue()))


def test_specks_and_ruled_lines_are_not_ink() -> None:
    img = seven(size=(400, 320), at=(150, 80))
    draw = ImageDraw.Draw(img)
    rng = np.random.default_rng(1)
    for _ in range(30):  # dust
        x, y = rng.integers(0, 400), rng.integers(0, 320)
        draw.ellipse([x, y, x + 2, y + 2], fill=40)
    for y in range(20, 320, 45):  # ruled paper, darker than the paper, paler than the pen
        draw.line([(0, y), (400, y)], fill=170, width=2)
    x = assert_mnist_style(prepare_digit(encode(img, "PNG")))
    assert correlation(x, prepare_digit(encode(seven(), "PNG"))[0]) > 0.85


def test_blank_ruled_paper_is_no_ink_not_a_crash() -> None:
    """Every line removed leaves nothing: NoInk (INVALID_ARGUMENT when served), not a ValueError."""
    img = Image.new("L", (300, 300), 235)
    draw = ImageDraw.Draw(img)
    for y in range(20, 300, 25):
        draw.line([(0, y), (299, y)], fill=90, width=2)
    with pytest.raises(NoInk, match="only lines across the whole picture"):
        prepare_digit(encode(img, "PNG"))


def test_mnist_digits_come_back_nearly_unchanged() -> None:
    for path in sorted(SAMPLES.glob("*.png")):
        original = np.asarray(Image.open(path), dtype=np.float32) / 255.0
        assert correlation(load_digit(path)[0], original) > 0.75, path.name


def test_load_digit_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "seven.jpg"
    path.write_bytes(encode(seven().convert("RGB"), "JPEG"))
    np.testing.assert_array_equal(load_digit(path), prepare_digit(path.read_bytes()))
    with pytest.raises(ImageTooLarge, match="seven.jpg: image too large"):
        load_digit(path, Limits(max_bytes=100))


@pytest.mark.parametrize("paper", [0, 128, 255])
def test_no_ink(paper: int) -> None:
    with pytest.raises(NoInk, match="no ink"):
        prepare_digit(encode(Image.new("L", (200, 200), paper), "PNG"))


def test_noise_alone_is_no_ink() -> None:
    noise = np.random.default_rng(2).normal(200, 3, (240, 320)).clip(0, 255).astype(np.uint8)
    with pytest.raises(NoInk, match="no ink"):
        prepare_digit(encode(Image.fromarray(noise), "JPEG", quality=80))


@pytest.mark.parametrize("data", [b"", b"hello, world", b"%PDF-1.7\n", b"GIF87a" + bytes(3)[:0] + b"x"])
def test_not_an_image(data: bytes) -> None:
    with pytest.raises(NotAnImage, match="not an image"):
        prepare_digit(data)


def test_tiff_is_not_accepted() -> None:
    with pytest.raises(NotAnImage, match="PNG, JPEG, BMP, GIF or WebP"):
        prepare_digit(encode(seven(), "TIFF"))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP"])
def test_truncated(fmt: str) -> None:
    data = encode(seven().convert("RGB"), fmt)
    with pytest.raises(TruncatedImage, match="truncated or corrupt"):
        prepare_digit(data[: len(data) * 2 // 3])


def test_too_many_bytes() -> None:
    with pytest.raises(ImageTooLarge, match=r"image too large: .* bytes, the limit is 100$"):
        prepare_digit(encode(seven(), "PNG"), Limits(max_bytes=100))


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels in a few hundred bytes: a decompression bomb."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))


def test_too_many_pixels_is_refused_from_the_header() -> None:
    with pytest.raises(ImageTooLarge, match="image too large: .*900000000 pixels"):
        prepare_digit(png_header(30000, 30000))  # past Pillow's own ceiling (set in tensorgate.digits)
    with pytest.raises(ImageTooLarge, match=r"3000x3000 = 9,000,000 pixels, the limit is 1,000,000"):
        prepare_digit(png_header(3000, 3000), Limits(max_pixels=1_000_000))  # ours, before decoding
    with pytest.raises(ImageTooLarge, match=r"300x240 = 72,000 pixels, the limit is 10,000"):
        prepare_digit(encode(seven(), "PNG"), Limits(max_pixels=10_000))


def test_errors_are_value_errors_and_limits_are_checked() -> None:
    assert issubclass(DigitImageError, ValueError)
    for cls in (NotAnImage, TruncatedImage, ImageTooLarge, NoInk):
        assert issubclass(cls, DigitImageError)
    with pytest.raises(ValueError, match="positive"):
        Limits(max_bytes=0)
    with pytest.raises(ValueError, match="at most"):
        Limits(max_pixels=10 ** 9)
    assert DEFAULT_LIMITS.max_pixels >= 12_000_000  # a phone photo passes
