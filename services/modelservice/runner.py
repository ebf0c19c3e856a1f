"""ONNX Runtime sessions: provider choice, threads, warm-up, one call per batch.

The generic runner serves any plain ONNX graph whose inputs and outputs are the config's.
Models that need pre/post-processing around ONNX (tokenizers, search loops) subclass
`Model` and are picked by the config parameter `runner`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import onnxruntime as ort

from services.repository import ModelSpec
from services.settings import ModelServiceSettings
from services.tensors import DTYPES

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def choose_providers(device: str, available: Sequence[str] | None = None) -> list[str]:
    """CUDA first when asked for or (auto) when ONNX Runtime offers it; CPU always as fallback."""
    available = list(available if available is not None else ort.get_available_providers())
    if device == "cuda":
        if CUDA not in available:
            raise RuntimeError(f"device=cuda but ONNX Runtime offers only {available} (install onnxruntime-gpu)")
        return [CUDA, CPU]
    if device == "auto" and CUDA in available:
        return [CUDA, CPU]
    return [CPU]


class Model:
    """Interface of everything a model service can run."""

    provider: str = CPU

    def run(self, inputs: dict[str, np.ndarray], outputs: Sequence[str],
            options: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
        """One batch: inputs by name (batch first) -> the named outputs. `options` are the
        request parameters the model takes (validation.INT_OPTIONS), equal for the whole batch."""
        raise NotImplementedError

    def warmup(self) -> None:
        """Run once before reporting ready, so the first request pays no lazy initialisation."""


class OnnxModel(Model):
    def __init__(self, spec: ModelSpec, settings: ModelServiceSettings) -> None:
        self.spec = spec
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.intra_op_threads
        options.inter_op_num_threads = settings.inter_op_threads
        providers = choose_providers(settings.device)
        self.session = ort.InferenceSession(str(spec.model_file), sess_options=options, providers=providers)
        self.provider = self.session.get_providers()[0]
        log.info("model %s v%s on %s (asked for %s)", spec.name, spec.version, self.provider, providers)
        graph_inputs = {i.name for i in self.session.get_inputs()}
        graph_outputs = {o.name for o in self.session.get_outputs()}
        for t in spec.inputs:
            if t.name not in graph_inputs:
                raise ValueError(f"{spec.model_file}: config input '{t.name}' is not a graph input {sorted(graph_inputs)}")
        for t in spec.outputs:
            if t.name not in graph_outputs:
                raise ValueError(f"{spec.model_file}: config output '{t.name}' is not a graph output {sorted(graph_outputs)}")

    def run(self, inputs: dict[str, np.ndarray], outputs: Sequence[str],
            options: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
        results = self.session.run(list(outputs), inputs)
        return dict(zip(outputs, results))

    def warmup(self) -> None:
        sizes = {1, max(1, self.spec.max_batch_size)}
        for rows in sorted(sizes):
            feed = {}
            for t in self.spec.inputs:
                shape = [rows if d == -1 and i == 0 else max(d, 1) for i, d in enumerate(t.model_shape)]
                feed[t.name] = np.zeros(shape, dtype=DTYPES[t.datatype])
            self.run(feed, [o.name for o in self.spec.outputs])


def load_model(spec: ModelSpec, settings: ModelServiceSettings) -> Model:
    runner = spec.parameters.get("runner", "onnx")
    if runner == "onnx":
        return OnnxModel(spec, settings)
    if runner == "translator":
        from services.modelservice.translator import TranslatorModel  # imports sentencepiece

        return TranslatorModel(spec, settings)
    raise ValueError(f"model '{spec.name}': unknown runner '{runner}'")
