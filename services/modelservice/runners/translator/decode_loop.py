"""The decode loop: one thread that owns a running batch (scheduler.Scheduler) and steps it as
long as anything is waiting or running.

With a short lane (config `short_lane: "priority"`) the thread owns two running batches: the
requests whose longest sentence is among the shortest `short_share` of the recent ones
(admission.LengthRouter) join the short lane, which is stepped first whenever it has work (up
to SHORT_BURST steps in a row while the other lane waits), so a short sentence decodes in a few
small steps instead of at the pace of the long batch's large ones. One thread: the lanes never
compete for a core with each other, only take turns.

Requests come in from other threads with `submit` and leave early with `cancel`; each
request's `on_done` is called on the loop's thread exactly once (unless it was cancelled): when
its last sentence is done, or with its first error (its other sentences stop). An unexpected
error in the loop itself fails every request it holds, and the loop goes on with a fresh
scheduler. runner.TranslatorModel runs one loop per instance and routes each request to one.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

import numpy as np

from services.modelservice.runners.translator.admission import Admission, LengthRouter
from services.modelservice.runners.translator.scheduler import Outcome, Scheduler, Sentence
from services.modelservice.runners.translator.translator import Translator

log = logging.getLogger(__name__)

SHORT_BURST = 8  # short-lane steps in a row at most while the other lane has work


class Request:
    """One request's sentences on their way through the decode loop."""

    def __init__(self, size: int, beam: int, on_done: Callable[[Request], None], tokens: int = 0,
                 lane: int = 0) -> None:
        self.size, self.beam, self.lane = size, beam, lane  # lane: index into DecodeLoop.lanes
        self.tokens = tokens  # beam x source tokens, summed: its weight in least-loaded routing
        self.translations = np.empty(size, dtype=object)  # (N,) UTF-8 bytes
        self.scores = np.zeros(size, dtype=np.float32)  # (N,)
        self.remaining = size
        self.error: BaseException | None = None
        self.keys: set[int] = set()  # the scheduler's keys of its sentences
        self.on_done = on_done

    def outputs(self) -> dict[str, np.ndarray]:
        return {"translation": self.translations, "score": self.scores}


