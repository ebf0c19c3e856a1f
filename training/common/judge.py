"""A shipped digit classifier used as a judge of generated images.

`Judge(onnx_path)` runs a classifier of the `mnist_mlp` / `mnist_cnn`
contract (`image` FP32 (N, 1, 28, 28) in 0..1 -> `probabilities` (N, 10))
with ONNX Runtime. It also exposes the classifier's penultimate features:
the activation input of the last MatMul/Gemm with a weight initializer (the
final linear layer before the softmax) is added as an extra graph output in
memory, so one run yields both. `frechet_distance` compares two feature sets
as Gaussians (FID, but with the judge's features instead of Inception's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

_LINEAR_OPS = ("Gemm", "MatMul")


def feature_tensor(model: onnx.ModelProto) -> str:
    """Name of the input of the graph's last linear layer (its activation,
    not its weight). Nodes of an ONNX graph are in topological order."""
    weights = {t.name for t in model.graph.initializer}
    for node in reversed(model.graph.node):
        if node.op_type in _LINEAR_OPS:
            activations = [name for name in node.input[:2] if name not in weights]
            if len(activations) == 1 and any(name in weights for name in node.input[:2]):
                return activations[0]
    raise ValueError("no MatMul/Gemm with one weight initializer in the graph")


class Judge:
    """Probabilities and penultimate features of an ONNX digit classifier."""

    def __init__(self, onnx_path: Path, threads: int = 1, batch_size: int = 500) -> None:
        model = onnx.load(str(onnx_path))
        self.path = Path(onnx_path)
        self.feature_name = feature_tensor(model)
        self.input_name = model.graph.input[0].name
        self.output_name = model.graph.output[0].name
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(self.feature_name))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model.SerializeToString(), options,
                                            providers=["CPUExecutionProvider"])
        self.batch_size = batch_size

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """images float32 (N, 1, 28, 28) in 0..1 -> (probabilities (N, 10), features (N, F))."""
        probabilities, features = [], []
        for start in range(0, len(images), self.batch_size):
            batch = np.ascontiguousarray(images[start:start + self.batch_size], dtype=np.float32)
            p, f = self.session.run([self.output_name, self.feature_name], {self.input_name: batch})
            probabilities.append(p)
            features.append(f.reshape(len(batch), -1))
        return np.concatenate(probabilities), np.concatenate(features)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        return self.run(images)[0]

    def features(self, images: np.ndarray) -> np.ndarray:
        return self.run(images)[1]


def agreement(probabilities: np.ndarray, digits: np.ndarray) -> float:
    """Share of images the judge assigns to the digit they were asked to show."""
    return float(np.mean(probabilities.argmax(axis=1) == digits))


@dataclass
class GaussianStats:
    """Mean (F,) and covariance (F, F) in float64 of a feature set; the
    covariance's square root is computed once, when first needed."""

    mean: np.ndarray
    cov: np.ndarray
    _root: np.ndarray | None = field(default=None, repr=False)

    @property
    def root(self) -> np.ndarray:
        if self._root is None:
            values, vectors = np.linalg.eigh((self.cov + self.cov.T) / 2)
            self._root = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
        return self._root


def gaussian_stats(features: np.ndarray) -> GaussianStats:
    x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    return GaussianStats(x.mean(axis=0), np.cov(x, rowvar=False))


def frechet_distance(a: np.ndarray | GaussianStats, b: np.ndarray | GaussianStats) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, F)
    (or their GaussianStats; pass a fixed reference as `b`, its square root
    is then reused):

        |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))

    tr((S_a S_b)^(1/2)) = tr((S_b^(1/2) S_a S_b^(1/2))^(1/2)), the root of a
    symmetric positive semi-definite matrix, so eigh suffices (no scipy)."""
    a = a if isinstance(a, GaussianStats) else gaussian_stats(a)
    b = b if isinstance(b, GaussianStats) else gaussian_stats(b)
    middle = b.root @ a.cov @ b.root
    values = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = float(np.sqrt(np.clip(values, 0.0, None)).sum())
    distance = float(np.sum((a.mean - b.mean) ** 2) + np.trace(a.cov) + np.trace(b.cov)
                     - 2 * trace_sqrt)
    return max(distance, 0.0)
