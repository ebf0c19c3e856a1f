"""ModelStatistics from the flat counters that the processes add up in Redis (or in memory).

Field names: `<stat>_count` / `<stat>_ns` for the InferStatistics durations, `inference_count`,
`execution_count`, `last_inference_ms`, and `batch_<rows>_<stat>_count|ns` per batch size.
"""

from __future__ import annotations

from collections.abc import Mapping

from tensorgate.proto import grpc_service_pb2 as pb

INFER_STATS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
BATCH_STATS = ("compute_input", "compute_infer", "compute_output")


def batch_field(rows: int, stat: str, unit: str) -> str:
    return f"batch_{rows}_{stat}_{unit}"


def duration_fields(stat: str, count: int, ns: int) -> dict[str, int]:
    return {f"{stat}_count": count, f"{stat}_ns": ns}


def execution_fields(rows: int, requests: int, timings: tuple[int, int, int], queue_ns: int = 0) -> dict[str, int]:
    """Counters for one model execution of `rows` rows serving `requests` requests.

    `timings` are the batch's (compute_input, compute_infer, compute_output) nanoseconds; like
    Triton, each request is charged the whole batch time, and the batch size gets one count.
    """
    fields = {"inference_count": rows, "execution_count": 1}
    if queue_ns:
        fields.update(duration_fields("queue", requests, queue_ns))
    for stat, ns in zip(BATCH_STATS, timings):
        fields.update(duration_fields(stat, requests, ns * requests))
        fields[batch_field(rows, stat, "count")] = 1
        fields[batch_field(rows, stat, "ns")] = ns
    return fields


def to_proto(name: str, version: str, counters: Mapping[str, int]) -> pb.ModelStatistics:
    stats = pb.ModelStatistics(
        name=name,
        version=version,
        last_inference=counters.get("last_inference_ms", 0),
        inference_count=counters.get("inference_count", 0),
        execution_count=counters.get("execution_count", 0),
    )
    for stat in INFER_STATS:
        duration = getattr(stats.inference_stats, stat)
        duration.count = counters.get(f"{stat}_count", 0)
        duration.ns = counters.get(f"{stat}_ns", 0)
    sizes = sorted({int(k.split("_")[1]) for k in counters if k.startswith("batch_")})
    for rows in sizes:
        batch = stats.batch_stats.add(batch_size=rows)
        for stat in BATCH_STATS:
            duration = getattr(batch, stat)
            duration.count = counters.get(batch_field(rows, stat, "count"), 0)
            duration.ns = counters.get(batch_field(rows, stat, "ns"), 0)
    return stats
