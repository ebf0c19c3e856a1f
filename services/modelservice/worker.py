"""The replica's loop: read the model's stream through the consumer group, form a dynamic
batch, drop what expired, run the batch off the event loop, reply + ACK in one pipeline.

While batch N runs in the executor, batch N+1 is being collected.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
from google.protobuf.message import DecodeError
from redis.exceptions import RedisError

from services.errors import DeadlineExceeded, InternalError, InvalidArgument, TensorgateError, status_value
from services.grpc.statistics import execution_fields
from services.metrics import Metrics
from services.modelservice.batching import BatchPolicy
from services.modelservice.runner import Model
from services.proto import grpc_service_pb2 as pb
from services.queue.messages import ReplyEntry, RequestEntry
from services.queue.streams import Delivery, RequestConsumer
from services.repository import ModelSpec
from services.settings import ModelServiceSettings
from services.tensors import build_response, split_rows
from services.validation import ValidRequest, validate

log = logging.getLogger(__name__)

POLL_S = 0.0005  # how often the stream is polled while a batch waits for more requests
DRAIN_BLOCK_MS = 100  # blocking reads while draining, so the drain ends on time


@dataclass(frozen=True)
class Job:
    """One decoded, valid request waiting for its batch."""

    delivery: Delivery
    entry: RequestEntry
    request: pb.ModelInferRequest
    valid: ValidRequest


def _error_reply(entry: RequestEntry, err: TensorgateError) -> tuple[str, ReplyEntry]:
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
    ) -> None:
        self.spec = spec
        self.model = model
        self.consumer = consumer
        self.metrics = metrics
        self.settings = settings
        self.executor = executor
        self.policy = BatchPolicy.from_spec(spec)
        self._backlog: deque[Delivery] = deque()  # entries that did not fit the last batch
        self._stopping = asyncio.Event()
        self._stop_time = 0.0
        self._background: list[asyncio.Task[None]] = []

    # -- lifecycle ------------------------------------------------------------------
    async def run(self) -> None:
        await self.consumer.ensure_group()
        self._background = [asyncio.create_task(self._heartbeats()), asyncio.create_task(self._reclaims())]
        inflight: asyncio.Task[None] | None = None
        try:
            while not self._drained() or self._backlog:
                try:
                    jobs = await self._collect()
                except RedisError as err:
                    log.warning("redis read failed (%s); retrying", err)
                    await asyncio.sleep(1.0)
                    await self._recreate_group(err)
                    continue
                if not jobs:
                    continue
                if inflight is not None:
                    await inflight
                inflight = asyncio.create_task(self._process(jobs))
            if inflight is not None:
                await inflight
        finally:
            await self._leave()

    async def _leave(self) -> None:
        """Stop heartbeats and reclaiming, and drop out of the replica set at once, so gateways
        stop counting on this replica while it finishes what it holds."""
        # A cancel that lands inside a redis-py call can come back as a timeout error, which the
        # loops retry: they also end on the stopping flag, and we wait for them a bounded time.
        for task in self._background:
            task.cancel()
        if self._background:
            await asyncio.wait(self._background, timeout=self.settings.redis_timeout_s + 1)
        self._background = []
        try:
            await self.consumer.leave()
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
        await self._leave()

    def _drained(self) -> bool:
        return self._stopping.is_set() and time.monotonic() - self._stop_time >= self.settings.drain_s

    async def _heartbeats(self) -> None:
        while not self._stopping.is_set():  # the flag, not only a cancel, ends it (see _leave)
            try:
                await self.consumer.heartbeat()
            except RedisError as err:
                log.warning("heartbeat failed: %s", err)
            await asyncio.sleep(self.settings.heartbeat_s)

    async def _reclaims(self) -> None:
        while not self._stopping.is_set():
            await asyncio.sleep(self.settings.claim_interval_s)
            try:
                fresh, poisoned = await self.consumer.claim_stale(self.settings.claim_idle_ms, self.settings.max_deliveries)
                if poisoned:
                    self.metrics.dead_letters.labels(self.spec.name).inc(len(poisoned))
                    err = InternalError(f"request failed on {self.settings.max_deliveries} deliveries; kept for inspection")
                    replies = [_error_reply(d.request, err) for d in poisoned if d.request]
                    await self.consumer.finish([], replies)
                if fresh:
                    log.info("took over %d stale entries", len(fresh))
                    self.metrics.reclaimed.labels(self.spec.name).inc(len(fresh))
                    await self._run_reclaimed(await self._accept(fresh))
            except RedisError as err:
                log.warning("reclaim failed: %s", err)

    # -- batching -------------------------------------------------------------------
    async def _collect(self) -> list[Job]:
        """Gather one batch by the policy; answers bad and expired entries on the way."""
        jobs: list[Job] = []
        rows = 0
        started = time.monotonic()
        while True:
            deliveries = self._take_backlog()
            if not deliveries and not self._drained():
                # Idle: block in Redis until work arrives. Inside the batching window, poll instead:
                # Redis times out blocked reads only every 1/hz s (100 ms by default), far too coarse.
                block = None if jobs else (DRAIN_BLOCK_MS if self._stopping.is_set() else self.settings.idle_block_ms)
                deliveries = await self.consumer.read(self.policy.capacity - rows, block)
                if jobs and not deliveries:
                    await asyncio.sleep(min(POLL_S, self.policy.remaining_delay_s(time.monotonic() - started)))
            if not jobs:
                started = time.monotonic()
            new_jobs = await self._accept(deliveries)
            overflow: list[Delivery] = []
            for job in new_jobs:
                if not overflow and self.policy.fits(rows, job.valid.rows):
                    jobs.append(job)
                    rows += job.valid.rows
                else:
                    overflow.append(job.delivery)  # starts the next batch, in arrival order
            self._backlog.extendleft(reversed(overflow))
            self.metrics.pending_requests.labels(self.spec.name).dec(len(overflow))  # counted again when re-read
            if not jobs:
                return []
            # A request that did not fit ends this batch at once; so does the end of draining.
            if overflow or self._drained() or self.policy.ready(rows, time.monotonic() - started):
                return jobs

    async def _run_reclaimed(self, jobs: list[Job]) -> None:
        """Run taken-over entries at once, in batches by the policy: left for the main loop, they
        could wait out its blocking read and look stale again."""
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
        jobs, refused = self._admit(deliveries)
        answered = [(d, r) for d, r in refused if r is not None]
        if answered:
            await self.consumer.finish([d.entry_id for d, _ in answered], [r for _, r in answered])
        unanswerable = [d for d, r in refused if r is None]
        if unanswerable:  # nobody to answer: keep them for inspection
            await self.consumer.dead_letter(unanswerable, "malformed entry")
        self.metrics.pending_requests.labels(self.spec.name).inc(len(jobs))
        return jobs

    def _take_backlog(self) -> list[Delivery]:
        taken = list(self._backlog)
        self._backlog.clear()
        return taken

    def _admit(self, deliveries: Sequence[Delivery]) -> tuple[list[Job], list[tuple[Delivery, tuple[str, ReplyEntry] | None]]]:
        """Decode and check each entry. Returns the valid jobs and (entry, reply) for the refused."""
        jobs: list[Job] = []
        refused: list[tuple[Delivery, tuple[str, ReplyEntry] | None]] = []
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

    # -- running ----------------------------------------------------------------------
    async def _process(self, jobs: list[Job]) -> None:
        name = self.spec.name
        started = time.time()
        outputs = [o.name for o in self.spec.outputs if any(o.name in j.valid.outputs for j in jobs)]
        loop = asyncio.get_running_loop()
        try:
            results, timings = await loop.run_in_executor(self.executor, self._run_batch, jobs, outputs)
            replies = []
            for job, part in zip(jobs, results):
                response = build_response(name, self.spec.version, job.request.id, part)
                replies.append((job.entry.reply_to, ReplyEntry(
                    job.entry.request_id, 0, "", response.SerializeToString(),
                    queue_ns=int((started - job.entry.enqueued) * 1e9), compute_ns=sum(timings),
                )))
            stats = self._statistics(jobs, started, timings)
            outcome = "success"
        except Exception:
            log.exception("batch of %d failed", len(jobs))
            err = InternalError("the model failed on this batch")
            replies = [_error_reply(j.entry, err) for j in jobs]
            stats, outcome = {}, "internal"
        try:
            await self.consumer.finish([j.delivery.entry_id for j in jobs], replies, stats)
        except RedisError as err:
            # Not acknowledged: the entries stay pending and another replica (or we) reclaim them.
            log.warning("could not write replies (%s); entries stay pending", err)
            self.metrics.pending_requests.labels(name).dec(len(jobs))
            return
        self.metrics.requests.labels(name, outcome).inc(len(jobs))
        self.metrics.pending_requests.labels(name).dec(len(jobs))

    def _run_batch(self, jobs: list[Job], outputs: list[str]) -> tuple[list[dict[str, np.ndarray]], tuple[int, int, int]]:
        """Executor thread: concatenate, run, split. Returns per-job outputs and (input, infer, output) ns."""
        results: list[dict[str, np.ndarray]] = [{} for _ in jobs]
        spans = [0, 0, 0]
        # Requests with different options (e.g. beam sizes) cannot share one model call.
        groups: dict[tuple[tuple[str, int], ...], list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault(job.valid.options, []).append(i)
        for options, members in groups.items():
            t0 = time.perf_counter_ns()
            group = [jobs[i] for i in members]
            rows = [j.valid.rows for j in group]
            if self.policy.batching:
                feed = {t.name: np.concatenate([j.valid.inputs[t.name] for j in group]) for t in self.spec.inputs}
            else:
                feed = dict(group[0].valid.inputs)
            t1 = time.perf_counter_ns()
            merged = self.model.run(feed, outputs, dict(options))
            t2 = time.perf_counter_ns()
            if self.policy.batching:
                parts = {k: split_rows(v, rows) for k, v in merged.items()}
                for n, (i, j) in enumerate(zip(members, group)):
                    results[i] = {k: parts[k][n] for k in j.valid.outputs}
            else:
                results[members[0]] = {k: merged[k] for k in group[0].valid.outputs}
            t3 = time.perf_counter_ns()
            spans = [spans[0] + t1 - t0, spans[1] + t2 - t1, spans[2] + t3 - t2]
        rows = [j.valid.rows for j in jobs]
        m = self.metrics
        m.batch_size.labels(self.spec.name).observe(sum(rows))
        m.compute_duration.labels(self.spec.name).observe(sum(spans) / 1e9)
        return results, (spans[0], spans[1], spans[2])

    def _statistics(self, jobs: list[Job], started: float, timings: tuple[int, int, int]) -> dict[str, int]:
        queue_ns = 0
        for job in jobs:
            waited = max(0.0, started - job.entry.enqueued)
            self.metrics.queue_duration.labels(self.spec.name).observe(waited)
            queue_ns += int(waited * 1e9)
        return execution_fields(sum(j.valid.rows for j in jobs), len(jobs), timings, queue_ns)
