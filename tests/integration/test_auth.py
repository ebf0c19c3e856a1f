"""A gateway started with API keys refuses inference without one (UNAUTHENTICATED) and keeps
health checking open."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tensorgate.proto import grpc_service_pb2 as pb
from tensorgate.proto import grpc_service_pb2_grpc
from tensorgate.tensors import add_input
from tests.integration.conftest import Stack
from tests.support import start_gateway

pytestmark = pytest.mark.integration


def test_api_keys_guard_inference_but_not_health(stack: Stack, tmp_path: Path) -> None:
    gateway = start_gateway(stack.repo, stack.redis.url, tmp_path, api_keys='["s3cret", "other"]')
    try:
        gateway.wait_serving()
        channel = grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}")
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest(model_name="mnist_mlp")
        add_input(request, "image", np.zeros((1, 1, 28, 28), np.float32))
        for metadata in [(), (("authorization", "Bearer wrong"),)]:
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(request, timeout=10, metadata=metadata)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "authorization: Bearer <key>" in info.value.details()
        with pytest.raises(grpc.RpcError) as info:
            list(stub.ModelStreamInfer(iter([request]), timeout=10))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        ok = stub.ModelInfer(request, timeout=10, metadata=(("authorization", "Bearer s3cret"),))
        assert ok.model_name == "mnist_mlp"
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        gateway.stop()


def test_api_keys_guard_the_typed_api_too(stack: Stack, tmp_path: Path) -> None:
    from tensorgate.proto import tensorgate_pb2 as tpb
    from tensorgate.proto import tensorgate_pb2_grpc

    gateway = start_gateway(stack.repo, stack.redis.url, tmp_path, api_keys='["s3cret"]')
    try:
        gateway.wait_serving()
        api = tensorgate_pb2_grpc.TensorgateStub(grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}"))
        classify = tpb.ClassifyRequest(model="mnist_mlp", images=[tpb.Image(pixels=tpb.Pixels(values=[0.0] * 784))])
        with pytest.raises(grpc.RpcError) as info:
            api.Classify(classify, timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as info:  # a server-streaming method is refused as one
            list(api.TranslateStream(tpb.TranslateRequest(sentences=["Ja."]), timeout=10))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "authorization: Bearer <key>" in info.value.details()
        ok = api.Classify(classify, timeout=10, metadata=(("authorization", "Bearer s3cret"),))
        assert len(ok.results) == 1
    finally:
        gateway.stop()
