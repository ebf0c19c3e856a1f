from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import photos


def test_every_example_photo_is_timed(capsys: pytest.CaptureFixture[str]) -> None:
    assert photos.main(["--calls", "1", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    names = sorted(p.name for p in photos.PHOTOS.iterdir())
    rows = [line for line in out.splitlines() if line.startswith("| digit")]
    assert [row.split(" | ")[0][2:] for row in rows] == names
    assert all(float(row.split(" | ")[1].rstrip(" |")) > 0 for row in rows)
    assert f"| all {len(names)} photos |" in out


def test_sides_are_compared_bit_for_bit(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    image = np.zeros((1, 28, 28), np.float32)
    np.savez(a / "inputs.npz", one=image, two=image, three=image, four=image)
    np.savez(b / "inputs.npz", one=image, two=image + np.float32(1e-7), three=-image, four=image.astype(np.float64))
    (a / "refused.json").write_text('{"five": "NoInk: no ink", "six": "NoInk: no ink"}')
    (b / "refused.json").write_text('{"five": "NoInk: no ink", "seven": "NotAnImage: x"}')
    # two: a value; three: -0.0 is not 0.0's bytes; four: the dtype; six and seven: refused on one side.
    assert photos.differences(a, b) == ["seven", "six", "four", "three", "two"]


def test_a_refused_photo_is_reported_not_fatal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "drawing.png").write_bytes((photos.PHOTOS / "digit2_drawing.png").read_bytes())
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    assert photos.main(["--folder", str(tmp_path), "--calls", "1", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "| drawing.png |" in out and "Refused by this checkout (not timed): 1, e.g. ('broken.jpg', 'NotAnImage" in out
    (tmp_path / "none").mkdir()
    with pytest.raises(SystemExit):  # a folder without photos: a usage error, not a division by zero
        photos.main(["--folder", str(tmp_path / "none")])
