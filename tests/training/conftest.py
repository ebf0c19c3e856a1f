"""Fixtures that more than one file of tests/training shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from training.translator import train


@pytest.fixture(scope="session")
def translator_dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    """One translator dry run on the generated corpus (no network): (models root, run folder, card).
    The tests that resume it work on a copy of the run folder."""
    root = tmp_path_factory.mktemp("translator")
    out_dir, run_dir = root / "models", root / "run"
    card = train.main(["--dry-run", "--synthetic", "--out-dir", str(out_dir), "--run-dir",
                       str(run_dir), "--threads", "1", "--device", "cpu", "--quiet"])
    return out_dir, run_dir, card
