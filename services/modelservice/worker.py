"""The replica's loop: read the model's stream through the consumer group, admit, run, answer.

- A batch runner (`Model`): form a dynamic batch by the policy (blocking in Redis while idle,
  waiting inside the window only when the estimator says requests will come), drop what
  expired, run the batch off the event loop, reply + ACK in one pipeline. While a batch runs,
  the next one is collected; up to `instance_count` batches run at once.
- A continuous runner (`ContinuousModel`): hand each request to the runner as long as it has
  room; each is answered when it is done, replies that finish together share one pipeline.

Each request runs on the version it names, else the newest loaded (services.modelservice.versions);
a batch holds one version. The heartbeat announces what the replica serves (services.queue.catalog).
Statistics are added up in the process and flushed on a timer (services.queue.counters).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError
from redis.exceptions import RedisError

from services.coalesce import Coalescer
from tensorgate.errors import DeadlineExceeded, InternalError, InvalidArgument, TensorgateError, status_value
from services.grpc.statistics import execution_fields
from services.metrics import Metrics
from services.modelservice.batching import BatchPolicy, WaitEstimator
from services.modelservice.execution import Poison, Result, run_batch
from services.modelservice.runners import ContinuousModel
from services.modelservice.versions import LoadedVersion, ModelVersions
from tensorgate.proto import grpc_service_pb2 as pb
from services.queue.counters import StatisticsBuffer
from services.queue.messages import ReplyEntry, RequestEntry
from services.queue.streams import Delivery, RequestConsumer
from services.settings import ModelServiceSettings
from tensorgate.tensors import build_response
from services.validation import ValidRequest, validate

log = logging.getLogger(__name__)

DRAIN_BLOCK_MS = 100  # blocking reads while draining, so the drain ends on time

Reply = tuple[str, ReplyEntry]  # (reply stream, reply)


@dataclass(frozen=True)
class Job:
    """One decoded, valid request waiting for its batch, and the version it runs on."""

    delivery: Delivery
    entry: RequestEntry
    request: pb.ModelInferRequest
    valid: ValidRequest
    version: LoadedVersion


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
        versions: ModelVersions,
        consumer: RequestConsumer,
        metrics: Metrics,
        settings: ModelServiceSettings,
        statistics: StatisticsBuffer,
    ) -> None:
        self.versions = versions
        self.name = versions.name
        self.consumer = consumer
        self.metrics = metrics
        self.settings = settings
        self.statistics = statistics
        self.estimator = WaitEstimator()
        self._no_wait_since: float | None = None  # when the last batch went without waiting
        self._pending = metrics.pending_requests.labels(self.name)
        self._backlog: deque[Delivery] = deque()  # entries that did not fit the last batch
        self._answers: Coalescer[tuple[bytes, Reply], None] = Coalescer(self._finish_together)
        self._stopping = asyncio.Event()
        self._exited = False
        self._stop_time = 0.0
        self._background: list[asyncio.Task[None]] = []
        self._running: set[asyncio.Task[None]] = set()

    # -- lifecycle ------------------------------------------------------------------
    @property
    def policy(self) -> BatchPolicy:
        """The batching policy of the newest version (the one most requests get)."""
        default = self.versions.default
        return default.policy if default is not None else BatchPolicy(1, 0.0)

    async def run(self) -> None:
        await self.consumer.ensure_group()
        self._background = [asyncio.create_task(self._heartbeats()), asyncio.create_task(self._take_overs())]
        try:
            await self._serve()
            if self._running:
                await asyncio.wait(self._running)
        finally:
            await self._exit()

    async def _serve(self) -> None:
        """Batches for a batch runner, one request at a time for a continuous one: whichever the
        newest version is, checked before every read (a new version may be of either kind)."""
        while not self._drained() or self._backlog:
            default = self.versions.default
            if default is None:  # unloaded: take no work until a version is loaded again
                await self._wait_for_a_version()
                continue
            model = default.model
            if isinstance(model, ContinuousModel):
                if model.on_step is None:
                    model.on_step = self.metrics.batch_size.labels(self.name, default.version).observe  # thread-safe
                if model.room() <= 0:
                    await model.wait_for_room()
                jobs = await self._read_or_retry(lambda: self._read_jobs(max(1, model.room())))
                for job in jobs:
                    self._spawn(self._answer_one(job))
                continue
            jobs = await self._read_or_retry(self._collect)
            if not jobs:
                continue
            while len(self._running) >= jobs[0].version.spec.instance_count:
                await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)
            self._spawn(self._process(jobs))

    async def _wait_for_a_version(self) -> None:
        waits = [asyncio.create_task(self.versions.available.wait()), asyncio.create_task(self._stopping.wait())]
        try:
            await asyncio.wait(waits, timeout=self._block_ms() / 1000, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()

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
                versions = self.versions
                ready = not self._stopping.is_set() and versions.accepting and bool(versions.current)
                await self.consumer.heartbeat(ready=ready, announcement=versions.announcement())
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
            self.metrics.dead_letters.labels(self.name).inc(len(poisoned))
            err = InternalError(f"request failed on {self.settings.max_deliveries} deliveries; kept for inspection")
            await self.consumer.finish([], [_error_reply(d.request, err) for d in poisoned if d.request])
        if fresh:
            log.info("took over %d entries", len(fresh))
            self.metrics.reclaimed.labels(self.name).inc(len(fresh))
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
        # The batch's version is its first request's (a batch holds one version), and so its policy.
        policy = new_jobs[0].version.policy if new_jobs else self.policy
        while True:
            overflow: list[Delivery] = []
            for job in new_jobs:
                if not overflow and policy.fits(rows, job.valid.rows) and (not jobs or job.version is jobs[0].version):
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
            if overflow or self._drained() or policy.ready(rows, now - started) or holds_all_inflight(jobs):
                return jobs
            wait = self.estimator.plan(rows, policy.target(rows), policy.remaining_delay_s(now - started), now)
            if wait <= 0:
                self._no_wait_since = now
                return jobs
            await asyncio.sleep(wait)
            deliveries = await self.consumer.read(policy.capacity - rows, None)
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
        continuous = [job for job in jobs if isinstance(job.version.model, ContinuousModel)]
        if continuous:
            await asyncio.gather(*(self._answer_one(job) for job in continuous))
        batch: list[Job] = []
        rows = 0
        for job in (job for job in jobs if not isinstance(job.version.model, ContinuousModel)):
            if batch and (job.version is not batch[0].version or not job.version.policy.fits(rows, job.valid.rows)):
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
                self.metrics.requests.labels(self.name, "", "malformed").inc()
                refused.append((d, None))
                continue
            default = self.versions.default
            version = default.version if default is not None else ""  # until the request names its own
            try:
                if entry.deadline < now:
                    self.metrics.expired.labels(self.name).inc()
                    raise DeadlineExceeded(f"request waited {now - entry.enqueued:.3f}s in the queue, past its deadline")
                try:
                    request = pb.ModelInferRequest.FromString(entry.payload)
                except DecodeError as err:
                    raise InvalidArgument("request payload is not a ModelInferRequest") from err
                loaded = self.versions.get(request.model_version)
                version = loaded.version
                jobs.append(Job(d, entry, request, validate(loaded.spec, request), loaded))
            except TensorgateError as err:
                self.metrics.requests.labels(self.name, version, err.reason).inc()
                refused.append((d, _error_reply(entry, err)))
        return jobs, refused

    # -- running: batches -----------------------------------------------------------------
    async def _process(self, jobs: list[Job]) -> None:
        """Run one batch (one version) off the event loop, then reply + ACK in one pipeline."""
        name, loaded = self.name, jobs[0].version
        version = loaded.version
        started = time.time()
        outputs = [o.name for o in loaded.spec.outputs if any(o.name in j.valid.outputs for j in jobs)]
        loop = asyncio.get_running_loop()
        poisoned: list[tuple[Job, str]] = []
        loaded.running += 1  # the version is retired only once this is done
        try:
            results, timings = await loop.run_in_executor(
                loaded.executor, run_batch, loaded, [j.valid for j in jobs], outputs, self.metrics,
                self.settings.max_deliveries)
            replies: list[Reply] = []
            done: list[Job] = []
            for job, result in zip(jobs, results):
                if isinstance(result, Poison):
                    poisoned.append((job, result.reason))
                    continue
                done.append(job)
                if isinstance(result, TensorgateError):
                    self.metrics.requests.labels(name, version, result.reason).inc()
                    replies.append(_error_reply(job.entry, result))
                else:
                    self.metrics.requests.labels(name, version, "success").inc()
                    replies.append(self._ok_reply(job, result))
            ran = [j for j, r in zip(jobs, results) if isinstance(r, dict)]
            if ran:
                self.statistics.add(name, version, self._execution(ran, started, timings))
        except Exception:
            log.exception("batch of %d failed", len(jobs))
            err = InternalError("the model failed on this batch")
            done, replies = jobs, [_error_reply(j.entry, err) for j in jobs]
            self.metrics.requests.labels(name, version, "internal").inc(len(jobs))
        finally:
            loaded.running -= 1
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
        err = InternalError(f"the model failed on this request {self.settings.max_deliveries} times; kept for inspection")
        for job, reason in poisoned:
            log.error("request %s failed the model alone %d times (%s): dead-lettered",
                      job.entry.request_id, self.settings.max_deliveries, reason)
            await self.consumer.dead_letter([job.delivery], f"model failed: {reason}")
        await self.consumer.finish([], [_error_reply(job.entry, err) for job, _ in poisoned])
        self.metrics.dead_letters.labels(self.name).inc(len(poisoned))
        for job, _ in poisoned:
            self.metrics.requests.labels(self.name, job.version.version, "internal").inc()

    def _ok_reply(self, job: Job, outputs: dict[str, np.ndarray]) -> Reply:
        response = build_response(self.name, job.version.version, job.request.id, outputs)
        return job.entry.reply_to, ReplyEntry(job.entry.request_id, 0, "", response.SerializeToString(),
                                              version=job.version.version)

    def _execution(self, jobs: Sequence[Job], started: float, timings: tuple[int, int, int]) -> dict[str, int]:
        queue_ns = 0
        observe = self.metrics.queue_duration.labels(self.name, jobs[0].version.version).observe
        for job in jobs:
            waited = max(0.0, started - job.entry.enqueued)
            observe(waited)
            queue_ns += int(waited * 1e9)
        return execution_fields(sum(j.valid.rows for j in jobs), len(jobs), timings, queue_ns)

    # -- running: one request on a continuous runner ------------------------------------------
    async def _answer_one(self, job: Job) -> None:
        loaded = job.version
        version = loaded.version
        started = time.time()
        t0 = time.perf_counter_ns()
        loaded.running += 1
        try:
            outputs = await loaded.model.infer(job.valid.inputs, job.valid.outputs, dict(job.valid.options),
                                               loaded.executor)
            elapsed = time.perf_counter_ns() - t0
            reply = self._ok_reply(job, outputs)
            self.statistics.add(self.name, version, self._execution([job], started, (0, elapsed, 0)))
            self.metrics.compute_duration.labels(self.name, version).observe(elapsed / 1e9)
            outcome = "success"
        except TensorgateError as err:
            reply, outcome = _error_reply(job.entry, err), err.reason
        except Exception:
            log.exception("request %s failed", job.entry.request_id)
            reply, outcome = _error_reply(job.entry, InternalError("the model failed on this request")), "internal"
        finally:
            loaded.running -= 1
        try:
            await self._answers.submit((job.delivery.entry_id, reply))
        except RedisError as err:
            log.warning("could not write a reply (%s); the entry stays pending", err)
        else:
            self.metrics.requests.labels(self.name, version, outcome).inc()
        finally:
            self._pending.dec()

    async def _finish_together(self, answers: list[tuple[bytes, Reply]]) -> list[None]:
        await self.consumer.finish([entry_id for entry_id, _ in answers], [reply for _, reply in answers])
        return [None] * len(answers)
