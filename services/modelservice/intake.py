"""Taking work in: read the model's stream through the consumer group, admit each entry
(decode, check its deadline, pick its version, validate), and gather a dynamic batch by the
policy, blocking in Redis while idle and waiting inside the window only when the estimator says
requests will come (services.modelservice.batching). A batch short of a few requests its
gateways are known to have in flight wakes the moment one arrives (RequestConsumer.read_within).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from services.metrics import Metrics
from services.modelservice.batching import BatchPolicy, InflightPeaks, WaitEstimator
from services.modelservice.versions import LoadedVersion, ModelVersions
from services.queue.messages import ReplyEntry, RequestEntry
from services.queue.streams import Delivery, RequestConsumer
from services.validation import ValidRequest, validate
from tensorgate.errors import DeadlineExceeded, InvalidArgument, TensorgateError, status_value
from tensorgate.proto import grpc_service_pb2 as pb

log = logging.getLogger(__name__)

Reply = tuple[str, ReplyEntry]  # (reply stream, reply)

# A batch that waits for at most this many known in-flight requests wakes on each arrival; one
# that waits for more sleeps out its wait and reads once (at c=16 waking on every arrival cost
# ~14% more CPU per request for no gain, at c=4 it gave x1.48 the throughput).
WAKE_FOR_MISSING = 3


@dataclass(frozen=True)
class Job:
    """One decoded, valid request waiting for its batch, and the version it runs on."""

    delivery: Delivery
    entry: RequestEntry
    request: pb.ModelInferRequest
    valid: ValidRequest
    version: LoadedVersion


def missing_inflight(jobs: Sequence[Job], peaks: InflightPeaks | None = None, now: float = 0.0) -> int | None:
    """How many more requests the batch's gateways had in flight when they sent these (and, by
    `peaks`, recently): closed-loop clients wait for these answers, so those are all that can
    come, and at 0 waiting would be in vain. None when a gateway did not say (an older gateway:
    the usual policy)."""
    seen: dict[str, tuple[int, int]] = {}  # gateway reply stream -> (requests here, most in flight)
    for job in jobs:
        count, most = seen.get(job.entry.reply_to, (0, 0))
        seen[job.entry.reply_to] = (count + 1, max(most, job.entry.inflight))
    missing = 0
    for gateway, (count, most) in seen.items():
        if most <= 0:
            return None
        if peaks is not None:
            most = max(most, peaks.expected(gateway, now))
        missing += max(0, most - count)
    return missing


def error_reply(entry: RequestEntry, err: TensorgateError) -> Reply:
    return entry.reply_to, ReplyEntry(entry.request_id, status_value(err), str(err))


class Intake:
    """The replica's side of the stream up to a batch: the backlog of entries that did not fit
    the last batch, the arrival estimator, and the gauge of requests taken and not yet answered."""

    def __init__(self, versions: ModelVersions, consumer: RequestConsumer, metrics: Metrics,
                 drained: Callable[[], bool], block_ms: Callable[[], int]) -> None:
        self.versions = versions
        self.name = versions.name
        self.consumer = consumer
        self.metrics = metrics
        self._drained = drained
        self._block_ms = block_ms
        self.estimator = WaitEstimator()
        self.peaks = InflightPeaks()
        self._no_wait_since: float | None = None  # when the last batch went without waiting
        self.pending = metrics.pending_requests.labels(self.name)
        self.backlog: deque[Delivery] = deque()  # entries that did not fit the last batch

    @property
    def policy(self) -> BatchPolicy:
        """The batching policy of the newest version (the one most requests get)."""
        default = self.versions.default
        return default.policy if default is not None else BatchPolicy(1, 0.0)

    async def read_jobs(self, count: int) -> list[Job]:
        """The backlog, else new entries (blocking in Redis while there are none), admitted."""
        deliveries = self._take_backlog(count)
        if not deliveries and not self._drained():
            deliveries = await self.consumer.read(count, self._block_ms())
        return await self.accept(deliveries)

    async def collect(self) -> list[Job]:
        """Gather one batch by the policy; answers bad and expired entries on the way."""
        jobs: list[Job] = []
        rows = 0
        new_jobs = await self._read_after_no_wait() or await self.read_jobs(self.policy.capacity)
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
                    job.version.running -= 1  # admitted again when re-read
            if overflow:
                self.backlog.extendleft(reversed(overflow))
                self.pending.dec(len(overflow))  # counted again when re-read
            if not jobs:
                return []
            # A request that did not fit ends this batch at once; so does the end of draining.
            now = time.monotonic()
            missing = missing_inflight(jobs, self.peaks, now)
            if overflow or self._drained() or policy.ready(rows, now - started) or missing == 0:
                return jobs
            wait = self.estimator.plan(rows, policy.target(rows), policy.remaining_delay_s(now - started), now)
            if wait <= 0:
                self._no_wait_since = now
                return jobs
            if missing is not None and missing <= WAKE_FOR_MISSING:
                # A few known requests are on their way and each may complete the batch: wake
                # the moment one arrives.
                deliveries = await self.consumer.read_within(policy.capacity - rows, wait)
            else:  # many may come: one read after the wait collects them all (fewer round trips)
                await asyncio.sleep(wait)
                deliveries = await self.consumer.read(policy.capacity - rows, None)
            self.estimator.observe(len(deliveries), time.monotonic() - now)
            if not deliveries:  # nothing came while it waited: the batch has stopped growing
                return jobs
            new_jobs = await self.accept(deliveries)

    async def _read_after_no_wait(self) -> list[Job]:
        """After a batch went without waiting, look (without blocking) for what arrived since:
        those requests could have joined it. It keeps the estimator measuring while it says "do
        not wait", so a burst after a quiet spell is seen within a few batches, not at the next
        probe."""
        since, self._no_wait_since = self._no_wait_since, None
        if since is None or self.backlog or self._drained():
            return []
        deliveries = await self.consumer.read(self.policy.capacity, None)
        self.estimator.observe(len(deliveries), time.monotonic() - since)
        return await self.accept(deliveries)

    async def accept(self, deliveries: Sequence[Delivery]) -> list[Job]:
        """Admit entries: answer (and ACK) the refused at once, count the rest as pending."""
        if not deliveries:
            return []
        jobs, refused = self._admit(deliveries)
        now = time.monotonic()
        for job in jobs:
            self.peaks.observe(job.entry.reply_to, job.entry.inflight, now)
        answered = [(d, r) for d, r in refused if r is not None]
        if answered:
            await self.consumer.finish([d.entry_id for d, _ in answered], [r for _, r in answered])
        unanswerable = [d for d, r in refused if r is None]
        if unanswerable:  # nobody to answer: keep them for inspection
            await self.consumer.dead_letter(unanswerable, "malformed entry")
        self.pending.inc(len(jobs))
        return jobs

    def _take_backlog(self, count: int) -> list[Delivery]:
        taken: list[Delivery] = []
        while self.backlog and len(taken) < count:
            taken.append(self.backlog.popleft())
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
            version = ""
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
                loaded.running += 1  # held until answered: the version is not retired under it
            except TensorgateError as err:
                if not version:  # refused before its version was known: counted under the newest
                    default = self.versions.default
                    version = default.version if default is not None else ""
                self.metrics.requests.labels(self.name, version, err.reason).inc()
                refused.append((d, error_reply(entry, err)))
        return jobs, refused

