"""German -> English translation around two ONNX graphs: sentencepiece encode,
`encoder.onnx`, greedy or beam search over `decoder_step.onnx`, decode.

The search is plain numpy over a `StepModel` (encode + one decoder step), so the training job
runs the very same code over its PyTorch model to show that the ONNX path loses nothing. Its
math lives in search.py (one vectorised step for every running sentence), the
running batch in scheduler.py: `Translator.translate` queues all sentences at
once, shortest first, and the model service feeds the same scheduler as requests arrive. All
live beams of all running sentences go through one decoder call per time step; a sentence
leaves the batch the step it is done.

Scores are length-normalised log-probabilities (GNMT / Sockeye):
    score = sum(log p(token)) / ((5 + length) / 6) ** alpha
with `length` counting the target tokens including the end-of-sentence one; the search rule
(fairseq's for finished hypotheses, beam size 1 being greedy search, EOS forced at the length
limit) is written down in search.py. The limit of a sentence is
min(max_target_len, 2 * its source tokens (EOS included) + 10, max_output_len).

The model folder holds encoder.onnx, decoder_step.onnx, sentencepiece.model
and manifest.json (names, state layout, special ids, the tokenizer's SHA-256).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import sentencepiece as spm

from services.modelservice.runners.translator.fold import fold_checked
from services.modelservice.runners.translator.int8 import int8_checked
from services.modelservice.runners.translator.rows import HostRows, Rows
from services.modelservice.runners.translator.scheduler import Scheduler, Sentence
from services.modelservice.runners.translator.search import (NEG_INF, Arrays, Hypothesis, StepModel,
                                                          length_penalty, search_limit)

log = logging.getLogger(__name__)

__all__ = ["NEG_INF", "Arrays", "Hypothesis", "OnnxStepModel", "StepModel", "Translator",
           "beam_search", "greedy_search", "length_penalty", "search_limit", "sha256_of"]


def beam_search(model: StepModel, src: np.ndarray, src_mask: np.ndarray, beam_size: int,
                max_len: int, alpha: float) -> list[Hypothesis]:
    """Beam search over a padded batch, src (B, S) and src_mask (B, S), every sentence limited
    to `max_len` steps; the best finished hypothesis per sentence."""
    if beam_size < 1:
        raise ValueError("beam_size must be >= 1")
    sentences = [Sentence(row[mask > 0].tolist(), beam_size, max_len, owner=i)
                 for i, (row, mask) in enumerate(zip(src, src_mask))]
    scheduler = Scheduler(HostRows(model), model.bos_id, model.eos_id, pad_id=0, alpha=alpha,
                          max_len=max_len, max_sentences=len(sentences), max_tokens=2**62)
    return [hyp for _, hyp in sorted(run_to_end(scheduler, sentences), key=lambda r: r[0].owner)]


def greedy_search(model: StepModel, src: np.ndarray, src_mask: np.ndarray, max_len: int,
                  alpha: float) -> list[Hypothesis]:
    """The most likely token at each step: beam search with one beam."""
    return beam_search(model, src, src_mask, 1, max_len, alpha)


def run_to_end(scheduler: Scheduler, sentences: Sequence[Sentence]
               ) -> list[tuple[Sentence, Hypothesis]]:
    """Queue all sentences and step until every one is done (the first failure is raised)."""
    for sentence in sentences:
        scheduler.add(sentence)
    results: list[tuple[Sentence, Hypothesis]] = []
    while scheduler.busy:
        outcome = scheduler.step()
        if outcome.failed:
            raise outcome.failed[0][1]
        results += outcome.done
    return results


class OnnxStepModel:
    """StepModel over encoder.onnx and decoder_step.onnx, as the manifest names them."""

    def __init__(self, model_dir: Path, manifest: dict[str, Any], providers: list[str],
                 options: ort.SessionOptions, fold: bool = True, int8: bool = False) -> None:
        """`fold`: the decoder with the embedding's share of its input projection precomputed
        (fold.py), when it agrees with the original graph on a probe; `int8`: its weight
        products in int8 with a scale per row (int8.py; CPU only, where its probe passes)."""
        self.model_dir, self.manifest = model_dir, manifest
        self.providers, self.session_options = providers, options
        self.encoder = ort.InferenceSession(str(model_dir / manifest["encoder"]["file"]),
                                            sess_options=options, providers=providers)
        graph = onnx.load(str(model_dir / manifest["decoder_step"]["file"]))
        self.decoder_graph, probed = fold_checked(graph, options) if fold else (graph, None)
        self.folded = self.decoder_graph is not graph
        self.int8 = False
        if int8 and providers != ["CPUExecutionProvider"]:
            log.warning("decoder: int8 is for the CPU; %s serves the float graph", providers[0])
        elif int8:
            chosen, probed = int8_checked(self.decoder_graph, options, probed)
            self.int8 = chosen is not self.decoder_graph
            self.decoder_graph = chosen  # probed: a CPU session of the graph chosen, or None
        if probed is not None and providers == ["CPUExecutionProvider"]:
            self.decoder = probed  # the probe's session: same graph, options and provider
        else:
            self.decoder = ort.InferenceSession(self.decoder_graph.SerializeToString(),
                                                sess_options=options, providers=providers)
        special = manifest["special_ids"]
        self.bos_id, self.eos_id = int(special["bos"]), int(special["eos"])
        self.state_axes = {s["name"]: int(s["batch_axis"]) for s in manifest["states"]}
        self.state_outputs = {s["name"]: s["output"] for s in manifest["states"]}
        self.context_names = list(manifest["decoder_step"]["context_inputs"])
        self.encoder_outputs = [o.name for o in self.encoder.get_outputs()]

    def encode(self, src: np.ndarray, src_mask: np.ndarray) -> tuple[Arrays, Arrays]:
        results = self.encoder.run(None, {"src": src, "src_mask": src_mask})
        out = dict(zip(self.encoder_outputs, results))
        context = {name: out[name] for name in self.context_names if name != "src_mask"}
        context["src_mask"] = src_mask
        return context, {name: out[name] for name in self.state_axes}

    def step(self, prev: np.ndarray, states: Arrays, context: Arrays) -> tuple[np.ndarray, Arrays]:
        names = ["log_probs", *self.state_outputs.values()]
        results = self.decoder.run(names, {"prev_token": prev, **states, **context})
        new_states = dict(zip(self.state_outputs, results[1:]))
        log_probs: np.ndarray = results[0]
        return log_probs, new_states


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def thread_options(threads: int) -> ort.SessionOptions:
    """Session options for `threads` intra-op threads (0: ONNX Runtime decides); the model
    service passes its own (services.modelservice.runners.base.session_options)."""
    options = ort.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


class Translator:
    """German sentences in, English sentences and scores out."""

    def __init__(self, model_dir: Path, providers: list[str] | None = None, threads: int = 0,
                 model: StepModel | None = None, session_options: ort.SessionOptions | None = None,
                 io_binding: bool = False, fold: bool = True, int8: bool = False) -> None:
        """`model` replaces the ONNX graphs (the training job passes its PyTorch model);
        `session_options` replaces `threads`; `io_binding` keeps the decoder's inputs on the
        execution provider's device between steps (device.py; ONNX graphs only); `fold`
        precomputes the embedding's share of the decoder's input projection (fold.py); `int8`
        runs the decoder's weight products in int8 (int8.py)."""
        self.model_dir = Path(model_dir)
        self.manifest: dict[str, Any] = json.loads((self.model_dir / "manifest.json").read_text())
        spm_info = self.manifest["sentencepiece"]
        spm_path = self.model_dir / spm_info["file"]
        if sha256_of(spm_path) != spm_info["sha256"]:
            raise ValueError(f"{spm_path}: sha256 differs from the manifest's")
        self.tokenizer = spm.SentencePieceProcessor()
        self.tokenizer.Load(str(spm_path))
        self.eos_id = int(self.manifest["special_ids"]["eos"])
        self.pad_id = int(self.manifest["special_ids"]["pad"])
        self.max_source_len = int(self.manifest["max_source_len"])
        self.max_target_len = int(self.manifest["max_target_len"])
        self.default_alpha = float(self.manifest.get("search", {}).get("default_alpha", 0.6))
        self.model: StepModel = model if model is not None else OnnxStepModel(
            self.model_dir, self.manifest, providers or ["CPUExecutionProvider"],
            session_options or thread_options(threads), fold, int8)
        if io_binding and not isinstance(self.model, OnnxStepModel):
            raise ValueError("io_binding needs the ONNX graphs")
        self.io_binding = io_binding
        self._bound_graphs: Any = None  # device.BoundGraphs, built on first use

    def source_ids(self, sentence: str) -> list[int]:
        """Token ids + EOS, truncated to max_source_len."""
        return list(self.tokenizer.EncodeAsIds(sentence))[:self.max_source_len - 1] + [self.eos_id]

    def limit(self, ids: Sequence[int], max_output_len: int | None = None) -> int:
        return search_limit(len(ids), self.max_target_len, max_output_len)

    def encode_batch(self, sentences: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids + EOS, truncated to max_source_len, padded: (B, S) ids and mask."""
        ids = [self.source_ids(s) for s in sentences]
        width = max(len(i) for i in ids)
        src = np.full((len(ids), width), self.pad_id, dtype=np.int64)
        for row, seq in enumerate(ids):
            src[row, :len(seq)] = seq
        return src, (src != self.pad_id).astype(np.float32)

    def rows(self) -> Rows:
        """A fresh store for a running batch's decoder inputs."""
        if self.io_binding:
            # only if asked
            from services.modelservice.runners.translator.device import BoundGraphs, BoundRows

            assert isinstance(self.model, OnnxStepModel)
            if self._bound_graphs is None:
                self._bound_graphs = BoundGraphs(self.model)
            return BoundRows(self.model, self._bound_graphs)
        return HostRows(self.model)

    def scheduler(self, alpha: float, max_sentences: int, max_tokens: int) -> Scheduler:
        """A running batch over this translator's model (see scheduler.py)."""
        return Scheduler(self.rows(), self.model.bos_id, self.model.eos_id, self.pad_id, alpha,
                         self.max_target_len, max_sentences, max_tokens)

    def translate(self, sentences: Sequence[str], beam_size: int = 5, alpha: float | None = None,
                  max_output_len: int | None = None, batch_size: int = 32,
                  max_tokens: int | None = None) -> list[tuple[str, float]]:
        """(English text, length-normalised log-probability) per German sentence;
        beam_size 1 is greedy search; alpha defaults to the manifest's (chosen on validation).
        At most `batch_size` sentences (and `max_tokens` beams x source tokens) decode at once,
        the shortest first, a waiting one joining whenever a running one is done."""
        if not sentences:
            return []
        if beam_size < 1:
            raise ValueError("beam_size must be >= 1")
        alpha = self.default_alpha if alpha is None else alpha
        ids = [self.source_ids(s) for s in sentences]
        order = sorted(range(len(sentences)), key=lambda i: len(ids[i]))  # less padding
        queue = [Sentence(ids[i], beam_size, self.limit(ids[i], max_output_len), owner=i)
                 for i in order]
        scheduler = self.scheduler(alpha, batch_size, max_tokens or 2**62)
        results: list[tuple[str, float]] = [("", 0.0)] * len(sentences)
        for sentence, hyp in run_to_end(scheduler, queue):
            results[sentence.owner] = (self.tokenizer.DecodeIds(hyp.tokens), hyp.score)
        return results
