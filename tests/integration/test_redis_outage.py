"""Redis goes away and comes back: the gateway answers UNAVAILABLE at once meanwhile, keeps
serving, and recovers without a restart."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tensorgate.proto import grpc_service_pb2 as pb
from tensorgate.proto import grpc_service_pb2_grpc
from tensorgate.tensors import add_input
from tests.support import small_stack

pytestmark = pytest.mark.integration


def wait_health(port: int, status: int, timeout_s: float = 5.0) -> bool:
    """True once the server's overall health reports `status` (within the timeout)."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status == status:
                return True
            time.sleep(0.1)
    return False


def test_gateway_survives_a_redis_restart(tmp_path: Path) -> None:
    with small_stack(tmp_path) as stack:
        redis, gateway = stack.redis, stack.gateway
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}"))
        request = pb.ModelInferRequest(model_name="mnist_mlp")
        add_input(request, "image", np.zeros((1, 1, 28, 28), np.float32))
        stub.ModelInfer(request, timeout=10)

        redis.stop()
        time.sleep(0.6)  # past the gateway's readiness cache
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "cannot be reached" in info.value.details()
        assert time.monotonic() - started < 3.0
        assert not stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
        assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
        # gRPC health follows Redis: NOT_SERVING on the gateway and the model service.
        for port in (gateway.grpc_port, stack.service.grpc_port):
            assert wait_health(port, health_pb2.HealthCheckResponse.NOT_SERVING), port

        # Same port again: both processes reconnect on their own.
        redis.process = subprocess.Popen(redis.process.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                stub.ModelInfer(request, timeout=5)
                break
            except grpc.RpcError as err:
                if time.monotonic() > deadline:
                    raise AssertionError(f"no recovery: {err.details()}") from err
                time.sleep(0.3)
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
        for port in (gateway.grpc_port, stack.service.grpc_port):  # SERVING again on their own
            assert wait_health(port, health_pb2.HealthCheckResponse.SERVING), port
