"""The replica's loop: take work in (services.modelservice.intake), run it, answer.

- A batch runner (`Model`): a dynamic batch gathered by the intake runs off the event loop
  (services.modelservice.execution), then reply + ACK in one pipeline. While a batch runs,
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
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import numpy as np
from redis.exceptions import RedisError

from services.coalesce import Coalescer
from services.grpc.statistics import execution_fields
from services.metrics import Metrics
from services.modelservice.execution import Poison, Result, inline_limit_us, run_batch, runs_inline
from services.modelservice.intake import Intake, Job, Reply, error_reply, missing_inflight
from services.modelservice.runners import ContinuousModel
from services.modelservice.versions import ModelVersions
from services.queue.counters import StatisticsBuffer
from services.queue.messages import ReplyEntry
from services.queue.streams import Delivery, RequestConsumer
from services.settings import ModelServiceSettings
from tensorgate.errors import InternalError, TensorgateError
from tensorgate.tensors import build_response

log = logging.getLogger(__name__)

DRAIN_BLOCK_MS = 100  # blocking reads while draining, so the drain ends on time

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
        self.intake = Intake(versions, consumer, metrics, self._drained, self._block_ms)
        self._pending = self.intake.pending
        self._answers: Coalescer[tuple[bytes, Reply], None] = Coalescer(self._finish_together)
        self._stopping = asyncio.Event()
        self._exited = False
        self._stop_time = 0.0
        self._background: list[asyncio.Task[None]] = []
        self._running: set[asyncio.Task[None]] = set()
        self.announced = asyncio.Event()  # the first heartbeat is written: gateways can see this replica

    # -- lifecycle ------------------------------------------------------------------
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
        while not self._drained() or self.intake.backlog:
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
                jobs = await self._read_or_retry(lambda: self.intake.read_jobs(max(1, model.room())))
                for job in jobs:
                    self._spawn(self._answer_one(job))
                continue
            jobs = await self._read_or_retry(self.intake.collect)
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

    async def heartbeat(self) -> None:
        """One heartbeat: alive, ready unless draining or unloaded, and what this replica serves."""
        versions = self.versions
        ready = not self._stopping.is_set() and versions.accepting and bool(versions.current)
        await self.consumer.heartbeat(ready=ready, announcement=versions.announcement())
        self.announced.set()

    async def _heartbeats(self) -> None:
        while not self._exited:  # the flag, not only a cancel, ends it (see _exit)
            try:
                await self.heartbeat()
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
            await self.consumer.finish([], [error_reply(d.request, err) for d in poisoned if d.request])
        if fresh:
            log.info("took over %d entries", len(fresh))
            self.metrics.reclaimed.labels(self.name).inc(len(fresh))
            await self._run_reclaimed(await self.intake.accept(fresh))

    def _block_ms(self) -> int:
        return DRAIN_BLOCK_MS if self._stopping.is_set() else self.settings.idle_block_ms

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

    # -- running: batches -----------------------------------------------------------------
    async def _process(self, jobs: list[Job]) -> None:
        """Run one batch (one version) off the event loop, or on it when it is cheaper than the
        hand-off (execution.runs_inline), then reply + ACK in one pipeline."""
        name, loaded = self.name, jobs[0].version
        version = loaded.version
        started = time.time()
        outputs = [o.name for o in loaded.spec.outputs if any(o.name in j.valid.outputs for j in jobs)]
        loop = asyncio.get_running_loop()
        poisoned: list[tuple[Job, str]] = []
        try:
            valid = [j.valid for j in jobs]
            # A lone request that is all its gateway has in flight (a closed-loop client at c=1).
            alone = len(jobs) == 1 and missing_inflight(jobs) == 0
            limit_us = inline_limit_us(self.settings.inline_batch_max_us, alone)
            if runs_inline(loaded, valid, limit_us):
                results, timings = run_batch(loaded, valid, outputs, self.metrics, self.settings.max_deliveries)
            else:
                results, timings = await loop.run_in_executor(
                    loaded.executor, run_batch, loaded, valid, outputs, self.metrics, self.settings.max_deliveries)
            replies: list[Reply] = []
            done: list[Job] = []
            for job, result in zip(jobs, results):
                if isinstance(result, Poison):
                    poisoned.append((job, result.reason))
                    continue
                done.append(job)
                if isinstance(result, TensorgateError):
                    self.metrics.requests.labels(name, version, result.reason).inc()
                    replies.append(error_reply(job.entry, result))
                else:
                    self.metrics.requests.labels(name, version, "success").inc()
                    replies.append(self._ok_reply(job, result))
            ran = [j for j, r in zip(jobs, results) if isinstance(r, dict)]
            if ran:
                self.statistics.add(name, version, self._execution(ran, started, timings))
        except Exception:
            log.exception("batch of %d failed", len(jobs))
            err = InternalError("the model failed on this batch")
            done, replies = jobs, [error_reply(j.entry, err) for j in jobs]
            self.metrics.requests.labels(name, version, "internal").inc(len(jobs))
        finally:
            loaded.running -= len(jobs)  # admitted onto it by the intake
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
        await self.consumer.finish([], [error_reply(job.entry, err) for job, _ in poisoned])
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
        try:
            outputs = await loaded.model.infer(job.valid.inputs, job.valid.outputs, dict(job.valid.options),
                                               loaded.executor)
            elapsed = time.perf_counter_ns() - t0
            reply = self._ok_reply(job, outputs)
            self.statistics.add(self.name, version, self._execution([job], started, (0, elapsed, 0)))
            self.metrics.compute_duration.labels(self.name, version).observe(elapsed / 1e9)
            outcome = "success"
        except TensorgateError as err:
            reply, outcome = error_reply(job.entry, err), err.reason
        except Exception:
            log.exception("request %s failed", job.entry.request_id)
            reply, outcome = error_reply(job.entry, InternalError("the model failed on this request")), "internal"
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
