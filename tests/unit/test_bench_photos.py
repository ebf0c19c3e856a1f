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
    np.savez(a / "inputs.npz", one=image, two=image)
    np.savez(b / "inputs.npz", one=image, two=image + np.float32(1e-7))
    assert photos.same_inputs(a, b) == ["two"]
