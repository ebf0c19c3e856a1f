"""A model's ModelStatistics counters over KServe v2 / Triton gRPC, read around each load level."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Counters:
    """One model's ModelStatistics counters."""

    success: int = 0
    inferences: int = 0
    executions: int = 0
    batches: dict[int, int] = field(default_factory=dict)  # executions per batch size


def call(url: str, method: str, request: object, headers: Mapping[str, str] | None = None,
         timeout_s: float = 10.0) -> Any:
    """One KServe v2 / Triton gRPC call with the project's own stubs (tritonclient's generated modules
    cannot be imported beside them: both register model_config.proto)."""
    import grpc

    from tensorgate.proto import grpc_service_pb2_grpc

    with grpc.insecure_channel(url) as channel:
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
        return getattr(stub, method)(request, metadata=list((headers or {}).items()), timeout=timeout_s)


def read_counters(url: str, model: str, headers: Mapping[str, str] | None = None) -> Counters:
    from tensorgate.proto import grpc_service_pb2 as pb

    reply = call(url, "ModelStatistics", pb.ModelStatisticsRequest(name=model), headers)
    stats = [s for s in reply.model_stats if s.name == model]
    if not stats:
        return Counters()
    s = stats[0]
    return Counters(s.inference_stats.success.count, s.inference_count, s.execution_count,
                    {b.batch_size: b.compute_infer.count for b in s.batch_stats})


def settled_counters(url: str, model: str, headers: Mapping[str, str] | None = None, gap_s: float = 0.25,
                     max_s: float = 3.0) -> Counters:
    """Counters once they stop moving: servers may buffer them and flush on a timer (tensorgate every
    0.1 s), so a reading right after the load ends can miss its last requests."""
    last = read_counters(url, model, headers)
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        time.sleep(gap_s)
        now = read_counters(url, model, headers)
        if now == last:
            return now
        last = now
    return last


def requests_between(before: Counters, after: Counters) -> tuple[int, str]:
    """Requests completed between two readings and which counter says so.

    The success count where the server keeps one; else (a model service's direct port counts
    executions but no successes) the inference count, which at batch size 1 is the request count."""
    if after.success > before.success:
        return after.success - before.success, "ModelStatistics success count"
    return after.inferences - before.inferences, "ModelStatistics inference count (batch 1)"
