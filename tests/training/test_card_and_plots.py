"""Model card writer and curve plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.common.card import REQUIRED_FIELDS, command_line, write_card
from training.common.plots import plot_curves


def test_card_adds_environment_and_requires_fields(tmp_path: Path) -> None:
    card = {field: field for field in REQUIRED_FIELDS}
    written = write_card(tmp_path / "card.json", card)
    assert json.loads((tmp_path / "card.json").read_text()) == written
    assert written["environment"]["torch"] != "absent" and "created_utc" in written
    with pytest.raises(ValueError, match="metrics"):
        write_card(tmp_path / "bad.json", {k: v for k, v in card.items() if k != "metrics"})


def test_command_line_quotes_arguments() -> None:
    assert command_line("training.job", ["--out-dir", "a b"]) == "python -m training.job --out-dir 'a b'"


def test_plot_curves_writes_a_small_png(tmp_path: Path) -> None:
    path = plot_curves(tmp_path / "c.png", {
        "loss": {"train": [1.0, 0.5, 0.3], "validation": [1.1, 0.6, 0.5]},
        "accuracy": {"train": [0.5, 0.8, 0.9], "validation": [0.4, 0.7, 0.8]},
    }, title="t")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 100_000
