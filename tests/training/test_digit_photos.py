"""The real-life digit set: reproducible, labelled, every format, and not MNIST-like as it is."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from training.data.digit_photos import main
from training.data.digit_strokes import TEMPLATES, stroke_glyph


def test_same_seed_same_files(tmp_path: Path) -> None:
    a = main(["--out", str(tmp_path / "a"), "--count", "30", "--seed", "5", "--no-fonts"])
    b = main(["--out", str(tmp_path / "b"), "--count", "30", "--seed", "5", "--no-fonts"])
    c = main(["--out", str(tmp_path / "c"), "--count", "30", "--seed", "6", "--no-fonts"])
    assert a["sha256"] == b["sha256"] != c["sha256"]
    assert a["labels"] == {str(d): 3 for d in range(10)}
    on_disk = json.loads((tmp_path / "a" / "card.json").read_text())
    assert on_disk["sha256"] == a["sha256"] and on_disk["description"] and on_disk["why"]
    for entry in a["files"]:
        data = (tmp_path / "a" / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert entry["file"].endswith(f"_label{entry['label']}.{entry['file'].rsplit('.', 1)[1]}")
        with Image.open(tmp_path / "a" / entry["file"]) as img:
            assert img.format == entry["format"]
            assert min(img.size) >= 120  # photos, not 28x28 digits
    assert {"JPEG", "PNG"} <= {e["format"] for e in a["files"]}


def test_examples_are_drawn_strokes_in_jpeg_or_png(tmp_path: Path) -> None:
    card = main(["--examples", "--out", str(tmp_path)])
    names = sorted(e["file"] for e in card["files"])
    assert len(names) == 10 and all(n.startswith(f"digit{d}_") for d, n in zip(range(10), names))
    assert {e["format"] for e in card["files"]} <= {"JPEG", "PNG"}
    assert all(e["source"].startswith("strokes/") for e in card["files"])


def test_every_digit_has_templates_that_draw() -> None:
    rng = np.random.default_rng(0)
    assert sorted(TEMPLATES) == list(range(10))
    for digit in range(10):
        glyph, source = stroke_glyph(digit, 60, rng)
        ink = np.asarray(glyph)
        assert source.startswith(f"strokes/{digit}") and ink.max() == 255
        assert 30 <= glyph.height <= 90  # about the asked-for height, slant and rotation aside
