"""The real-life digit set: digits written or printed on paper and photographed, not MNIST.

    python -m training.data.digit_photos                    # data/real_digits, 1000 images, seed 2026
    python -m training.data.digit_photos --examples         # the ten photos in examples/

Each image is one digit: half drawn as pen strokes from templates of how people write digits,
half set in one of 22 handwriting fonts from Debian packages (training.data.digit_strokes). It is
put on paper the way a phone photo of a note shows it: any size and aspect, the digit off-centre
and at any scale, rotated; white, cream or grey paper, sometimes ruled or squared, with
uneven lighting (a gradient, vignetting, sometimes a shadow) and texture; black or blue ballpoint,
pencil (grey, grainy) or marker; then the camera: a slight perspective, defocus blur, sensor
noise, and mostly JPEG (PNG, WebP, BMP and GIF too). Some are chalk on a blackboard (light on
dark), and some are transparent PNGs with only the strokes (what a drawing app exports).

That is what an application sends the classifiers, which MNIST (centred, 20x20, white on black,
one scanner) never shows them. Every image is a pure function of (seed, index), so the same
command gives the same files; card.json records the fonts' package versions and each file's
SHA-256, with the set's checksum.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageFilter

from training.data.digit_strokes import FONT_PACKAGES, fetch_fonts, font_glyph, stroke_glyph

EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "GIF": "gif"}


def render(digit: int, fonts: Sequence[Path], rng: np.random.Generator,
           formats: Sequence[str] = tuple(EXTENSIONS)) -> tuple[bytes, str, dict[str, Any]]:
    """One photographed digit: (encoded file, format, how it was made); photos are saved in one
    of `formats` (JPEG, PNG, WEBP, BMP, GIF), as often as real uploads have them."""
    width = int(rng.integers(160, 640))
    height = int(width * rng.uniform(0.75, 1.35))
    glyph_height = int(min(width, height) * rng.uniform(0.3, 0.8))
    if rng.random() < 0.5 or not fonts:
        glyph, source = stroke_glyph(digit, glyph_height, rng)
    else:
        font = fonts[int(rng.integers(len(fonts)))]
        glyph, source = font_glyph(font, digit, glyph_height), f"font/{font.name}"
    glyph = glyph.rotate(rng.uniform(-12, 12), resample=Image.Resampling.BICUBIC, expand=True)
    scale = min(1.0, 0.8 * width / glyph.width, 0.8 * height / glyph.height)
    if scale < 1.0:
        glyph = glyph.resize((max(1, int(glyph.width * scale)), max(1, int(glyph.height * scale))),
                             Image.Resampling.LANCZOS)
    ink = np.zeros((height, width), dtype=np.float32)
    margin_y, margin_x = int(0.08 * height), int(0.08 * width)  # the camera crops 6% (_camera)
    top = int(rng.integers(margin_y, max(margin_y, height - glyph.height - margin_y) + 1))
    left = int(rng.integers(margin_x, max(margin_x, width - glyph.width - margin_x) + 1))
    ink[top:top + glyph.height, left:left + glyph.width] = np.asarray(glyph, dtype=np.float32) / 255.0

    style = rng.choice(["paper", "chalkboard", "drawing"], p=[0.85, 0.07, 0.08])
    info: dict[str, Any] = {"source": source, "style": str(style), "size": [width, height]}
    if style == "drawing":  # a drawing app's export: strokes on a transparent canvas
        pen = rng.choice([0, 30, 60])
        rgba = np.zeros((height, width, 4), dtype=np.uint8)
        rgba[..., :3] = pen
        rgba[..., 3] = (ink * 255).astype(np.uint8)
        return _encode(Image.fromarray(rgba), "PNG", rng), "PNG", info
    if style == "chalkboard":
        board = np.array([40, 55, 45]) * rng.uniform(0.6, 1.2)
        paper = np.ones((height, width, 3)) * board
        color = np.array([235, 235, 225]) * rng.uniform(0.85, 1.0)
        opacity = ink * rng.uniform(0.6, 0.9) * _grain(rng, (height, width), 0.35)
    else:
        paper, info["paper"] = _paper(rng, width, height, glyph_height)
        pen_kind = str(rng.choice(["ballpoint-black", "ballpoint-blue", "pencil", "marker"], p=[0.35, 0.3, 0.2, 0.15]))
        info["pen"] = pen_kind
        color = {"ballpoint-black": np.array([25, 25, 30]), "ballpoint-blue": np.array([30, 45, 130]),
                 "pencil": np.array([85, 85, 90]), "marker": np.array([15, 15, 15])}[pen_kind]
        strength = rng.uniform(0.55, 0.85) if pen_kind == "pencil" else rng.uniform(0.85, 1.0)
        opacity = ink * strength * (_grain(rng, (height, width), 0.4) if pen_kind == "pencil" else 1.0)
    photo = paper * (1 - opacity[..., None]) + color * opacity[..., None]
    photo = photo * _lighting(rng, width, height)[..., None]
    image = Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8))
    image, info["camera"] = _camera(image, rng)
    share = {"JPEG": 0.7, "PNG": 0.12, "WEBP": 0.1, "BMP": 0.04, "GIF": 0.04}
    weights = np.array([share[f] for f in formats])
    fmt = str(rng.choice(list(formats), p=weights / weights.sum()))
    return _encode(image, fmt, rng), fmt, info


def _grain(rng: np.random.Generator, shape: tuple[int, int], amount: float) -> np.ndarray:
    return np.clip(1 - amount * rng.random(shape), 0, 1).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, width: int, height: int, cells: int) -> np.ndarray:
    """Noise in -1..1 that varies over about 1/cells of the picture."""
    coarse = Image.fromarray(rng.uniform(-1, 1, (cells, cells)).astype(np.float32))
    return np.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)


def _paper(rng: np.random.Generator, width: int, height: int, glyph: int) -> tuple[np.ndarray, str]:
    base = np.array([[248, 248, 245], [242, 234, 212], [222, 222, 220], [236, 240, 246]])[rng.integers(4)]
    paper = np.ones((height, width, 3)) * base * rng.uniform(0.9, 1.02)
    paper += (6 * _smooth_noise(rng, width, height, 6) + rng.normal(0, 2.5, (height, width)))[..., None]
    kind = str(rng.choice(["plain", "ruled", "squared"], p=[0.65, 0.2, 0.15]))
    if kind != "plain":
        line = np.array([150, 175, 215]) if rng.random() < 0.7 else np.array([170, 170, 170])
        spacing = int(glyph * rng.uniform(0.45, 0.9)) if kind == "squared" else int(glyph * rng.uniform(0.8, 1.3))
        spacing = max(8, spacing)
        alpha = rng.uniform(0.25, 0.5)
        offset = int(rng.integers(spacing))
        for y in range(offset, height, spacing):
            paper[y] = paper[y] * (1 - alpha) + line * alpha
        if kind == "squared":
            for x in range(offset, width, spacing):
                paper[:, x] = paper[:, x] * (1 - alpha) + line * alpha
    return paper, kind


def _lighting(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """(H, W) brightness factor: a gradient across, vignetting, sometimes a soft shadow."""
    ys, xs = np.mgrid[0:height, 0:width]
    u, v = xs / width - 0.5, ys / height - 0.5
    angle = rng.uniform(0, 2 * math.pi)
    light = 1 + rng.uniform(0, 0.35) * (u * math.cos(angle) + v * math.sin(angle))
    light -= rng.uniform(0, 0.5) * (u ** 2 + v ** 2)
    if rng.random() < 0.25:  # a hand's or phone's shadow over one side
        edge = rng.uniform(-0.6, 0.6)
        direction = rng.uniform(0, 2 * math.pi)
        side = u * math.cos(direction) + v * math.sin(direction) - edge
        light *= 1 - rng.uniform(0.15, 0.35) / (1 + np.exp(-side / rng.uniform(0.03, 0.12)))
    return np.clip(light * rng.uniform(0.85, 1.1), 0.3, 1.2).astype(np.float32)


def _camera(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, dict[str, float]]:
    w, h = image.size
    corners = rng.uniform(-0.05, 0.05, 8) * np.array([w, h] * 4)
    # Perspective: map the output's corners onto slightly moved corners of the input.
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64) + corners.reshape(4, 2)
    dst = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    coeffs = _perspective(dst, src)
    image = image.transform((w, h), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BICUBIC)
    # The frame shows paper only: cut the margin the warp may have left empty, then size back.
    m = int(0.06 * w), int(0.06 * h)
    image = image.crop((m[0], m[1], w - m[0], h - m[1])).resize((w, h), Image.Resampling.BICUBIC)
    blur = float(rng.uniform(0, 1.6) * max(w, h) / 400)
    if blur > 0.2:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    noise = float(rng.uniform(0, 9))
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, noise, (h, w, 1))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), {"blur_px": round(blur, 2),
                                                                        "noise": round(noise, 2)}


def _perspective(dst: np.ndarray, src: np.ndarray) -> tuple[float, ...]:
    """The 8 coefficients of Pillow's PERSPECTIVE transform taking dst points to src points."""
    rows = []
    for (x, y), (X, Y) in zip(dst, src):
        rows.append([x, y, 1, 0, 0, 0, -X * x, -X * y])
        rows.append([0, 0, 0, x, y, 1, -Y * x, -Y * y])
    coeffs = np.linalg.solve(np.asarray(rows), src.reshape(-1))
    return tuple(float(c) for c in coeffs)


