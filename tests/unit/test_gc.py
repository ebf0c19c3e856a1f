"""The garbage collector in a server process: start-up objects frozen out of its sight once the
server is up (process.settle_garbage_collector), and its pauses timed on /metrics."""

from __future__ import annotations

import gc

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from services.metrics import GcPauses, Metrics
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
    assert metrics.gc_pauses._on_gc not in gc.callbacks  # closed: no callback left behind
    before = list(metrics.gc_pauses._sums)
    gc.collect(2)
    assert metrics.gc_pauses._sums == before


def test_a_collection_inside_a_scrape_does_not_deadlock() -> None:
    """The callback takes no prometheus_client lock: a collection that starts while the registry
    is being read (here: from inside collect itself) just counts."""
    pauses = GcPauses()
    pauses.watch()
    try:
        registry = CollectorRegistry()
        registry.register(pauses)

        class Collecting(Collector):
            def collect(self) -> Iterable[Metric]:
                gc.collect(0)  # a collection in the middle of a scrape
                return iter(())

        registry.register(Collecting())
        text = generate_latest(registry).decode()
    finally:
        pauses.unwatch()
    assert 'tensorgate_gc_pause_seconds_count{generation="0"}' in text
    assert 'tensorgate_gc_pause_seconds_bucket{generation="2",le="+Inf"}' in text


def test_settling_freezes_what_start_up_built() -> None:
    try:
        settle_garbage_collector()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_the_frozen_objects_are_collected_and_frozen_again_on_a_timer() -> None:
    """Garbage made of objects frozen at start-up (a cycle that became unreachable later) is
    collected at the next refreeze."""
    import asyncio
    import weakref

    from services.process import refreeze_periodically

    class Node:
        pass

    try:
        a, b = Node(), Node()
        a.other, b.other = b, a  # type: ignore[attr-defined]
        settle_garbage_collector()  # the cycle is frozen with everything else
        alive = weakref.ref(a)
        del a, b
        gc.collect()
        assert alive() is not None  # frozen: no collection sees it

        async def one_period() -> None:
            task = asyncio.ensure_future(refreeze_periodically(0.01))
            await asyncio.sleep(0.1)
            task.cancel()

        asyncio.run(one_period())
        assert alive() is None and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()

