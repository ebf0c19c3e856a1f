from __future__ import annotations

from collections import Counter

from services.grpc.statistics import duration_fields, execution_fields, to_proto


def test_counters_become_model_statistics() -> None:
    counters: Counter[str] = Counter()
    counters.update(execution_fields(rows=4, requests=2, timings=(10, 100, 20), queue_ns=50))
    counters.update(execution_fields(rows=1, requests=1, timings=(1, 30, 2)))
    counters.update(duration_fields("success", 3, 900))
    counters["last_inference_ms"] = 1234
    stats = to_proto("m", "1", counters)
    assert (stats.inference_count, stats.execution_count, stats.last_inference) == (5, 2, 1234)
    assert (stats.inference_stats.success.count, stats.inference_stats.success.ns) == (3, 900)
    assert (stats.inference_stats.queue.count, stats.inference_stats.queue.ns) == (2, 50)
    # each request is charged its whole batch's time, as Triton does
    assert (stats.inference_stats.compute_infer.count, stats.inference_stats.compute_infer.ns) == (3, 230)
    by_size = {b.batch_size: b for b in stats.batch_stats}
    assert sorted(by_size) == [1, 4]
    assert (by_size[4].compute_infer.count, by_size[4].compute_infer.ns) == (1, 100)
    assert (by_size[1].compute_output.count, by_size[1].compute_output.ns) == (1, 2)
