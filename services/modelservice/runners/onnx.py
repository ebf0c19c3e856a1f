"""The generic runner: any plain ONNX graph whose inputs and outputs are the config's.

One ONNX Runtime session per model instance (`instance_group` counts in the config), so up to
that many batches run at once, each on a session of its own.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Mapping, Sequence

import numpy as np
import onnxruntime as ort

from services.modelservice.runners.base import Model, choose_providers, session_options
from services.repository import ModelSpec
from services.settings import ModelServiceSettings
from services.tensors import DTYPES

log = logging.getLogger(__name__)


class OnnxModel(Model):
    # Config inputs this runner turns into graph inputs itself in `prepare` (e.g. encoded images):
    # they need not be graph inputs, and warmup does not feed them to the graph.
    consumed_inputs: frozenset[str] = frozenset()

    def __init__(self, spec: ModelSpec, settings: ModelServiceSettings) -> None:
        self.spec = spec
        options = session_options(settings)
        providers = choose_providers(settings.device)
        self.sessions = [ort.InferenceSession(str(spec.model_file), sess_options=options, providers=providers)
                         for _ in range(spec.instance_count)]
        self._free: queue.SimpleQueue[ort.InferenceSession] = queue.SimpleQueue()
        for session in self.sessions:
            self._free.put(session)
        session = self.sessions[0]
        self.provider = session.get_providers()[0]
        log.info("model %s v%s on %s (asked for %s), %d instance(s), %d intra-op thread(s), spinning %s",
                 spec.name, spec.version, self.provider, providers, len(self.sessions),
                 options.intra_op_num_threads, "on" if settings.ort_spinning else "off")
        graph_inputs = {i.name for i in session.get_inputs()}
        graph_outputs = {o.name for o in session.get_outputs()}
        for t in spec.inputs:
            if t.name not in graph_inputs and t.name not in self.consumed_inputs:
                raise ValueError(f"{spec.model_file}: config input '{t.name}' is not a graph input {sorted(graph_inputs)}")
        for t in spec.outputs:
            if t.name not in graph_outputs:
                raise ValueError(f"{spec.model_file}: config output '{t.name}' is not a graph output {sorted(graph_outputs)}")

    @property
    def session(self) -> ort.InferenceSession:
        return self.sessions[0]

    def run(self, inputs: dict[str, np.ndarray], outputs: Sequence[str],
            options: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
        session = self._free.get()  # one batch per session at a time; executor threads <= instances
        try:
            results = session.run(list(outputs), inputs)
        finally:
            self._free.put(session)
        return dict(zip(outputs, results))

    def warmup(self) -> None:
        outputs = [o.name for o in self.spec.outputs]
        for rows in sorted({1, max(1, self.spec.max_batch_size)}):
            feed = {}
            for t in self.spec.inputs:
                if t.name in self.consumed_inputs:
                    continue
                shape = [rows if d == -1 and i == 0 else max(d, 1) for i, d in enumerate(t.model_shape)]
                feed[t.name] = np.zeros(shape, dtype=DTYPES[t.datatype])
            for session in self.sessions:  # before serving, so no batch competes for them
                session.run(outputs, feed)