def _encode(image: Image.Image, fmt: str, rng: np.random.Generator) -> bytes:
    out = io.BytesIO()
    if fmt == "JPEG":
        image.convert("RGB").save(out, "JPEG", quality=int(rng.integers(35, 93)))
    elif fmt == "WEBP":
        image.save(out, "WEBP", quality=int(rng.integers(40, 90)))
    elif fmt == "GIF":
        image.convert("RGB").quantize(64).save(out, "GIF")
    else:
        image.save(out, fmt)
    return out.getvalue()


def generate(out: Path, count: int, seed: int, fonts: Sequence[Path], debs: Sequence[str] = (),
             formats: Sequence[str] = tuple(EXTENSIONS), examples: bool = False) -> dict[str, Any]:
    """Write `count` images (digits in turn, 0-9) and card.json to `out`; returns the card.
    Files are NNNN_labelD.ext, or digitD_STYLE.ext (and no card) for the examples."""
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for index in range(count):
        digit = index % 10
        rng = np.random.default_rng([seed, index])  # each image on its own: reproducible one by one
        data, fmt, info = render(digit, fonts, rng, formats)
        kind = info.get("pen", info["style"])
        name = (f"digit{digit}_{kind}{'' if index < 10 else f'_{index}'}.{EXTENSIONS[fmt]}" if examples
                else f"{index:04d}_label{digit}.{EXTENSIONS[fmt]}")
        (out / name).write_bytes(data)
        files.append({"file": name, "label": digit, "format": fmt, "bytes": len(data),
                      "sha256": hashlib.sha256(data).hexdigest(), **info})
    digest = hashlib.sha256("".join(f["sha256"] for f in files).encode()).hexdigest()
    card = {"name": "real_digits", "description": (__doc__ or "").split("\n\n", 2)[1].strip(),
            "why": (__doc__ or "").split("\n\n", 3)[2].strip(), "count": count, "seed": seed,
            "labels": {str(d): sum(1 for f in files if f["label"] == d) for d in range(10)},
            "sha256": digest, "sha256_of": "the files' SHA-256 in order, concatenated",
            "fonts": {"debs": sorted(debs), "files": sorted(f.name for f in fonts)},
            "files": files}
    if not examples:  # examples/ holds only images, so `tensorgate classify examples/*` reads them all
        (out / "card.json").write_text(json.dumps(card, indent=1))
    return card


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m training.data.digit_photos", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help="output folder (default: data/real_digits, "
                                                         "or examples with --examples)")
    p.add_argument("--count", type=int, default=None, help="number of images (default: 1000, 10 with --examples)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: 2026, 7 with --examples)")
    p.add_argument("--fonts-dir", type=Path, default=Path("data/fonts"),
                   help="where the Debian font packages are unpacked (default: data/fonts)")
    p.add_argument("--no-fonts", action="store_true", help="pen strokes only (no Debian packages needed)")
    p.add_argument("--examples", action="store_true",
                   help="the example photos shipped in examples/: pen strokes only, JPEG and PNG, "
                        "named digitD_PEN.ext")
    args = p.parse_args(argv)
    out = args.out or Path("examples" if args.examples else "data/real_digits")
    count = args.count or (10 if args.examples else 1000)
    seed = args.seed if args.seed is not None else (7 if args.examples else 2026)
    fonts = [] if args.no_fonts or args.examples else fetch_fonts(args.fonts_dir)
    debs = [d.name for d in (args.fonts_dir / "debs").glob("*.deb")] if fonts else []
    card = generate(out, count, seed, fonts, debs, ("JPEG", "PNG") if args.examples else tuple(EXTENSIONS),
                    examples=args.examples)
    print(f"wrote {count} images{'' if args.examples else ' and card.json'} to {out} "
          f"(sha256 {card['sha256'][:16]}...)")
    return card


if __name__ == "__main__":
    main()