class DecodeLoop:
    """The thread that owns the scheduler. Other threads submit and cancel; results go back
    through each request's `on_done`, called on this thread (exactly once per request, unless
    it was cancelled)."""

    def __init__(self, translator: Translator, scheduler: Scheduler, max_output_len: int | None,
                 admission: Admission, name: str = "translator-decode", nice: int = 0,
                 on_step: Callable[[int], None] | None = None, short_lane: Scheduler | None = None,
                 short_share: float = 0.25) -> None:
        """`nice`: this thread's niceness increment (Linux; lower CPU priority when > 0).
        `on_step(sentences)`: called after every decoder step with the running batch's size.
        `short_lane`: a second running batch for the shortest `short_share` of the sentences,
        stepped first (see the module docstring)."""
        self.on_step = on_step
        self.translator, self.scheduler, self.short = translator, scheduler, short_lane
        self._lane_router = LengthRouter(2, "length", short_share) if short_lane is not None else None
        self._burst = 0  # short-lane steps since the other lane's last one
        self.max_output_len, self.admission, self.nice = max_output_len, admission, nice
        self.native_id: int | None = None  # the thread's, once it runs
        self._cond = threading.Condition()
        self._inbox: list[tuple[Request, list[list[int]]]] = []
        self._cancels: list[Request] = []
        self.queued_tokens = 0  # of the requests submitted here and not yet out
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, sources: list[list[int]], beam: int, on_done: Callable[[Request], None],
               lane: int | None = None) -> Request:
        """Sentences as source ids (Translator.source_ids) -> the request, queued here (in `lane`,
        an index into `lanes`, when given: the warm-up's, which every lane must see)."""
        lane = self._lane(sources) if lane is None else lane
        if not 0 <= lane < len(self.lanes):
            raise ValueError(f"lane {lane} outside 0..{len(self.lanes) - 1}")
        request = Request(len(sources), beam, on_done, beam * sum(map(len, sources)), lane)
        with self._cond:
            if self._stopping:
                raise RuntimeError("the translator is closed")
            self._inbox.append((request, sources))
            self.admission.take(request.size)
            self.queued_tokens += request.tokens
            self._cond.notify()
        return request

    @property
    def lanes(self) -> list[Scheduler]:
        """The running batches: [short lane, the other] with a short lane, else [the one]."""
        return [self.scheduler] if self.short is None else [self.short, self.scheduler]

    def _lane(self, sources: list[list[int]]) -> int:
        """Which lane takes a request: the short one (0) for the shortest sentences, once enough
        lengths are known to say which those are."""
        if self._lane_router is None:
            return 0
        lengths = [len(ids) for ids in sources] or [0]
        # Until the router has seen enough lengths it picks the lane with fewer queued tokens
        # (argmin of these loads): the other lane, where any sentence may go.
        return self._lane_router.choose(lengths, [1, 0])

    def _next_lane(self) -> Scheduler:
        """The short lane while it has work (up to SHORT_BURST steps in a row if the other lane
        waits), else the other."""
        short = self.short
        if short is not None and short.busy and (self._burst < SHORT_BURST or not self.scheduler.busy):
            self._burst += 1
            return short
        self._burst = 0
        return self.scheduler

    def cancel(self, request: Request) -> None:
        """Stop working on a request nobody waits for any more (its on_done is not called)."""
        with self._cond:
            self._cancels.append(request)
            self._cond.notify()

    def close(self, timeout_s: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        if self.nice:
            try:  # Linux: a thread has its own nice value; raising it needs no privilege
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
            except (AttributeError, OSError) as err:
                log.warning("%s: cannot lower its CPU priority (%s)", self._thread.name, err)
        self.native_id = threading.get_native_id()
        live: dict[int, Request] = {}  # id -> request, for the ones the scheduler holds
        while True:
            with self._cond:
                while not (self._stopping or self._inbox or self._cancels or any(s.busy for s in self.lanes)):
                    self._cond.wait()
                if self._stopping:
                    break
                inbox, self._inbox = self._inbox, []
                cancels, self._cancels = self._cancels, []
            try:
                for request, sources in inbox:
                    live[id(request)] = request
                    try:
                        self._queue(request, sources)
                    except Exception as err:  # only this request fails
                        self._fail(request, err, live)
                for request in cancels:
                    if live.pop(id(request), None) is not None:
                        self.lanes[request.lane].cancel(request.keys)
                        self._release(request)
                lane = self._next_lane()
                running = len(lane.running)
                self._deliver(lane.step(), live)
                if self.on_step is not None and running:
                    self.on_step(running)
            except Exception as err:  # a bug, not a model error (those come in the Outcome)
                log.exception("translator decode loop: failing %d requests", len(live))
                self.scheduler = self._fresh(self.scheduler)
                self.short = None if self.short is None else self._fresh(self.short)
                for request in list(live.values()):
                    self._fail(request, err, live)
        closed = RuntimeError("the translator was closed")
        for request in [*live.values(), *(r for r, _ in self._inbox)]:
            if request.error is None:
                request.error = closed
                request.on_done(request)

    def _fresh(self, scheduler: Scheduler) -> Scheduler:
        return self.translator.scheduler(scheduler.beams.alpha, scheduler.max_sentences, scheduler.max_tokens)

    def _queue(self, request: Request, sources: list[list[int]]) -> None:
        lane = self.lanes[request.lane]
        for i, ids in enumerate(sources):
            request.keys.add(lane.add(Sentence(
                ids, request.beam, self.translator.limit(ids, self.max_output_len), owner=(request, i))))

    def _deliver(self, outcome: Outcome, live: dict[int, Request]) -> None:
        decode = self.translator.tokenizer.DecodeIds
        for sentence, hyp in outcome.done:
            request, i = sentence.owner
            if id(request) not in live:
                continue
            request.translations[i] = decode(hyp.tokens).encode("utf-8")
            request.scores[i] = hyp.score
            request.remaining -= 1
            if request.remaining == 0:
                del live[id(request)]
                self._release(request)
                request.on_done(request)
        for sentence, err in outcome.failed:
            request, _ = sentence.owner
            if id(request) in live:
                self._fail(request, err, live)

    def _fail(self, request: Request, err: BaseException, live: dict[int, Request]) -> None:
        """The whole request fails with its first error; its other sentences stop."""
        del live[id(request)]
        self.lanes[request.lane].cancel(request.keys)
        self._release(request)
        request.error = err
        request.on_done(request)

    def _release(self, request: Request) -> None:
        """The request is out (answered, failed or cancelled): all its sentences leave the
        budget, also those done before it failed."""
        with self._cond:
            self.queued_tokens -= request.tokens
        self.admission.give(request.size)
