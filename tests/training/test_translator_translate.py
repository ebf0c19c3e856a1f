"""Translating with the exported translator: the Translator, the translate CLI, and the shipped model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.modelservice.runners.translator.translator import Translator, sha256_of
from training.translator import translate


SHIPPED = Path("models/translator_de_en/1")


def test_translator_and_cli(translator_dry_run: tuple[Path, Path, dict[str, Any]],
                            capsys: pytest.CaptureFixture[str]) -> None:
    out_dir, _, _ = translator_dry_run
    version = out_dir / "translator_de_en" / "1"
    translator = Translator(version, threads=1)
    results = translator.translate(["Der Hund sieht den Ball.", "Die Katze mag das Haus heute."],
                                   beam_size=3)
    assert len(results) == 2 and all(isinstance(t, str) and s <= 0.0 for t, s in results)
    translate.main(["--model-dir", str(version), "--beam-size", "1", "Der Hund sieht den Ball."])
    assert capsys.readouterr().out.strip() == translator.translate(
        ["Der Hund sieht den Ball."], beam_size=1)[0][0]


@pytest.mark.skipif(not SHIPPED.is_dir(), reason="models/translator_de_en not trained yet")
def test_shipped_model_translates() -> None:
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    assert manifest["sentencepiece"]["sha256"] == sha256_of(SHIPPED / "sentencepiece.model")
    total = sum(p.stat().st_size for p in SHIPPED.iterdir())
    assert total <= 25_000_000
    translator = Translator(SHIPPED, threads=1)
    sentences = ["Der Hund kam unter dem Tisch hervor.", "Ich habe keine Ahnung.",
                 "Wie spät ist es?"]
    for text, score in translator.translate(sentences, beam_size=5):
        assert sum(ch.isalpha() for ch in text) >= 3 and score <= 0.0
