"""The replica's loop: read the model's stream through the consumer group, admit, run, answer.

- A batch runner (`Model`): form a dynamic batch by the policy (blocking in Redis while idle,
  waiting inside the window only when the estimator says requests will come), drop what
  expired, run the batch off the event loop, reply + ACK in one pipeline. While a batch runs,
  the next one is collected; up to `instance_count` batches run at once.
- A continuous runner (`ContinuousModel`): hand each request to the runner as long as it has
  room; each is answered when it is done, replies that finish together share one pipeline.

Statistics are added up in the process and flushed on a timer (services.queue.counters).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError
from redis.exceptions import RedisError

from services.coalesce import Coalescer
from services.errors import DeadlineExceeded, InternalError, InvalidArgument, TensorgateError, status_value
from services.grpc.statistics import execution_fields
from services.metrics import Metrics
from services.modelservice.batching import BatchPolicy, WaitEstimator
from services.modelservice.runners import ContinuousModel, Model
from services.proto import grpc_service_pb2 as pb
from services.queue.counters import StatisticsBuffer
from services.queue.messages import ReplyEntry, RequestEntry
from services.queue.streams import Delivery, RequestConsumer
from services.repository import ModelSpec
from services.settings import ModelServiceSettings
from services.tensors import build_response, split_rows
from services.validation import ValidRequest, validate

log = logging.getLogger(__name__)

DRAIN_BLOCK_MS = 100  # blocking reads while draining, so the drain ends on time

Reply = tuple[str, ReplyEntry]  # (reply stream, reply)


@dataclass(frozen=True)
class Poison:
    """A request the model failed on alone, on every attempt."""

    reason: str


Result = dict[str, np.ndarray] | TensorgateError | Poison  # one request's outcome of a batch


@dataclass(frozen=True)
class Job:
    """One decoded, valid request waiting for its batch."""

    delivery: Delivery
    entry: RequestEntry
    request: pb.ModelInferRequest
    valid: ValidRequest


def holds_all_inflight(jobs: Sequence[Job]) -> bool:
    """Does the batch hold every request its gateways had waiting when they sent these? Then no
    batch-mate can come (closed-loop clients wait for these answers): waiting would be in vain."""
    seen: dict[str, tuple[int, int]] = {}  # gateway reply stream -> (requests here, most in flight)
    for job in jobs:
        count, most = seen.get(job.entry.reply_to, (0, 0))
        seen[job.entry.reply_to] = (count + 1, max(most, job.entry.inflight))
    return all(most > 0 and count >= most for count, most in seen.values())


def _error_reply(entry: RequestEntry, err: TensorgateError) -> Reply:
    return entry.reply_to, ReplyEntry(entry.request_id, status_value(err), str(err))


class Worker:
    def __init__(
        self,
        spec: ModelSpec,
        model: Model,
        consumer: RequestConsumer,
        metrics: Metrics,
        settings: ModelServiceSettings,
        executor: Executor,
        statistics: StatisticsBuffer,
    ) -> None:
        self.spec = spec
        self.model = model
        self.consumer = consumer
        self.metrics = metrics
        self.settings = settings
        self.executor = executor
        self.statistics = statistics
        self.policy = BatchPolicy.from_spec(spec)
        self.estimator = WaitEstimator()
        self._no_wait_since: float | None = None  # when the last batch went without waiting
        self._pending = metrics.pending_requests.labels(spec.name)
        self._backlog: deque[Delivery] = deque()  # entries that did not fit the last batch
        self._answers: Coalescer[tuple[bytes, Reply], None] = Coalescer(self._finish_together)
        self._stopping = asyncio.Event()
        self._exited = False
        self._stop_time = 0.0
        self._background: list[asyncio.Task[None]] = []
        self._running: set[asyncio.Task[None]] = set()

    # -- lifecycle ------------------------------------------------------------------
    async def run(self) -> None:
        await self.consumer.ensure_group()
        self._background = [asyncio.create_task(self._heartbeats()), asyncio.create_task(self._take_overs())]
        try:
            if isinstance(self.model, ContinuousModel):
                await self._run_continuous(self.model)
            else:
                await self._run_batches()
            if self._running:
                await asyncio.wait(self._running)
        finally:
            await self._exit()

    async def _run_batches(self) -> None:
        instances = self.spec.instance_count
        while not self._drained() or self._backlog:
            jobs = await self._read_or_retry(self._collect)
            if not jobs:
                continue
            while len(self._running) >= instances:
                await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)
            self._spawn(self._process(jobs))

    async def _run_continuous(self, model: ContinuousModel) -> None:
        model.on_step = self.metrics.batch_size.labels(self.spec.name).observe  # thread-safe
        while not self._drained() or self._backlog:
            if model.room() <= 0:
                await model.wait_for_room()
            jobs = await self._read_or_retry(lambda: self._read_jobs(model.room()))
            for job in jobs:
                self._spawn(self._answer_one(model, job))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _read_or_retry(self, read: Callable[[], Awaitable[list[Job]]]) -> list[Job]:
        try:
            return await read()
        except RedisError as err:
            log.warning("redis read failed (%s); retrying", err)
            await asyncio.sleep(1.0)
            await self._recreate_group(err)
            return []

    async def _exit(self) -> None:
        """Stop heartbeats and take-overs, and leave the alive set: whatever is still pending under
        this name (replies that could not be written) is taken over by another replica at once."""
        # A cancel that lands inside a redis-py call can come back as a timeout error, which the
        # loops retry: they also end on the flag, and we wait for them a bounded time.
        self._exited = True
        for task in self._background:
            task.cancel()
        if self._background:
            await asyncio.wait(self._background, timeout=self.settings.redis_timeout_s + 1)
        self._background = []
        try:
            await self.consumer.exit()
        except RedisError:
            pass

    async def _recreate_group(self, err: RedisError) -> None:
        """A Redis that restarted empty has lost the stream and its group: create them again."""
        if "NOGROUP" in str(err):
            try:
                await self.consumer.ensure_group()
                log.info("consumer group recreated")
            except RedisError:
                pass

    async def stop(self) -> None:
        """Leave the replica set, keep taking work for `drain_s` (gateways may have enqueued for
        this replica before they saw it leave), finish what it holds, then return from run()."""
        self._stopping.set()
        self._stop_time = time.monotonic()
        try:  # gateways stop counting on this replica; it still heartbeats as alive while it drains
            await self.consumer.leave()
        except RedisError:
            pass

    def _drained(self) -> bool:
        return self._stopping.is_set() and time.monotonic() - self._stop_time >= self.settings.drain_s

    async def _heartbeats(self) -> None:
        while not self._exited:  # the flag, not only a cancel, ends it (see _exit)
            try:
                await self.consumer.heartbeat(ready=not self._stopping.is_set())
            except RedisError as err:
                log.warning("heartbeat failed: %s", err)
            await asyncio.sleep(self.settings.heartbeat_s)

    async def _take_overs(self) -> None:
        """Run what dead replicas left pending: at once for a replica that stopped heartbeating,
        after `claim_idle_ms` for any entry (a replica that heartbeats but never answers)."""
        s = self.settings
        while not self._stopping.is_set():
            await asyncio.sleep(s.claim_interval_s)
            try:
                fresh, poisoned, dead = await self.consumer.take_over_dead(
                    s.replica_dead_s, s.takeover_idle_ms, s.max_deliveries)
                if dead:
                    log.warning("replicas %s stopped heartbeating; took over %d of their entries", dead, len(fresh))
                stale, stale_poisoned = await self.consumer.claim_stale(s.claim_idle_ms, s.max_deliveries)
                await self._run_taken_over(fresh + stale, poisoned + stale_poisoned)
            except RedisError as err:
                log.warning("take-over failed: %s", err)

    async def _run_taken_over(self, fresh: list[Delivery], poisoned: list[Delivery]) -> None:
        if poisoned:
            self.metrics.dead_letters.labels(self.spec.name).inc(len(poisoned))
            err = InternalError(f"request failed on {self.settings.max_deliveries} deliveries; kept for inspection")
            await self.consumer.finish([], [_error_reply(d.request, err) for d in poisoned if d.request])
        if fresh:
            log.info("took over %d entries", len(fresh))
            self.metrics.reclaimed.labels(self.spec.name).inc(len(fresh))
            await self._run_reclaimed(await self._accept(fresh))

    # -- reading and batching -----------------------------------------------------------
    def _block_ms(self) -> int:
        return DRAIN_BLOCK_MS if self._stopping.is_set() else self.settings.idle_block_ms

    async def _read_jobs(self, count: int) -> list[Job]:
        """The backlog, else new entries (blocking in Redis while there are none), admitted."""
        deliveries = self._take_backlog(count)
        if not deliveries and not self._drained():
            deliveries = await self.consumer.read(count, self._block_ms())
        return await self._accept(deliveries)

    async def _collect(self) -> list[Job]:
        """Gather one batch by the policy; answers bad and expired entries on the way."""
        jobs: list[Job] = []
        rows = 0
        new_jobs = await self._read_after_no_wait() or await self._read_jobs(self.policy.capacity)
        started = time.monotonic()
        while True:
            overflow: list[Delivery] = []
            for job in new_jobs:
                if not overflow and self.policy.fits(rows, job.valid.rows):
                    jobs.append(job)
                    rows += job.valid.rows
                else:
                    overflow.append(job.delivery)  # starts the next batch, in arrival order
            if overflow:
                self._backlog.extendleft(reversed(overflow))
                self._pending.dec(len(overflow))  # counted again when re-read
            if not jobs:
                return []
            # A request that did not fit ends this batch at once; so does the end of draining.
            now = time.monotonic()
            if overflow or self._drained() or self.policy.ready(rows, now - started) or holds_all_inflight(jobs):
                return jobs
            wait = self.estimator.plan(rows, self.policy.target(rows),
                                       self.policy.remaining_delay_s(now - started), now)
            if wait <= 0:
                self._no_wait_since = now
                return jobs
            await asyncio.sleep(wait)
            deliveries = await self.consumer.read(self.policy.capacity - rows, None)
            self.estimator.observe(len(deliveries), time.monotonic() - now)
            if not deliveries:  # nothing came while it waited: the batch has stopped growing
                return jobs
            new_jobs = await self._accept(deliveries)

    async def _read_after_no_wait(self) -> list[Job]:
        """After a batch went without waiting, look (without blocking) for what arrived since:
        those requests could have joined it. It keeps the estimator measuring while it says "do
        not wait", so a burst after a quiet spell is seen within a few batches, not at the next
        probe."""
        since, self._no_wait_since = self._no_wait_since, None
        if since is None or self._backlog or self._drained():
            return []
        deliveries = await self.consumer.read(self.policy.capacity, None)
        self.estimator.observe(len(deliveries), time.monotonic() - since)
        return await self._accept(deliveries)

    async def _run_reclaimed(self, jobs: list[Job]) -> None:
        """Run taken-over entries at once, in batches by the policy: left for the main loop, they
        could wait out its blocking read and look stale again."""
        if isinstance(self.model, ContinuousModel):
            await asyncio.gather(*(self._answer_one(self.model, job) for job in jobs))
            return
        batch: list[Job] = []
        rows = 0
        for job in jobs:
            if batch and not self.policy.fits(rows, job.valid.rows):
                await self._process(batch)
                batch, rows = [], 0
            batch.append(job)
            rows += job.valid.rows
        if batch:
            await self._process(batch)

    async def _accept(self, deliveries: Sequence[Delivery]) -> list[Job]:
        """Admit entries: answer (and ACK) the refused at once, count the rest as pending."""
        if not deliveries:
            return []
        jobs, refused = self._admit(deliveries)
        answered = [(d, r) for d, r in refused if r is not None]
        if answered:
            await self.consumer.finish([d.entry_id for d, _ in answered], [r for _, r in answered])
        unanswerable = [d for d, r in refused if r is None]
        if unanswerable:  # nobody to answer: keep them for inspection
            await self.consumer.dead_letter(unanswerable, "malformed entry")
        self._pending.inc(len(jobs))
        return jobs

    def _take_backlog(self, count: int) -> list[Delivery]:
        taken: list[Delivery] = []
        while self._backlog and len(taken) < count:
            taken.append(self._backlog.popleft())
        return taken

    def _admit(self, deliveries: Sequence[Delivery]) -> tuple[list[Job], list[tuple[Delivery, Reply | None]]]:
        """Decode and check each entry. Returns the valid jobs and (entry, reply) for the refused."""
        jobs: list[Job] = []
        refused: list[tuple[Delivery, Reply | None]] = []
        now = time.time()
        for d in deliveries:
            entry = d.request
            if entry is None:
                log.error("malformed stream entry %s moved to the dead-letter stream: fields %s", d.entry_id, sorted(d.fields))
                self.metrics.requests.labels(self.spec.name, "malformed").inc()
                refused.append((d, None))
                continue
            try:
                if entry.deadline < now:
                    self.metrics.expired.labels(self.spec.name).inc()
                    raise DeadlineExceeded(f"request waited {now - entry.enqueued:.3f}s in the queue, past its deadline")
                try:
                    request = pb.ModelInferRequest.FromString(entry.payload)
                except DecodeError as err:
                    raise InvalidArgument("request payload is not a ModelInferRequest") from err
                jobs.append(Job(d, entry, request, validate(self.spec, request)))
            except TensorgateError as err:
                self.metrics.requests.labels(self.spec.name, err.reason).inc()
                refused.append((d, _error_reply(entry, err)))
        return jobs, refused

    # -- running: batches -----------------------------------------------------------------
    async def _process(self, jobs: list[Job]) -> None:
        name = self.spec.name
        started = time.time()
        outputs = [o.name for o in self.spec.outputs if any(o.name in j.valid.outputs for j in jobs)]
        loop = asyncio.get_running_loop()
        poisoned: list[tuple[Job, str]] = []
        try:
            results, timings = await loop.run_in_executor(self.executor, self._run_batch, jobs, outputs)
            replies: list[Reply] = []
            done: list[Job] = []
            for job, result in zip(jobs, results):
                if isinstance(result, Poison):
                    poisoned.append((job, result.reason))
                    continue
                done.append(job)
                if isinstance(result, TensorgateError):
                    self.metrics.requests.labels(name, result.reason).inc()
                    replies.append(_error_reply(job.entry, result))
                else:
                    self.metrics.requests.labels(name, "success").inc()
                    replies.append(self._ok_reply(job, result))
            ran = [j for j, r in zip(jobs, results) if isinstance(r, dict)]
            if ran:
                self.statistics.add(name, self._execution(ran, started, timings))
        except Exception:
            log.exception("batch of %d failed", len(jobs))
            err = InternalError("the model failed on this batch")
            done, replies = jobs, [_error_reply(j.entry, err) for j in jobs]
            self.metrics.requests.labels(name, "internal").inc(len(jobs))
        try:
            await self.consumer.finish([j.delivery.entry_id for j in done], replies)
            if poisoned:
                await self._dead_letter_poison(poisoned)
        except RedisError as err:
            # Not acknowledged: the entries stay pending and another replica (or we) reclaim them.
            log.warning("could not write replies (%s); entries stay pending", err)
        finally:
            self._pending.dec(len(jobs))

    async def _dead_letter_poison(self, poisoned: list[tuple[Job, str]]) -> None:
        """Requests that failed the model alone, every attempt: kept for inspection, callers told."""
        name = self.spec.name
        err = InternalError(f"the model failed on this request {self.settings.max_deliveries} times; kept for inspection")
        for job, reason in poisoned:
            log.error("request %s failed the model alone %d times (%s): dead-lettered",
                      job.entry.request_id, self.settings.max_deliveries, reason)
            await self.consumer.dead_letter([job.delivery], f"model failed: {reason}")
        await self.consumer.finish([], [_error_reply(job.entry, err) for job, _ in poisoned])
        self.metrics.dead_letters.labels(name).inc(len(poisoned))
        self.metrics.requests.labels(name, "internal").inc(len(poisoned))

    def _ok_reply(self, job: Job, outputs: dict[str, np.ndarray]) -> Reply:
        response = build_response(self.spec.name, self.spec.version, job.request.id, outputs)
        return job.entry.reply_to, ReplyEntry(job.entry.request_id, 0, "", response.SerializeToString())

    def _run_batch(self, jobs: list[Job], outputs: list[str]) -> tuple[list[Result], tuple[int, int, int]]:
        """Executor thread: prepare each request, concatenate, run, split. Returns per-job results
        (outputs, the TensorgateError that refused the request, or Poison) and (input, infer,
        output) ns."""
        results: list[Result] = [{} for _ in jobs]
        spans = [0, 0, 0]
        t0 = time.perf_counter_ns()
        prepared: dict[int, dict[str, np.ndarray]] = {}
        for i, job in enumerate(jobs):
            try:
                prepared[i] = self.model.prepare(job.valid.inputs)
            except TensorgateError as err:  # e.g. an undecodable image: this request alone fails
                results[i] = err
        spans[0] += time.perf_counter_ns() - t0
        # Requests with different options (e.g. beam sizes), inputs, or shapes past the batch dim
        # (an image model with dynamic height and width) cannot share one model call: they run
        # in separate groups of the batch, as Triton does without ragged batching.
        groups: dict[tuple[object, ...], list[int]] = {}
        for i, inputs in prepared.items():
            shapes = tuple((name, inputs[name].shape[1:]) for name in sorted(inputs))
            groups.setdefault((jobs[i].valid.options, shapes), []).append(i)
        for members in groups.values():
            self._run_group(jobs, prepared, members, outputs, results, spans)
        m = self.metrics
        m.batch_size.labels(self.spec.name).observe(sum(j.valid.rows for j in jobs))
        m.compute_duration.labels(self.spec.name).observe(sum(spans) / 1e9)
        return results, (spans[0], spans[1], spans[2])

    def _run_group(self, jobs: list[Job], prepared: dict[int, dict[str, np.ndarray]], members: list[int],
                   outputs: list[str], results: list[Result], spans: list[int]) -> None:
        """Run requests of equal options in one model call. If the model fails, split the group in
        halves and run each, down to the request that fails alone: its batch-mates are answered.
        A request that fails alone is tried `max_deliveries` times on its own before it is poison."""
        t0 = time.perf_counter_ns()
        group = [jobs[i] for i in members]
        rows = [j.valid.rows for j in group]
        names = list(prepared[members[0]])
        if len(members) == 1 or not self.policy.batching:
            feed = prepared[members[0]]
        else:
            feed = {name: np.concatenate([prepared[i][name] for i in members]) for name in names}
        t1 = time.perf_counter_ns()
        attempts = self.settings.max_deliveries if len(members) == 1 else 1
        failure = ""
        for _ in range(max(1, attempts)):
            try:
                merged = self.model.run(feed, outputs, dict(group[0].valid.options))
                break
            except Exception as err:  # the model itself failed: find the culprit
                failure = f"{type(err).__name__}: {err}"
                log.warning("model call over %d request(s) failed: %s", len(members), failure)
        else:
            spans[1] += time.perf_counter_ns() - t1
            if len(members) == 1:
                results[members[0]] = Poison(failure)
                return
            half = len(members) // 2
            self._run_group(jobs, prepared, members[:half], outputs, results, spans)
            self._run_group(jobs, prepared, members[half:], outputs, results, spans)
            return
        t2 = time.perf_counter_ns()
        if self.policy.batching and len(members) > 1:
            parts = {k: split_rows(v, rows) for k, v in merged.items()}
            for n, (i, j) in enumerate(zip(members, group)):
                results[i] = {k: parts[k][n] for k in j.valid.outputs}
        else:
            results[members[0]] = {k: merged[k] for k in group[0].valid.outputs}
        t3 = time.perf_counter_ns()
        spans[0] += t1 - t0
        spans[1] += t2 - t1
        spans[2] += t3 - t2

    def _execution(self, jobs: Sequence[Job], started: float, timings: tuple[int, int, int]) -> dict[str, int]:
        queue_ns = 0
        observe = self.metrics.queue_duration.labels(self.spec.name).observe
        for job in jobs:
            waited = max(0.0, started - job.entry.enqueued)
            observe(waited)
            queue_ns += int(waited * 1e9)
        return execution_fields(sum(j.valid.rows for j in jobs), len(jobs), timings, queue_ns)

    # -- running: one request on a continuous runner ------------------------------------------
    async def _answer_one(self, model: ContinuousModel, job: Job) -> None:
        started = time.time()
        t0 = time.perf_counter_ns()
        try:
            outputs = await model.infer(job.valid.inputs, job.valid.outputs, dict(job.valid.options), self.executor)
            elapsed = time.perf_counter_ns() - t0
            reply = self._ok_reply(job, outputs)
            self.statistics.add(self.spec.name, self._execution([job], started, (0, elapsed, 0)))
            self.metrics.compute_duration.labels(self.spec.name).observe(elapsed / 1e9)
            outcome = "success"
        except TensorgateError as err:
            reply, outcome = _error_reply(job.entry, err), err.reason
        except Exception:
            log.exception("request %s failed", job.entry.request_id)
            reply, outcome = _error_reply(job.entry, InternalError("the model failed on this request")), "internal"
        try:
            await self._answers.submit((job.delivery.entry_id, reply))
        except RedisError as err:
            log.warning("could not write a reply (%s); the entry stays pending", err)
        else:
            self.metrics.requests.labels(self.spec.name, outcome).inc()
        finally:
            self._pending.dec()

    async def _finish_together(self, answers: list[tuple[bytes, Reply]]) -> list[None]:
        await self.consumer.finish([entry_id for entry_id, _ in answers], [reply for _, reply in answers])
        return [None] * len(answers)
