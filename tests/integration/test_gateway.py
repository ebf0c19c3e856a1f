"""Inference through the real gateway -> Redis -> model service path."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from tensorgate.proto import grpc_service_pb2 as pb
from tensorgate.tensors import add_input, response_outputs
from tests.integration.conftest import Stack
from tests.support import scrape

pytestmark = pytest.mark.integration


def infer_request(images: np.ndarray, model: str = "mnist_mlp", request_id: str = "") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, id=request_id)
    add_input(request, "image", images)
    return request


def reference(stack: Stack, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(stack.repo / "mnist_mlp" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"image": images})[0]


def test_inference_through_gateway_equals_onnxruntime(stack: Stack) -> None:
    stub = stack.stub()
    rng = np.random.default_rng(1)
    for rows in (1, 7, 64):
        images = rng.random((rows, 1, 28, 28), dtype=np.float32)
        response = stub.ModelInfer(infer_request(images, request_id=f"req-{rows}"), timeout=10)
        assert response.id == f"req-{rows}"
        assert response.model_name == "mnist_mlp" and response.model_version == "1"
        got = response_outputs(response)["probabilities"]
        np.testing.assert_allclose(got, reference(stack, images), atol=1e-6)


def test_direct_inference_on_model_service_equals_gateway(stack: Stack) -> None:
    images = np.random.default_rng(2).random((3, 1, 28, 28), dtype=np.float32)
    direct = stack.stub(stack.services["mnist_mlp"].grpc_port).ModelInfer(infer_request(images), timeout=10)
    via_gateway = stack.stub().ModelInfer(infer_request(images), timeout=10)
    np.testing.assert_array_equal(response_outputs(direct)["probabilities"], response_outputs(via_gateway)["probabilities"])


def test_concurrent_requests_are_batched(stack: Stack) -> None:
    service = stack.services["mnist_mlp"]
    before = scrape(service.metrics_port)
    stub = stack.stub()
    images = np.random.default_rng(3).random((96, 1, 28, 28), dtype=np.float32)
    with ThreadPoolExecutor(32) as pool:
        responses = list(pool.map(lambda i: stub.ModelInfer(infer_request(images[i : i + 1]), timeout=20), range(96)))
    expected = reference(stack, images)
    for i, response in enumerate(responses):
        np.testing.assert_allclose(response_outputs(response)["probabilities"][0], expected[i], atol=1e-6)
    after = scrape(service.metrics_port)
    key = '{model="mnist_mlp",version="1"}'
    rows = after[f"tensorgate_batch_size_sum{key}"] - before.get(f"tensorgate_batch_size_sum{key}", 0)
    batches = after[f"tensorgate_batch_size_count{key}"] - before.get(f"tensorgate_batch_size_count{key}", 0)
    singles = after['tensorgate_batch_size_bucket{le="1.0",model="mnist_mlp",version="1"}'] - before.get(
        'tensorgate_batch_size_bucket{le="1.0",model="mnist_mlp",version="1"}', 0)
    assert rows == 96
    assert batches < 96 and rows / batches > 1.5, f"{batches} batches for 96 requests"
    assert singles < batches  # some batches really held more than one request


def test_stream_infer_answers_each_request_by_id(stack: Stack) -> None:
    images = np.random.default_rng(4).random((5, 1, 28, 28), dtype=np.float32)
    requests = [infer_request(images[i : i + 1], request_id=f"s{i}") for i in range(5)]
    bad = pb.ModelInferRequest(model_name="mnist_mlp", id="bad")
    add_input(bad, "image", np.zeros((1, 784), np.float32))
    answers = list(stack.stub().ModelStreamInfer(iter([*requests, bad]), timeout=20))
    by_id = {a.infer_response.id: a for a in answers}
    assert set(by_id) == {"s0", "s1", "s2", "s3", "s4", "bad"}
    assert "expected shape [-1, 1, 28, 28]" in by_id["bad"].error_message
    expected = reference(stack, images)
    for i in range(5):
        assert by_id[f"s{i}"].error_message == ""
        np.testing.assert_allclose(response_outputs(by_id[f"s{i}"].infer_response)["probabilities"][0], expected[i], atol=1e-6)


def test_metadata_config_statistics_and_index(stack: Stack) -> None:
    stub = stack.stub()
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    server = stub.ServerMetadata(pb.ServerMetadataRequest())
    assert {"statistics", "model_configuration"} <= set(server.extensions)
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name="mnist_mlp"))
    assert (meta.inputs[0].name, meta.inputs[0].datatype, list(meta.inputs[0].shape)) == ("image", "FP32", [-1, 1, 28, 28])
    assert (meta.outputs[0].name, list(meta.outputs[0].shape)) == ("probabilities", [-1, 10])
    config = stub.ModelConfig(pb.ModelConfigRequest(name="mnist_mlp")).config
    assert config.max_batch_size == 64 and config.dynamic_batching.max_queue_delay_microseconds == 5000
    stub.ModelInfer(infer_request(np.zeros((2, 1, 28, 28), np.float32)), timeout=10)
    deadline = time.monotonic() + 5  # the replica flushes its counters on a timer
    while True:
        stats = stub.ModelStatistics(pb.ModelStatisticsRequest(name="mnist_mlp")).model_stats[0]
        if stats.execution_count >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert stats.inference_stats.success.count >= 1 and stats.inference_stats.success.ns > 0
    assert stats.inference_stats.queue.count >= 1 and stats.inference_stats.compute_infer.ns > 0
    assert stats.inference_count >= 2 and 1 <= stats.execution_count <= stats.inference_count
    assert sum(b.compute_infer.count for b in stats.batch_stats) == stats.execution_count
    index = {m.name: m for m in stub.RepositoryIndex(pb.RepositoryIndexRequest()).models}
    assert index["mnist_mlp"].state == "READY" and index["orphan"].state == "UNAVAILABLE"
    ready_only = stub.RepositoryIndex(pb.RepositoryIndexRequest(ready=True)).models
    assert "orphan" not in {m.name for m in ready_only}
    assert stub.ModelReady(pb.ModelReadyRequest(name="mnist_mlp")).ready
    assert not stub.ModelReady(pb.ModelReadyRequest(name="orphan")).ready


def test_health_and_reflection(stack: Stack) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    for port in (stack.gateway.grpc_port, stack.services["mnist_mlp"].grpc_port):
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        for service in ("", "inference.GRPCInferenceService"):
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert status.status == health_pb2.HealthCheckResponse.SERVING
        reply = next(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
        names = {s.name for s in reply.list_services_response.service}
        assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names
