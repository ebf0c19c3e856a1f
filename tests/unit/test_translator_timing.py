"""python -m services.modelservice.runners.translator.timing on a few sentences (its output, not its timings)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.modelservice.runners.translator.timing import main

MODEL = Path(__file__).resolve().parents[2] / "models" / "translator_de_en"


@pytest.mark.skipif(not (MODEL / "1" / "decoder_step.onnx").is_file(), reason="models/translator_de_en not trained yet")
def test_two_instances_on_a_few_sentences(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--model-dir", str(MODEL), "--sentences", "12", "--clients", "3", "--instances", "2",
          "--short-share", "0.25"])
    out = capsys.readouterr().out
    assert "2 decode loop(s) (shared sessions, length routing, short share 0.25" in out
    assert "identical 12/12 (100.0%)" in out
    assert "shortest quarter (3) p50 latency" in out and "loop 1: Counters(" in out


@pytest.mark.skipif(not (MODEL / "1" / "decoder_step.onnx").is_file(), reason="models/translator_de_en not trained yet")
def test_step_rows_times_one_decoder_step_per_batch_size(capsys: pytest.CaptureFixture[str]) -> None:
    from services.modelservice.runners.translator.timing import step_times
    from services.modelservice.runners.translator.translator import OnnxStepModel, Translator

    model = Translator(MODEL / "1", ["CPUExecutionProvider"], threads=1).model
    assert isinstance(model, OnnxStepModel)
    times = step_times(model, [1, 6], seconds=0.05)
    assert [n for n, _ in times] == [1, 6] and all(ms > 0 for _, ms in times)
    main(["--model-dir", str(MODEL), "--step-rows", "2,4"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("   2 rows:") and "µs a row (1 ORT thread(s), folded)" in lines[1]
    main(["--model-dir", str(MODEL), "--step-rows", "2", "--no-fold"])
    assert "(1 ORT thread(s), as shipped)" in capsys.readouterr().out
