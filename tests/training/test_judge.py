"""The judge: a shipped classifier's probabilities and penultimate features,
and the Fréchet distance between feature sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from training.common.judge import Judge, agreement, feature_tensor, frechet_distance, gaussian_stats

SHIPPED_MLP = Path("models/mnist_mlp/1/model.onnx")  # committed, same contract as mnist_cnn


@pytest.fixture(scope="module")
def judge() -> Judge:
    if not SHIPPED_MLP.is_file():
        pytest.skip(f"{SHIPPED_MLP} is not in this checkout")
    return Judge(SHIPPED_MLP, threads=1)


def test_features_are_the_input_of_the_last_linear_layer(judge: Judge) -> None:
    model = onnx.load(str(SHIPPED_MLP))
    last_linear = [n for n in model.graph.node if n.op_type in ("Gemm", "MatMul")][-1]
    assert judge.feature_name == last_linear.input[0]
    images = np.random.default_rng(0).random((7, 1, 28, 28), dtype=np.float32)
    probabilities, features = judge.run(images)
    (plain,) = ort.InferenceSession(str(SHIPPED_MLP)).run(None, {"image": images})
    np.testing.assert_array_equal(probabilities, plain)  # the extra output changes nothing
    assert features.shape[0] == 7 and features.ndim == 2 and features.shape[1] > 10
    np.testing.assert_array_equal(judge.features(images), features)
    assert agreement(probabilities, probabilities.argmax(1)) == 1.0


def test_feature_tensor_skips_weights_and_finds_matmul() -> None:
    weight = helper.make_tensor("w", TensorProto.FLOAT, (4, 3), np.zeros(12, np.float32))
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["h"]),
         helper.make_node("MatMul", ["w_t", "h"], ["ignored"]),  # no weight: not a layer
         helper.make_node("MatMul", ["h", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["p"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (2, 4)),
              helper.make_tensor_value_info("w_t", TensorProto.FLOAT, (3, 2))],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, (2, 3))], [weight])
    assert feature_tensor(helper.make_model(graph)) == "h"
    no_linear = helper.make_graph([helper.make_node("Relu", ["x"], ["p"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, (2,))],
                                  [helper.make_tensor_value_info("p", TensorProto.FLOAT, (2,))])
    with pytest.raises(ValueError):
        feature_tensor(helper.make_model(no_linear))


def test_frechet_distance_matches_closed_forms() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 16)) @ rng.normal(size=(16, 16))  # correlated features
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shift = rng.normal(size=16)
    # A translation only moves the mean: distance = |shift|^2.
    assert frechet_distance(a + shift, a) == pytest.approx(float(shift @ shift), rel=1e-6)
    # Scaling by c: covariance c^2 S, distance = (1 - c)^2 tr(S) (+ mean term).
    centred = a - a.mean(0)
    expected = (1 - 1.5) ** 2 * float(np.trace(np.cov(centred, rowvar=False)))
    assert frechet_distance(1.5 * centred, centred) == pytest.approx(expected, rel=1e-6)
    # Symmetric, and precomputed statistics give the same figure.
    b = rng.normal(size=(1500, 16))
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-6)
    assert frechet_distance(a, gaussian_stats(b)) == pytest.approx(frechet_distance(a, b))
    assert frechet_distance(b, a) > 1.0
