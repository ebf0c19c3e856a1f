"""German -> English translation around two ONNX graphs: sentencepiece encode,
`encoder.onnx`, greedy or beam search over `decoder_step.onnx`, decode.

The search is plain numpy over a `StepModel` (encode + one decoder step), so
the training job runs the very same code over its PyTorch model to show
that the ONNX path loses nothing. All beams of all sentences of a batch go
through one decoder call per time step.

Scores are length-normalised log-probabilities (GNMT / Sockeye):
    score = sum(log p(token)) / ((5 + length) / 6) ** alpha
with `length` counting the target tokens including the end-of-sentence one.
Beam search takes the 2k best continuations per sentence: those among the
best k that end in EOS become finished hypotheses, the best k not ending in
EOS stay in the beam (so beam size 1 is greedy search); a
sentence is done when it has k finished hypotheses (fairseq's rule) or the
length limit is reached (then EOS is forced).

The model folder holds encoder.onnx, decoder_step.onnx, sentencepiece.model
and manifest.json (names, state layout, special ids, the tokenizer's SHA-256).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort
import sentencepiece as spm

Arrays = dict[str, np.ndarray]
NEG_INF = np.float32(-1e30)


def length_penalty(length: np.ndarray | int, alpha: float) -> np.ndarray:
    """GNMT's ((5 + length) / 6) ** alpha."""
    return np.power((5.0 + np.asarray(length, dtype=np.float64)) / 6.0, alpha)


class StepModel(Protocol):
    """What the search needs from a model, in numpy."""

    eos_id: int
    bos_id: int
    # decoder state name -> its batch axis, e.g. {"state_h": 1, "state_c": 1, "feed": 0}
    state_axes: dict[str, int]

    def encode(self, src: np.ndarray, src_mask: np.ndarray) -> tuple[Arrays, Arrays]:
        """src (B, S) int64, src_mask (B, S) float32 -> (context, initial states).
        Context arrays (memory, keys, src_mask) have the batch on axis 0."""
        ...

    def step(self, prev: np.ndarray, states: Arrays, context: Arrays) -> tuple[np.ndarray, Arrays]:
        """prev (N,) int64 -> log-probabilities (N, V) float32 and the next states."""
        ...


@dataclass(frozen=True)
class Hypothesis:
    tokens: list[int]  # without BOS and EOS
    score: float  # length-normalised log-probability


def _take(states: Arrays, axes: dict[str, int], rows: np.ndarray) -> Arrays:
    return {name: np.take(value, rows, axis=axes[name]) for name, value in states.items()}


def greedy_search(model: StepModel, src: np.ndarray, src_mask: np.ndarray, max_len: int,
                  alpha: float) -> list[Hypothesis]:
    """Most likely token at each step, all sentences of the batch at once."""
    context, states = model.encode(src, src_mask)
    batch = src.shape[0]
    prev = np.full(batch, model.bos_id, dtype=np.int64)
    total = np.zeros(batch, dtype=np.float64)
    lengths = np.zeros(batch, dtype=np.int64)
    done = np.zeros(batch, dtype=bool)
    tokens: list[list[int]] = [[] for _ in range(batch)]
    for t in range(max_len):
        log_probs, states = model.step(prev, states, context)  # (B, V)
        if t == max_len - 1:  # the limit: end every sentence now
            keep = log_probs[:, model.eos_id].copy()
            log_probs = np.full_like(log_probs, NEG_INF)
            log_probs[:, model.eos_id] = keep
        best = log_probs.argmax(axis=1)
        for b in np.flatnonzero(~done):
            total[b] += float(log_probs[b, best[b]])
            lengths[b] += 1
            if best[b] == model.eos_id:
                done[b] = True
            else:
                tokens[b].append(int(best[b]))
        if done.all():
            break
        prev = best.astype(np.int64)
    scores = total / length_penalty(lengths, alpha)
    return [Hypothesis(tokens[b], float(scores[b])) for b in range(batch)]


