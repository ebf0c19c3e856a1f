"""The garbage collector in a server process: start-up objects frozen out of its sight once the
server is up (process.settle_garbage_collector), and its pauses timed on /metrics."""

from __future__ import annotations

import gc

from services.metrics import Metrics
from services.process import settle_garbage_collector
from tests.support import free_port, scrape


def test_a_served_registry_times_every_collection_until_closed() -> None:
    metrics = Metrics()
    port = free_port()
    served = metrics.serve(port, "127.0.0.1")
    assert served is not None
    try:
        gc.collect(0)
        gc.collect(2)
        seen = scrape(port)
        assert seen['tensorgate_gc_pause_seconds_count{generation="0"}'] >= 1
        assert seen['tensorgate_gc_pause_seconds_count{generation="2"}'] >= 1
        assert seen['tensorgate_gc_pause_seconds_sum{generation="2"}'] > 0
    finally:
        served[0].shutdown()
        served[0].server_close()
        metrics.close()
    assert metrics._on_gc not in gc.callbacks  # closed: no callback left behind
    before = metrics.gc_pause.labels("2")._sum.get()
    gc.collect(2)
    assert metrics.gc_pause.labels("2")._sum.get() == before


def test_settling_freezes_what_start_up_built() -> None:
    try:
        settle_garbage_collector()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
