"""The generic runner: any plain ONNX graph whose inputs and outputs are the config's.

One ONNX Runtime session per model instance (`instance_group` counts in the config), so up to
that many batches run at once, each on a session of its own. Graphs from anywhere
(`tensorgate import-model`) come through here: string tensors, and dims the config leaves
dynamic (-1), which warmup has to guess.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Mapping, Sequence

import numpy as np
import onnxruntime as ort

from tensorgate.errors import InvalidArgument
from services.modelservice.runners.base import Model, choose_providers, session_options
from tensorgate.repository import ModelSpec, TensorSpec
from services.settings import ModelServiceSettings
from tensorgate.tensors import DTYPES

log = logging.getLogger(__name__)

# Sizes warmup gives the dims the config leaves dynamic, tried in turn: 1 is cheapest, but a
# conv net may want more pixels than its kernels and strides eat (32: a detector's stride).
WARMUP_SIZES = (1, 32)


class OnnxModel(Model):
    # Config inputs this runner turns into graph inputs itself in `prepare` (e.g. encoded images):
    # they need not be graph inputs, and warmup does not feed them to the graph.
    consumed_inputs: frozenset[str] = frozenset()

    def __init__(self, spec: ModelSpec, settings: ModelServiceSettings) -> None:
        self.spec = spec
        options = session_options(settings, spec.parameters)
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
        # ONNX Runtime's Python binding takes str for string tensors (bytes become "b'...'").
        self._text_inputs = frozenset(i.name for i in session.get_inputs() if i.type == "tensor(string)")
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

    def prepare(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """BYTES inputs of string graph inputs as str (UTF-8), the form ONNX Runtime takes."""
        if not self._text_inputs.intersection(inputs):
            return inputs
        prepared = dict(inputs)
        for name in self._text_inputs.intersection(inputs):
            flat = inputs[name].reshape(-1)
            text = np.empty(flat.shape, dtype=object)
            for i, item in enumerate(flat):
                try:
                    text[i] = item.decode("utf-8") if isinstance(item, bytes) else str(item)
                except UnicodeDecodeError as err:
                    raise InvalidArgument(f"input '{name}': element {i} is not valid UTF-8 "
                                          f"(byte {err.start}: {err.reason})") from None
            prepared[name] = text.reshape(inputs[name].shape)
        return prepared

    def _warmup_feed(self, rows: int, size: int) -> dict[str, np.ndarray]:
        """Zeros for every graph input: `rows` in the batch dim, `size` in the other dynamic dims."""
        def shape(t: TensorSpec) -> list[int]:
            return [rows if d == -1 and i == 0 else (size if d == -1 else d) for i, d in enumerate(t.model_shape)]

        return {t.name: np.full(shape(t), "", dtype=object) if t.datatype == "BYTES"
                else np.zeros(shape(t), dtype=DTYPES[t.datatype])
                for t in self.spec.inputs if t.name not in self.consumed_inputs}

    def warmup(self) -> None:
        """One run per batch size 1 and max_batch_size on every session. A graph with dynamic dims
        may refuse every size warmup guesses (a detector wanting multiples of 64, ...): that is
        logged and warmup skipped, since real requests bring sizes the graph takes. A fully
        static graph that fails is broken, and the service refuses to start."""
        outputs = [o.name for o in self.spec.outputs]
        dynamic = any(d == -1 for t in self.spec.inputs if t.name not in self.consumed_inputs
                      for d in t.model_shape[1:])
        for rows in sorted({1, max(1, self.spec.max_batch_size)}):
            for size in WARMUP_SIZES if dynamic else WARMUP_SIZES[:1]:
                feed = self._warmup_feed(rows, size)
                try:
                    for session in self.sessions:  # before serving, so no batch competes for them
                        session.run(outputs, feed)
                    break
                except Exception as err:  # ONNX Runtime's own error types (Fail, InvalidArgument, ...)
                    if not dynamic:
                        raise
                    failure = f"{type(err).__name__}: {err}"
            else:
                log.warning("model %s: warmup skipped, the graph took none of the sizes %s for its dynamic dims "
                            "(last: %s); the first requests pay for the lazy initialisation",
                            self.spec.name, WARMUP_SIZES, failure)
                return
