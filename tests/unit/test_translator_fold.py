"""The decoder's input projection folded (fold.py): the shipped graph folds, runs the same step
up to float rounding, translates the same sentences; a graph without the pattern stays as it
is; a fold that disagrees on the probe is not used; the config can turn it off."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from services.modelservice.runners.translator import TranslatorModel, fold
from services.modelservice.runners.translator.graph_edit import probe
from services.modelservice.runners.translator.translator import Translator
from tests.unit.translator_shipped import MODEL, NEEDS_MODEL, SENTENCES, settings, spec

pytestmark = NEEDS_MODEL

DECODER = MODEL / "1" / "decoder_step.onnx"


def one_thread() -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return options


def test_the_shipped_decoder_folds_and_steps_the_same_up_to_rounding() -> None:
    graph = onnx.load(str(DECODER))
    folded = fold.fold_input_projection(graph)
    assert folded is not None
    ops = [n.op_type for n in folded.graph.node]
    assert ops.count("Concat") == [n.op_type for n in graph.graph.node].count("Concat") - 1  # the LSTM input's
    names = {t.name for t in folded.graph.initializer}
    assert "fold.0.table" in names and not any(name.endswith("weight_ih") for name in names)
    table = next(t for t in folded.graph.initializer if t.name == "fold.0.table")
    assert list(table.dims) == [4000, 1536]  # one row of the LSTM's 4 gates per vocabulary entry
    original = ort.InferenceSession(graph.SerializeToString(), one_thread(), providers=["CPUExecutionProvider"])
    candidate = ort.InferenceSession(folded.SerializeToString(), one_thread(), providers=["CPUExecutionProvider"])
    for rows, width in ((1, 3), (40, 17)):
        feed = probe(original, rows, width, seed=rows)
        feed["prev_token"] = np.random.default_rng(rows).integers(0, 4000, rows).astype(np.int64)  # the whole vocabulary
        for want, got in zip(original.run(None, feed), candidate.run(None, feed)):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_a_graph_without_the_pattern_is_left_alone() -> None:
    encoder = onnx.load(str(MODEL / "1" / "encoder.onnx"))
    assert fold.fold_input_projection(encoder) is None
    assert fold.fold_checked(encoder, one_thread()) == (encoder, None)


def test_a_fold_that_disagrees_on_the_probe_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    graph = onnx.load(str(DECODER))
    assert fold.fold_checked(graph, one_thread())[0] is not graph
    monkeypatch.setattr(fold, "TOLERANCE", -1.0)  # any difference at all is too much
    assert fold.fold_checked(graph, one_thread())[0] is graph


def test_folded_and_unfolded_translators_translate_alike() -> None:
    folded, plain = Translator(MODEL / "1", threads=1), Translator(MODEL / "1", threads=1, fold=False)
    assert folded.model.folded and not plain.model.folded  # type: ignore[attr-defined]
    got, want = folded.translate(SENTENCES, beam_size=5), plain.translate(SENTENCES, beam_size=5)
    assert [t for t, _ in got] == [t for t, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-4, atol=1e-4)


def test_the_config_turns_it_off_and_refuses_other_values() -> None:
    model = TranslatorModel(spec(fold_input_projection="false"), settings())
    try:
        assert not model.translator.model.folded  # type: ignore[attr-defined]
    finally:
        model.close()
    with pytest.raises(ValueError, match="fold_input_projection"):
        TranslatorModel(spec(fold_input_projection="yes"), settings())
