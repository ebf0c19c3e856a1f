"""Digit shapes for the real-life set: pen strokes drawn from templates, and handwriting fonts.

Strokes: each digit has a few templates the way people write it (a 1 with or without a flag,
an open or closed 4, a 7 with or without a bar, ...), as smooth curves through control points
in a unit box (x right, y down). A sample jitters the points, slants, rotates and squeezes the
whole, and draws it with a round pen of random width whose pressure varies along the stroke.

Fonts: handwriting fonts from Debian packages (free licences, see FONT_PACKAGES), fetched with
`apt-get download` + `dpkg -x` like the project's other Debian data.

Both give an ink mask: an 'L' image, 255 = ink, tightly cropped.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from training.data.debian import download, unpack

Point = tuple[float, float]
Stroke = list[list[Point]]  # pieces of one pen stroke; consecutive pieces meet at a sharp corner


def _ellipse(cx: float, cy: float, rx: float, ry: float, start: float = -90.0, n: int = 12,
             sweep: float = 360.0) -> list[Point]:
    return [(cx + rx * math.cos(math.radians(start + sweep * i / n)),
             cy + ry * math.sin(math.radians(start + sweep * i / n))) for i in range(n + 1)]


# digit -> templates -> strokes -> pieces -> control points.
TEMPLATES: dict[int, list[list[Stroke]]] = {
    0: [[[_ellipse(0.5, 0.5, 0.32, 0.48)]],
        [[_ellipse(0.5, 0.5, 0.26, 0.48, start=-100, sweep=380)]]],
    1: [[[[(0.5, 0.0), (0.48, 1.0)]]],
        [[[(0.36, 0.14), (0.5, 0.0)], [(0.5, 0.0), (0.5, 1.0)]]],
        [[[(0.36, 0.14), (0.5, 0.0)], [(0.5, 0.0), (0.5, 1.0)]], [[(0.28, 1.0), (0.72, 1.0)]]]],
    2: [[[[(0.18, 0.25), (0.35, 0.03), (0.62, 0.02), (0.8, 0.22), (0.72, 0.45), (0.45, 0.7), (0.18, 1.0)],
          [(0.18, 1.0), (0.85, 0.98)]]],
        [[[(0.2, 0.2), (0.5, 0.0), (0.78, 0.2), (0.6, 0.55), (0.25, 0.95), (0.15, 0.9), (0.3, 0.85),
           (0.55, 0.95), (0.85, 1.0)]]]],
    3: [[[[(0.18, 0.12), (0.45, 0.0), (0.72, 0.1), (0.72, 0.32), (0.42, 0.47)],
          [(0.42, 0.47), (0.75, 0.6), (0.8, 0.85), (0.5, 1.0), (0.18, 0.9)]]],
        [[[(0.2, 0.05), (0.78, 0.05)], [(0.78, 0.05), (0.45, 0.42)],
          [(0.45, 0.42), (0.78, 0.6), (0.75, 0.88), (0.45, 1.0), (0.2, 0.9)]]]],
    4: [[[[(0.62, 0.0), (0.12, 0.66)], [(0.12, 0.66), (0.88, 0.66)]], [[(0.66, 0.3), (0.66, 1.0)]]],
        [[[(0.22, 0.0), (0.15, 0.6)], [(0.15, 0.6), (0.85, 0.6)]], [[(0.68, 0.05), (0.66, 1.0)]]]],
    5: [[[[(0.3, 0.02), (0.25, 0.45)], [(0.25, 0.45), (0.55, 0.38), (0.8, 0.6), (0.72, 0.9), (0.45, 1.0),
                                         (0.18, 0.9)]],
         [[(0.3, 0.02), (0.8, 0.0)]]],
        [[[(0.8, 0.0), (0.3, 0.02)], [(0.3, 0.02), (0.25, 0.45)],
          [(0.25, 0.45), (0.55, 0.38), (0.8, 0.6), (0.72, 0.9), (0.45, 1.0), (0.18, 0.9)]]]],
    6: [[[[(0.68, 0.0), (0.42, 0.18), (0.27, 0.45), (0.25, 0.75), (0.45, 0.98), (0.72, 0.85), (0.72, 0.62),
           (0.48, 0.52), (0.27, 0.68)]]],
        [[[(0.62, 0.0), (0.3, 0.5), (0.25, 0.78), (0.45, 0.98), (0.7, 0.85), (0.68, 0.6), (0.45, 0.55),
           (0.28, 0.72)]]]],
    7: [[[[(0.12, 0.02), (0.88, 0.0)], [(0.88, 0.0), (0.55, 0.5), (0.42, 1.0)]]],
        [[[(0.12, 0.02), (0.88, 0.0)], [(0.88, 0.0), (0.55, 0.5), (0.42, 1.0)]], [[(0.38, 0.52), (0.78, 0.5)]]],
        [[[(0.12, 0.15), (0.2, 0.02)], [(0.2, 0.02), (0.88, 0.02)], [(0.88, 0.02), (0.5, 1.0)]]]],
    8: [[[_ellipse(0.5, 0.25, 0.22, 0.24, start=90)], [_ellipse(0.5, 0.73, 0.28, 0.27, start=-90)]],
        [[[(0.6, 0.05), (0.4, 0.0), (0.25, 0.18), (0.4, 0.4), (0.7, 0.6), (0.75, 0.85), (0.5, 1.0), (0.25, 0.85),
           (0.3, 0.6), (0.6, 0.4), (0.72, 0.2), (0.6, 0.05)]]]],
    9: [[[_ellipse(0.48, 0.27, 0.26, 0.26, start=0)], [[(0.74, 0.27), (0.72, 0.6), (0.62, 1.0)]]],
        [[[(0.74, 0.2), (0.5, 0.0), (0.24, 0.18), (0.3, 0.45), (0.6, 0.48), (0.75, 0.25)],
          [(0.75, 0.25), (0.75, 1.0)]]]],
}

# Debian packages of handwriting-like fonts (all in Debian main: free licences) and the files used.
FONT_PACKAGES: dict[str, tuple[str, ...]] = {
    "fonts-dkg-handwriting": ("dkg.ttf", "dkgBd.ttf", "dkgIt.ttf", "dkgBI.ttf"),
    "fonts-bwht": ("BecauseWeBuild-Regular.otf", "BecauseWeConnect-Regular.otf", "BecauseWeCreate-Regular.otf",
                   "BecauseWeLearn-Regular.otf", "BecauseWeMentor-Regular.otf", "BecauseWeOrganize-Regular.otf"),
    "fonts-breip": ("Breip.ttf",),
    "fonts-humor-sans": ("Humor-Sans.ttf",),
    "fonts-rufscript": ("Rufscript010.ttf",),
    "fonts-sjfonts": ("Delphine.ttf", "SteveHand.ttf"),
    "fonts-dancingscript": ("DancingScript-Regular.otf", "DancingScript-Bold.otf"),
    "fonts-comic-neue": ("ComicNeue-Regular.otf", "ComicNeue-Italic.otf", "ComicNeue-Bold.otf"),
}


def fetch_fonts(folder: Path) -> list[Path]:
    """The font files of FONT_PACKAGES, downloaded and unpacked under `folder` when missing."""
    fonts: list[Path] = []
    for package, names in FONT_PACKAGES.items():
        unpacked = folder / package
        if not unpacked.exists():
            unpack(download(package, folder / "debs"), unpacked)
        found = {p.name: p for p in unpacked.rglob("*") if p.suffix in (".ttf", ".otf")}
        missing = [n for n in names if n not in found]
        if missing:
            raise RuntimeError(f"{package}: no {missing} in the package")
        fonts += [found[n] for n in names]
    return fonts


def font_glyph(font: Path, digit: int, height: int) -> Image.Image:
    """The digit in `font`, about `height` px tall, as a cropped ink mask."""
    face = ImageFont.truetype(str(font), size=int(height * 1.4))
    canvas = Image.new("L", (height * 3, height * 3), 0)
    ImageDraw.Draw(canvas).text((height // 2, height // 4), str(digit), fill=255, font=face)
    box = canvas.getbbox()
    if box is None:
        raise RuntimeError(f"{font.name} draws nothing for {digit}")
    return canvas.crop(box)


def _catmull_rom(points: np.ndarray, per_segment: int = 12) -> np.ndarray:
    """A smooth curve through points (n, 2) -> (m, 2); the ends are repeated."""
    if len(points) == 2:
        return np.linspace(points[0], points[1], per_segment + 1)
    p = np.concatenate([points[:1], points, points[-1:]])
    t = np.linspace(0.0, 1.0, per_segment, endpoint=False)[:, None]
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3))
    out.append(p[-2:-1])
    return np.concatenate(out)


def stroke_glyph(digit: int, height: int, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """A hand-drawn digit about `height` px tall as a cropped ink mask, and its template id."""
    choice = int(rng.integers(len(TEMPLATES[digit])))
    template = TEMPLATES[digit][choice]
    slant = rng.uniform(-0.3, 0.15)  # x += slant * (y - 0.5): most writers lean right
    angle = math.radians(rng.uniform(-8, 8))
    squeeze = rng.uniform(0.65, 1.2)
    jitter = rng.uniform(0.01, 0.045)
    supersample = 3
    size = height * supersample
    pen = size * rng.uniform(0.03, 0.13)
    canvas = Image.new("L", (size * 2, size * 2), 0)
    draw = ImageDraw.Draw(canvas)

    def place(xy: np.ndarray) -> np.ndarray:
        x, y = (xy[:, 0] - 0.5) * squeeze + slant * (xy[:, 1] - 0.5), xy[:, 1] - 0.5
        xr = x * math.cos(angle) - y * math.sin(angle)
        yr = x * math.sin(angle) + y * math.cos(angle)
        return np.stack([xr, yr], axis=1) * size + size

    for stroke in template:
        shift = rng.normal(0, jitter, 2)  # strokes are placed a little apart from each other
        corner_moves: dict[Point, np.ndarray] = {}
        for piece in stroke:
            pts = []
            for point in piece:  # shared corners move together, so pieces stay joined
                move = corner_moves.setdefault(point, rng.normal(0, jitter, 2))
                pts.append(np.asarray(point) + move + shift)
            curve = place(_catmull_rom(np.asarray(pts)))
            pressure = np.clip(1 + 0.25 * np.sin(np.linspace(0, math.pi * rng.uniform(1, 3), len(curve))
                                                 + rng.uniform(0, math.pi)), 0.5, 1.3)
            for (a, b), w in zip(zip(curve[:-1], curve[1:]), pressure):
                r = pen * w / 2
                draw.line([tuple(a), tuple(b)], fill=255, width=max(1, int(2 * r)))
                draw.ellipse([b[0] - r, b[1] - r, b[0] + r, b[1] + r], fill=255)
    box = canvas.getbbox()
    assert box is not None
    glyph = canvas.crop(box)
    glyph = glyph.resize((max(1, glyph.width // supersample), max(1, glyph.height // supersample)),
                         Image.Resampling.LANCZOS)
    return glyph, f"strokes/{digit}{'abcdefgh'[choice]}"
