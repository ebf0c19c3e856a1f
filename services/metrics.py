"""Every Prometheus metric of tensorgate, defined once. Labels are bounded: model names, the
versions a replica serves and fixed reason words, never request data. Each process exposes its own registry on /metrics.
"""

from __future__ import annotations

import bisect
import gc
import threading
import time
from collections.abc import Iterable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

# Latency buckets from 0.5 ms to 30 s: CPU inference of small models sits in the low ms.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# Garbage-collector pauses: a young collection takes well under 1 ms, a full one tens of ms.
GC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


class Metrics:
    """The metric families of one process (gateway or model service)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.request_duration = Histogram(
            "tensorgate_request_duration_seconds",
            "Time from receiving an inference request to answering it.",
            ["model", "version"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.queue_duration = Histogram(
            "tensorgate_queue_duration_seconds",
            "Time a request waited in the model's stream before its batch started.",
            ["model", "version"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.compute_duration = Histogram(
            "tensorgate_compute_duration_seconds",
            "Time of one ONNX Runtime call for a whole batch (pre- and post-processing included).",
            ["model", "version"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            "tensorgate_batch_size",
            "Rows in each batch given to the model.",
            ["model", "version"], buckets=BATCH_BUCKETS, registry=r,
        )
        self.pending_requests = Gauge(
            "tensorgate_pending_requests",
            "Requests accepted and not yet answered.",
            ["model"], registry=r,
        )
        self.requests = Counter(
            "tensorgate_requests_total",
            "Inference requests answered, by outcome (success or the failure reason).",
            ["model", "version", "outcome"], registry=r,
        )
        self.reply_waiters = Gauge(
            "tensorgate_reply_waiters",
            "Calls of this gateway waiting for their reply from a model service.",
            registry=r,
        )
        self.dropped_replies = Counter(
            "tensorgate_dropped_replies_total",
            "Replies that arrived after their request had ended (late or duplicate).",
            registry=r,
        )
        self.expired = Counter(
            "tensorgate_expired_requests_total",
            "Requests dropped unrun by a replica because their deadline had passed in the queue.",
            ["model"], registry=r,
        )
        self.dead_letters = Counter(
            "tensorgate_dead_letters_total",
            "Entries moved to the dead-letter stream after too many deliveries.",
            ["model"], registry=r,
        )
        self.reclaimed = Counter(
            "tensorgate_reclaimed_entries_total",
            "Entries taken over from a replica that stopped acknowledging them (XAUTOCLAIM).",
            ["model"], registry=r,
        )
        self.execution_provider = Gauge(
            "tensorgate_execution_provider_info",
            "1 for the ONNX Runtime execution provider a model runs on.",
            ["model", "provider"], registry=r,
        )

        self.gc_pauses = GcPauses()
        r.register(self.gc_pauses)

    def serve(self, port: int, host: str = "0.0.0.0") -> tuple[WSGIServer, threading.Thread] | None:
        """Expose /metrics on a port (0 disables it), and time this process's garbage collections
        from now on. Returns the server so it can be shut down."""
        if port <= 0:
            return None
        self.gc_pauses.watch()
        return start_http_server(port, addr=host, registry=self.registry)

    def close(self) -> None:
        """Stop timing garbage collections (the server's own shutdown is the caller's)."""
        self.gc_pauses.unwatch()


class GcPauses(Collector):
    """tensorgate_gc_pause_seconds{generation}: a histogram of the garbage collector's pauses.

    The gc callback only adds to plain lists: it runs wherever a collection starts, which may be
    inside prometheus_client while that holds a metric's lock (a scrape), so taking a metric's
    lock there could deadlock the thread against itself. The histogram is built at scrape time."""

    def __init__(self) -> None:
        self._started = 0.0
        self._counts = [[0] * (len(GC_BUCKETS) + 1) for _ in range(3)]  # per generation; the last is +Inf
        self._sums = [0.0, 0.0, 0.0]

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause, generation = time.perf_counter() - self._started, info["generation"]
        self._counts[generation][bisect.bisect_left(GC_BUCKETS, pause)] += 1
        self._sums[generation] += pause

    def watch(self) -> None:
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def unwatch(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(
            "tensorgate_gc_pause_seconds",
            "Pauses of Python's garbage collector in this process (every thread waits), by generation.",
            labels=["generation"])
        for generation in range(3):
            counts, running, buckets = list(self._counts[generation]), 0, []
            for bound, count in zip([*map(str, GC_BUCKETS), "+Inf"], counts):
                running += count
                buckets.append((bound, running))
            family.add_metric([str(generation)], buckets, self._sums[generation])
        yield family
