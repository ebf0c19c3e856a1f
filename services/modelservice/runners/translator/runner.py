"""The translator as a model service runs it: `text` BYTES [N] -> `translation` BYTES [N], `score` FP32 [N].

Selected by the config parameter `runner: "translator"`. A continuous-batching runner: a
thread (decode_loop.DecodeLoop) owns a running batch (scheduler.Scheduler) and steps it as long
as anything is waiting or running; requests join it from the event loop with `infer`, and each
is answered the moment its last sentence is done, whatever else is still decoding. The search
is translator.Translator's, the code the training job evaluated.

`instance_group { count: N }` runs N decode loops, each its own thread and running batch, and
routes each request to one by its sentences' lengths (admission.LengthRouter), so short
sentences decode among short ones: the first loop takes the shortest quarter or so, the
others split the rest. The loops share the ONNX sessions (ORT allows concurrent runs on one
session; `instance_sessions: "own"` gives each loop its own). With `nice_longer_loops` the other
loops run at a lower CPU priority, so with more loops than cores the short sentences' loop gets a
core whenever it has work and the others use what is left.

Config parameters: beam_size (default per request), max_beam_size, alpha, max_output_len,
max_batch_tokens (the running batch's budget: beam x padded source tokens, summed), io_binding
(auto | true | false: decoder inputs stay on the device between steps; auto = with CUDA),
routing (length | least_loaded), short_share (length routing: the first loop takes this share of
the shortest sentences, default 0.25; 0 = bands of even work), nice_longer_loops (niceness of
every loop but the first, default 0), instance_sessions (shared | own), short_lane (off |
priority: each loop keeps a second running batch for the shortest `short_share` of the
sentences and steps it first, decode_loop.py); max_batch_size caps the running sentences of each
loop (and of each lane).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor

import numpy as np

from tensorgate.errors import InvalidArgument
from services.modelservice.runners.base import CUDA, ContinuousModel, choose_providers, session_options
from services.modelservice.runners.translator.admission import Admission, LengthRouter
from services.modelservice.runners.translator.decode_loop import DecodeLoop, Request
from services.modelservice.runners.translator.rows import HostRows
from services.modelservice.runners.translator.scheduler import Scheduler, Sentence
from services.modelservice.runners.translator.translator import OnnxStepModel, Translator, run_to_end
from tensorgate.repository import ModelSpec
from services.settings import ModelServiceSettings

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH_TOKENS = 8192  # e.g. 32 sentences x beam 5 x 51 source tokens
SHORT_LANES = ("off", "priority")
QUEUED_BATCHES = 2  # room(): requests (and sentences) waiting or running, in running batches' worth
WARMUP = ["Guten Morgen.", "Wie spät ist es?"]


def _settle(future: asyncio.Future[dict[str, np.ndarray]], request: Request) -> None:
    if future.done():  # cancelled meanwhile
        return
    if request.error is not None:
        future.set_exception(request.error)
    else:
        future.set_result(request.outputs())


def _call_in(loop: asyncio.AbstractEventLoop, fn: Callable[..., object], *args: object) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass


def _set_if_pending(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class TranslatorModel(ContinuousModel):
    PARAMETERS = ContinuousModel.PARAMETERS | {
        "beam_size", "max_beam_size", "alpha", "max_output_len", "max_input_tokens", "max_batch_tokens",
        "io_binding", "fold_input_projection", "decoder_precision", "instance_sessions", "routing",
        "short_share", "nice_longer_loops", "short_lane"}

    def __init__(self, spec: ModelSpec, settings: ModelServiceSettings,
                 translator: Translator | None = None) -> None:
        """`translator` replaces the one built from the model folder (tests inject faults);
        all loops then share it."""
        self.spec = spec
        params = spec.parameters
        providers = choose_providers(settings.device)
        io_binding = params.get("io_binding", "auto")
        if io_binding not in ("auto", "true", "false"):
            raise ValueError(f"model '{spec.name}': io_binding must be auto, true or false")
        fold = params.get("fold_input_projection", "true")
        if fold not in ("true", "false"):
            raise ValueError(f"model '{spec.name}': fold_input_projection must be true or false")
        fold_on = fold == "true"
        precision = params.get("decoder_precision", "fp32")
        if precision not in ("fp32", "int8"):
            raise ValueError(f"model '{spec.name}': decoder_precision must be fp32 or int8")
        sessions = params.get("instance_sessions", "shared")
        if sessions not in ("shared", "own"):
            raise ValueError(f"model '{spec.name}': instance_sessions must be shared or own")
        self.instances = max(1, spec.instance_count)

        options = session_options(settings, params)

        def build() -> Translator:
            return Translator(spec.path, providers, session_options=options,
                              io_binding=io_binding == "true" or (io_binding == "auto" and providers[0] == CUDA),
                              fold=fold_on, int8=precision == "int8")

        self.translator = translator or build()
        # One translator (sessions, tokenizer) per loop, or the same one for all.
        self.translators = [self.translator] + [
            self.translator if translator is not None or sessions == "shared" else build()
            for _ in range(self.instances - 1)]
        if isinstance(self.translator.model, OnnxStepModel):
            self.provider = self.translator.model.decoder.get_providers()[0]
        # Defaults from the config; a request may pick its own beam_size (validation.INT_OPTIONS).
        self.beam_size = int(params.get("beam_size", "5"))
        self.max_beam_size = int(params.get("max_beam_size", "16"))
        # Source tokens a sentence may have (EOS not counted); the encoder takes max_source_len.
        self.max_input_tokens = int(params.get("max_input_tokens", str(self.translators[0].max_source_len - 1)))
        self.alpha = float(params.get("alpha", "0.6"))
        self.max_output_len = int(params.get("max_output_len", "160"))
        self.max_sentences = spec.max_batch_size or 32
        self.max_tokens = int(params.get("max_batch_tokens", str(DEFAULT_MAX_BATCH_TOKENS)))
        # Lower CPU priority for every loop but the first (the shortest sentences'): with more
        # loops than cores, the short loop gets a core whenever it has work.
        self.nice = int(params.get("nice_longer_loops", "0"))
        self.router = LengthRouter(self.instances, params.get("routing", "length"),
                                   float(params.get("short_share", "0.25")))
        self.short_lane = params.get("short_lane", "off")
        if self.short_lane not in SHORT_LANES:
            raise ValueError(f"short_lane must be one of {', '.join(SHORT_LANES)}, got {self.short_lane!r}")
        if self.short_lane == "priority" and not self.router.short_share:
            # 0 means bands of even work: the "short" lane would take half the work, first.
            raise ValueError("short_lane: priority needs short_share > 0 (the share of the sentences it takes)")
        queued = QUEUED_BATCHES * self.max_sentences * self.instances
        self.admission = Admission(max_requests=queued, max_sentences=queued)
        self._io_binding_mode = io_binding
        self.decoders = self._start_decoders()
        log.info("translator %s v%s on %s (io binding %s, %d intra-op thread(s)), beam %d, alpha %.2f, "
                 "%d decode loop(s) (%s sessions, %s routing, short share %g, longer loops nice +%d, short lane %s), "
                 "running batch <= %d sentences and %d tokens each", spec.name, spec.version, self.provider,
                 "on" if self.translator.io_binding else "off", options.intra_op_num_threads,
                 self.beam_size, self.alpha, self.instances,
                 sessions, self.router.policy, self.router.short_share, self.nice, self.short_lane, self.max_sentences,
                 self.max_tokens)

    def _sources(self, inputs: dict[str, np.ndarray], options: Mapping[str, int] | None
                 ) -> tuple[list[list[int]], int]:
        """A request's sentences as source ids (EOS included) and its beam size."""
        texts = inputs["text"].reshape(-1)  # (N,) of bytes
        # Invalid UTF-8 is replaced (U+FFFD), not fatal: one bad sentence must not fail a request.
        sentences = [t.decode("utf-8", errors="replace") if isinstance(t, bytes) else str(t) for t in texts]
        beam = int((options or {}).get("beam_size", self.beam_size))
        if not 1 <= beam <= self.max_beam_size:
            raise ValueError(f"beam_size must be 1..{self.max_beam_size}, got {beam}")
        # Tokenised here (~10 µs a sentence) because the route depends on the lengths. A sentence
        # longer than the limit is the caller's INVALID_ARGUMENT, never silently cut.
        sources = []
        for i, sentence in enumerate(sentences):
            tokens = len(self.translator.tokenizer.EncodeAsIds(sentence))
            if tokens > self.max_input_tokens:
                raise InvalidArgument(f"input 'text': element {i} has {tokens} tokens, more than "
                                      f"{self.max_input_tokens} (max_input_tokens)")
            sources.append(self.translator.source_ids(sentence))
        return sources, beam

    def _route(self, sources: list[list[int]]) -> DecodeLoop:
        return self.decoders[self.router.choose([len(ids) for ids in sources],
                                                [d.queued_tokens for d in self.decoders])]

    async def infer(self, inputs: dict[str, np.ndarray], outputs: Sequence[str], options: Mapping[str, int],
                    executor: Executor) -> dict[str, np.ndarray]:
        """Resolves when this request's sentences are all translated. `executor` is not used:
        the decode loops have their own threads."""
        sources, beam = self._sources(inputs, options)
        if not sources:
            return Request(0, beam, lambda r: None).outputs()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, np.ndarray]] = loop.create_future()
        decoder = self._route(sources)
        request = decoder.submit(sources, beam, lambda r: _call_in(loop, _settle, future, r))
        try:
            return await future
        except asyncio.CancelledError:  # the caller gave up (deadline): stop decoding it
            decoder.cancel(request)
            raise

    def room(self) -> int:
        """Requests (stream entries) to take now; 0 also while too many sentences are queued."""
        return self.admission.room()

    async def wait_for_room(self) -> None:
        loop = asyncio.get_running_loop()
        while self.room() <= 0:
            future: asyncio.Future[None] = loop.create_future()
            self.admission.on_room(lambda: _call_in(loop, _set_if_pending, future))
            await future

    def run(self, inputs: dict[str, np.ndarray], outputs: Sequence[str],
            options: Mapping[str, int] | None = None, decoder: DecodeLoop | None = None,
            lane: int | None = None) -> dict[str, np.ndarray]:
        """Blocking, from any thread but a decode loop's: the request shares a running batch
        (`decoder`'s, else the one the router picks; `lane`: which of its lanes, else by length)."""
        sources, beam = self._sources(inputs, options)
        if not sources:
            return Request(0, beam, lambda r: None).outputs()
        done = threading.Event()
        request = (decoder or self._route(sources)).submit(sources, beam, lambda r: done.set(), lane)
        done.wait()
        if request.error is not None:
            raise request.error
        return request.outputs()

    def _start_decoders(self) -> list[DecodeLoop]:
        return [DecodeLoop(t, t.scheduler(self.alpha, self.max_sentences, self.max_tokens), self.max_output_len,
                           self.admission, name=f"translator-decode-{i}", nice=self.nice if i else 0,
                           on_step=self._observe_step, short_share=self.router.short_share,
                           short_lane=t.scheduler(self.alpha, self.max_sentences, self.max_tokens)
                           if self.short_lane == "priority" else None)
                for i, t in enumerate(self.translators)]

    def _observe_step(self, sentences: int) -> None:
        if self.on_step is not None:  # set by the worker after start-up
            self.on_step(sentences)

    def warmup(self) -> None:
        """Translate two sentences on every loop, in each of its lanes (the short lane's rows are
        their own, on the device with io binding). With io_binding auto, the device path must
        also give the host path's translations; if it fails or differs, the decoder inputs go
        through the host from now on (slower on a GPU, never wrong)."""
        inputs = {"text": np.array([s.encode() for s in WARMUP], dtype=object)}
        checked = self.translator.io_binding and self._io_binding_mode == "auto"
        try:
            want = self._host_translations(WARMUP) if checked else None  # once, for every loop and lane
            for decoder in self.decoders:
                for lane in range(len(decoder.lanes)):
                    out = self.run(inputs, ["translation", "score"], decoder=decoder, lane=lane)
                    if checked and [t.decode() for t in out["translation"]] != want:
                        raise RuntimeError("io binding translations differ from the host path's")
        except Exception:
            if not checked:
                raise
            log.exception("translator %s: io binding failed on %s; falling back to host rows",
                          self.spec.name, self.provider)
            self.close()
            for translator in self.translators:
                translator.io_binding = False
            self.decoders = self._start_decoders()
            for decoder in self.decoders:
                for lane in range(len(decoder.lanes)):
                    self.run(inputs, ["translation", "score"], decoder=decoder, lane=lane)

    def _host_translations(self, sentences: Sequence[str]) -> list[str]:
        scheduler = Scheduler(HostRows(self.translator.model), self.translator.model.bos_id,
                              self.translator.model.eos_id, self.translator.pad_id, self.alpha,
                              self.translator.max_target_len, len(sentences), self.max_tokens)
        queue = []
        for i, text in enumerate(sentences):
            ids = self.translator.source_ids(text)
            queue.append(Sentence(ids, self.beam_size, self.translator.limit(ids, self.max_output_len), owner=i))
        done = sorted(run_to_end(scheduler, queue), key=lambda r: r[0].owner)
        return [self.translator.tokenizer.DecodeIds(hyp.tokens) for _, hyp in done]

    def close(self) -> None:
        for decoder in self.decoders:
            decoder.close()