def beam_search(model: StepModel, src: np.ndarray, src_mask: np.ndarray, beam_size: int,
                max_len: int, alpha: float) -> list[Hypothesis]:
    """Beam search over the whole batch; returns the best finished hypothesis per sentence."""
    if beam_size < 1:
        raise ValueError("beam_size must be >= 1")
    k = beam_size
    context, states = model.encode(src, src_mask)
    batch = src.shape[0]
    # Every sentence's rows repeated k times: row b * k + j is beam j of sentence b.
    rows = np.repeat(np.arange(batch), k)
    context = {name: value[rows] for name, value in context.items()}
    states = _take(states, model.state_axes, rows)
    scores = np.full((batch, k), NEG_INF, dtype=np.float64)
    scores[:, 0] = 0.0  # only beam 0 is live at the start, so no duplicates
    history = np.zeros((batch, k, 0), dtype=np.int64)
    prev = np.full(batch * k, model.bos_id, dtype=np.int64)
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    done = np.zeros(batch, dtype=bool)
    for t in range(max_len):
        log_probs, states = model.step(prev, states, context)  # (B k, V)
        vocab = log_probs.shape[1]
        if t == max_len - 1:
            keep = log_probs[:, model.eos_id].copy()
            log_probs = np.full_like(log_probs, NEG_INF)
            log_probs[:, model.eos_id] = keep
        candidates = (scores[:, :, None] + log_probs.reshape(batch, k, vocab)).reshape(batch, -1)
        width = min(2 * k, candidates.shape[1])
        top = np.argpartition(-candidates, width - 1, axis=1)[:, :width]  # (B, 2k)
        order = np.argsort(-np.take_along_axis(candidates, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        beam_of, token_of = top // vocab, top % vocab
        top_scores = np.take_along_axis(candidates, top, axis=1)
        next_beam = np.zeros((batch, k), dtype=np.int64)
        next_token = np.full((batch, k), model.eos_id, dtype=np.int64)
        next_scores = np.full((batch, k), NEG_INF, dtype=np.float64)
        for b in range(batch):
            if done[b]:
                continue
            live = 0
            for j in range(width):
                score = float(top_scores[b, j])
                if score <= NEG_INF / 2:
                    break
                if token_of[b, j] == model.eos_id:
                    # As fairseq: only an EOS among the k best finishes a hypothesis.
                    if j < k and len(finished[b]) < k:
                        tokens = history[b, beam_of[b, j]].tolist()
                        normed = score / float(length_penalty(t + 1, alpha))
                        finished[b].append(Hypothesis(tokens, normed))
                elif live < k:
                    next_beam[b, live], next_token[b, live] = beam_of[b, j], token_of[b, j]
                    next_scores[b, live] = score
                    live += 1
            if len(finished[b]) >= k or live == 0:
                done[b] = True
        if done.all():
            break
        history = np.concatenate([np.take_along_axis(history, next_beam[:, :, None], axis=1),
                                  next_token[:, :, None]], axis=2)
        scores = next_scores
        states = _take(states, model.state_axes,
                       (np.arange(batch)[:, None] * k + next_beam).reshape(-1))
        prev = next_token.reshape(-1)
    return [max(hyps, key=lambda h: h.score) if hyps else Hypothesis([], float(NEG_INF))
            for hyps in finished]


class OnnxStepModel:
    """StepModel over encoder.onnx and decoder_step.onnx, as the manifest names them."""

    def __init__(self, model_dir: Path, manifest: dict[str, Any], providers: list[str],
                 threads: int) -> None:
        options = ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.encoder = ort.InferenceSession(str(model_dir / manifest["encoder"]["file"]),
                                            sess_options=options, providers=providers)
        self.decoder = ort.InferenceSession(str(model_dir / manifest["decoder_step"]["file"]),
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


class Translator:
    """German sentences in, English sentences and scores out."""

    def __init__(self, model_dir: Path, providers: list[str] | None = None, threads: int = 0,
                 model: StepModel | None = None) -> None:
        """`model` replaces the ONNX graphs (the training job passes its PyTorch model)."""
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
            self.model_dir, self.manifest, providers or ["CPUExecutionProvider"], threads)

    def encode_batch(self, sentences: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids + EOS, truncated to max_source_len, padded: (B, S) ids and mask."""
        ids = [list(self.tokenizer.EncodeAsIds(s))[:self.max_source_len - 1] + [self.eos_id]
               for s in sentences]
        width = max(len(i) for i in ids)
        src = np.full((len(ids), width), self.pad_id, dtype=np.int64)
        for row, seq in enumerate(ids):
            src[row, :len(seq)] = seq
        return src, (src != self.pad_id).astype(np.float32)

    def translate(self, sentences: Sequence[str], beam_size: int = 5, alpha: float | None = None,
                  max_output_len: int | None = None, batch_size: int = 32
                  ) -> list[tuple[str, float]]:
        """(English text, length-normalised log-probability) per German sentence;
        beam_size 1 is greedy search; alpha defaults to the manifest's (chosen on validation)."""
        if not sentences:
            return []
        alpha = self.default_alpha if alpha is None else alpha
        lengths = [len(self.tokenizer.EncodeAsIds(s)) for s in sentences]
        order = sorted(range(len(sentences)), key=lambda i: lengths[i])  # less padding
        results: list[tuple[str, float]] = [("", 0.0)] * len(sentences)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            src, mask = self.encode_batch([sentences[i] for i in chunk])
            limit = min(self.max_target_len, 2 * src.shape[1] + 10)
            if max_output_len is not None:
                limit = min(limit, max_output_len)
            limit = max(1, limit)
            hyps = (greedy_search(self.model, src, mask, limit, alpha) if beam_size == 1
                    else beam_search(self.model, src, mask, beam_size, limit, alpha))
            for i, hyp in zip(chunk, hyps):
                results[i] = (self.tokenizer.DecodeIds(hyp.tokens), hyp.score)
        return results
