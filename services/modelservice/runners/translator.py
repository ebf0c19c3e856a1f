"""The translator as a model service runs it: `text` BYTES [N] -> `translation` BYTES [N], `score` FP32 [N].

Selected by the config parameter `runner: "translator"`. The search (sentencepiece, encoder,
batched beam search over the decoder step) is services.translation's, the code the training job
evaluated; this class only adapts it to the batch-of-tensors interface of `Model`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from services.modelservice.runners.base import Model, choose_providers
from services.repository import ModelSpec
from services.settings import ModelServiceSettings
from services.translation import OnnxStepModel, Translator

log = logging.getLogger(__name__)


class TranslatorModel(Model):
    def __init__(self, spec: ModelSpec, settings: ModelServiceSettings) -> None:
        self.spec = spec
        providers = choose_providers(settings.device)
        self.translator = Translator(spec.path, providers, settings.intra_op_threads)
        if isinstance(self.translator.model, OnnxStepModel):
            self.provider = self.translator.model.decoder.get_providers()[0]
        # Defaults from the config; a request may pick its own beam_size (validation.INT_OPTIONS).
        self.beam_size = int(spec.parameters.get("beam_size", "5"))
        self.alpha = float(spec.parameters.get("alpha", "0.6"))
        self.max_output_len = int(spec.parameters.get("max_output_len", "160"))
        log.info("translator %s v%s on %s, beam %d, alpha %.2f", spec.name, spec.version, self.provider,
                 self.beam_size, self.alpha)

    def run(self, inputs: dict[str, np.ndarray], outputs: Sequence[str],
            options: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
        texts = inputs["text"].reshape(-1)  # (N,) of bytes
        # Invalid UTF-8 is replaced (U+FFFD), not fatal: one bad sentence must not fail its batch.
        sentences = [t.decode("utf-8", errors="replace") if isinstance(t, bytes) else str(t) for t in texts]
        beam_size = int((options or {}).get("beam_size", self.beam_size))
        results = self.translator.translate(sentences, beam_size=beam_size, alpha=self.alpha,
                                            max_output_len=self.max_output_len)
        translation = np.empty(len(results), dtype=object)
        translation[:] = [text.encode("utf-8") for text, _ in results]
        return {"translation": translation, "score": np.array([s for _, s in results], dtype=np.float32)}

    def warmup(self) -> None:
        self.run({"text": np.array([b"Guten Morgen."], dtype=object)}, ["translation", "score"])
