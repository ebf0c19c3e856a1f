"""The decoder in int8 with a scale per row (int8.py): weight Gemms become integer products, a
row's outputs ignore its batch-mates exactly, the drift from float stays small, the check falls
back to float without VNNI or past its tolerance, and the config turns it on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from services.modelservice.runners.translator import TranslatorModel, int8
from services.modelservice.runners.translator.fold import fold_input_projection
from services.modelservice.runners.translator.graph_edit import probe
from services.modelservice.runners.translator.translator import Translator
from tests.unit.translator_shipped import MODEL, NEEDS_MODEL, SENTENCES, settings, spec

pytestmark = NEEDS_MODEL

DECODER = MODEL / "1" / "decoder_step.onnx"
NEEDS_VNNI = pytest.mark.skipif(not int8.has_vnni(), reason="this CPU has no VNNI: int8 stays off by design")


def one_thread() -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return options


def folded() -> onnx.ModelProto:
    graph = fold_input_projection(onnx.load(str(DECODER)))
    assert graph is not None
    return graph


def test_weight_gemms_become_integer_products_whose_rows_ignore_their_batch_mates() -> None:
    graph = folded()
    quantized = int8.quantize_rows(graph)
    assert quantized is not None
    ops = [n.op_type for n in quantized.graph.node]
    assert "Gemm" not in ops and ops.count("MatMulInteger") == [n.op_type for n in graph.graph.node].count("Gemm")
    session = ort.InferenceSession(quantized.SerializeToString(), one_thread(), providers=["CPUExecutionProvider"])
    reference = ort.InferenceSession(graph.SerializeToString(), one_thread(), providers=["CPUExecutionProvider"])
    for rows in (3, 40):
        assert int8.batch_dependence(session, rows) == 0.0
    feed = probe(reference, 16, 7)
    for want, got in zip(reference.run(None, feed), session.run(None, feed)):
        assert float(np.max(np.abs(want - got))) < int8.TOLERANCE  # the same model, give or take int8's rounding
    relu = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])], "no_gemm",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 4])]))
    assert int8.quantize_rows(relu) is None  # nothing to quantize


def test_vnni_is_read_from_the_cpu_flags(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n")
    assert int8.has_vnni(str(info))
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2\n")
    assert not int8.has_vnni(str(info))
    assert not int8.has_vnni(str(tmp_path / "missing"))


def test_the_check_keeps_the_float_graph_without_vnni(monkeypatch: pytest.MonkeyPatch) -> None:
    graph = folded()
    monkeypatch.setattr(int8, "has_vnni", lambda cpuinfo=int8.CPUINFO: False)
    assert int8.int8_checked(graph, one_thread())[0] is graph


@NEEDS_VNNI
def test_the_check_keeps_the_float_graph_past_its_tolerance_or_when_it_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    graph = folded()
    assert int8.int8_checked(graph, one_thread())[0] is not graph
    monkeypatch.setattr(int8, "batch_dependence", lambda session, rows: 1 / 0)  # the check itself breaks
    assert int8.int8_checked(graph, one_thread())[0] is graph
    monkeypatch.undo()
    monkeypatch.setattr(int8, "TOLERANCE", -1.0)
    assert int8.int8_checked(graph, one_thread())[0] is graph


def test_an_old_opset_is_left_alone() -> None:
    graph = folded()
    old = onnx.ModelProto()
    old.CopyFrom(graph)
    for entry in old.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = 10
    assert int8.quantize_rows(old) is None


@NEEDS_VNNI
def test_an_int8_translator_translates_each_sentence_alike_alone_or_in_a_batch() -> None:
    translator = Translator(MODEL / "1", threads=1, int8=True)
    assert translator.model.int8  # type: ignore[attr-defined]
    serving = translator.model.decoder  # type: ignore[attr-defined]  (the check's own int8 session)
    reference = ort.InferenceSession(folded().SerializeToString(), one_thread(), providers=["CPUExecutionProvider"])
    feed = probe(reference, 4, 7)
    assert float(np.max(np.abs(serving.run(None, feed)[0] - reference.run(None, feed)[0]))) > 1e-4  # not the float graph
    together = [text for text, _ in translator.translate(SENTENCES, beam_size=5)]
    alone = [translator.translate([sentence], beam_size=5)[0][0] for sentence in SENTENCES]
    assert together == alone
    assert all(text.strip() for text in together)
    assert "station" in translator.translate(["Wo ist der Bahnhof?"], beam_size=5)[0][0]


@NEEDS_VNNI
def test_the_config_turns_it_on_and_refuses_other_values() -> None:
    model = TranslatorModel(spec(decoder_precision="int8"), settings())
    try:
        assert model.translator.model.int8  # type: ignore[attr-defined]
    finally:
        model.close()
    default = TranslatorModel(spec(), settings())
    try:
        assert not default.translator.model.int8  # type: ignore[attr-defined]
    finally:
        default.close()
    with pytest.raises(ValueError, match="decoder_precision"):
        TranslatorModel(spec(decoder_precision="fp16"), settings())
