"""bench.int8: the MatMul rewrite keeps the decoder's outputs, and the check tells ONNX Runtime's
int8 decoder, whose rows depend on their batch-mates, from the fp32 one and the model service's
int8 per row, whose rows do not."""

from __future__ import annotations


import numpy as np
import onnx
import onnxruntime as ort
import pytest

from bench import int8
from services.modelservice.runners.translator.fold import fold_input_projection
from services.modelservice.runners.translator.int8 import batch_dependence, weight_matmuls

DECODER = int8.MODEL / "1" / "decoder_step.onnx"


def test_gemms_over_weights_become_matmuls_with_the_same_outputs() -> None:
    folded = fold_input_projection(onnx.load(str(DECODER)))
    assert folded is not None
    rewritten, names = weight_matmuls(folded)
    assert names and not any(n.op_type == "Gemm" for n in rewritten.graph.node)
    before = ort.InferenceSession(folded.SerializeToString(), int8.options(), providers=["CPUExecutionProvider"])
    after = ort.InferenceSession(rewritten.SerializeToString(), int8.options(), providers=["CPUExecutionProvider"])
    feed = int8.feed_for(before, 12)
    for want, got in zip(before.run(None, feed), after.run(None, feed)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert batch_dependence(before, 12) == 0.0  # fp32: a row ignores its batch-mates


def test_only_the_per_tensor_int8_decoder_depends_on_its_batch_mates(capsys: pytest.CaptureFixture[str]) -> None:
    assert int8.main(["--rows", "5,40", "--sentences", "0"]) == 0
    rows = {line.split("|")[1].strip(): float(line.strip("| \n").split("|")[-1])
            for line in capsys.readouterr().out.splitlines() if line.startswith("| fp32") or line.startswith("| int8")}
    assert rows["fp32"] == 0.0 and rows["int8 per row"] == 0.0
    assert rows["int8 per tensor"] > 1e-4  # one activation scale spans the batch
