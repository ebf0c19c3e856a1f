"""The typed application API (`tensorgate.v1.Tensorgate`) on the real gateway, with raw stubs:
the same queues, deadlines and statuses as ModelInfer; health and reflection list it.

The tiny stack has classifiers only (raw pixels through `image`); translation, generation and
encoded images run against the shipped models in tests/e2e/test_typed_api.py.
"""

from __future__ import annotations

import time

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tensorgate.proto import tensorgate_pb2 as pb
from tensorgate.proto import tensorgate_pb2_grpc
from tests.integration.conftest import Stack
from tests.support import scrape

pytestmark = pytest.mark.integration

SERVICE = "tensorgate.v1.Tensorgate"


def api(stack: Stack) -> tensorgate_pb2_grpc.TensorgateStub:
    return tensorgate_pb2_grpc.TensorgateStub(grpc.insecure_channel(f"127.0.0.1:{stack.gateway.grpc_port}"))


def pixels_request(images: np.ndarray, model: str = "mnist_mlp", top_k: int = 0) -> pb.ClassifyRequest:
    request = pb.ClassifyRequest(model=model, top_k=top_k)
    for image in images.reshape(-1, 784):
        request.images.add(pixels=pb.Pixels(values=image.tolist()))
    return request


def test_classify_pixels_equals_onnxruntime_with_top_k(stack: Stack) -> None:
    images = np.random.default_rng(7).random((5, 1, 28, 28), dtype=np.float32)
    expected = ort.InferenceSession(str(stack.repo / "mnist_mlp" / "1" / "model.onnx"),
                                    providers=["CPUExecutionProvider"]).run(["probabilities"], {"image": images})[0]
    before = scrape(stack.gateway.metrics_port).get('tensorgate_requests_total{model="mnist_mlp",outcome="success",version="1"}', 0)
    response = api(stack).Classify(pixels_request(images, top_k=3), timeout=10)
    assert response.model == "mnist_mlp" and response.model_version == "1" and len(response.results) == 5
    for result, row in zip(response.results, expected):
        np.testing.assert_allclose(result.probabilities, row, atol=1e-6)
        assert result.label == row.argmax() and result.probability == pytest.approx(row.max(), abs=1e-6)
        assert [c.label for c in result.top] == list(np.argsort(-row)[:3])
    after = scrape(stack.gateway.metrics_port)['tensorgate_requests_total{model="mnist_mlp",outcome="success",version="1"}']
    assert after == before + 1  # the pixels went as one queued request, counted as ModelInfer's are


@pytest.mark.parametrize("request_, code, message", [
    (pixels_request(np.zeros((1, 784), np.float32), model="nope"), grpc.StatusCode.NOT_FOUND, "unknown model 'nope'"),
    (pb.ClassifyRequest(model="mnist_mlp"), grpc.StatusCode.INVALID_ARGUMENT,
     "images: 0 given, model 'mnist_mlp' takes 1 to 64 per call"),
    (pixels_request(np.zeros((65, 784), np.float32)), grpc.StatusCode.INVALID_ARGUMENT, "images: 65 given"),
    (pb.ClassifyRequest(model="mnist_mlp", images=[pb.Image(pixels=pb.Pixels(values=[0.0] * 783))]),
     grpc.StatusCode.INVALID_ARGUMENT, "images[0]: pixels need 784 values (28x28), got 783"),
    (pb.ClassifyRequest(model="mnist_mlp", images=[pb.Image()]), grpc.StatusCode.INVALID_ARGUMENT,
     "images[0]: neither encoded bytes nor pixels"),
    (pixels_request(np.zeros((1, 784), np.float32), top_k=11), grpc.StatusCode.INVALID_ARGUMENT, "top_k: 11 given"),
    # The tiny classifiers have no `image_bytes` input: validation names it, as over ModelInfer.
    (pb.ClassifyRequest(model="mnist_mlp", images=[pb.Image(encoded=b"\x89PNG")]), grpc.StatusCode.INVALID_ARGUMENT,
     "images[0]: unexpected input 'image_bytes'"),
    (pixels_request(np.zeros((1, 784), np.float32), model="orphan"), grpc.StatusCode.UNAVAILABLE,
     "model 'orphan' has no ready replica"),
])
def test_classify_errors_get_modelinfer_statuses(stack: Stack, request_: pb.ClassifyRequest,
                                                 code: grpc.StatusCode, message: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        api(stack).Classify(request_, timeout=10)
    assert info.value.code() == code and message in info.value.details()


def test_deadline_and_full_queue_as_over_modelinfer(stack: Stack) -> None:
    stub = api(stack)
    request = pixels_request(np.zeros((1, 784), np.float32), model="small_queue")
    with stack.paused("small_queue"):
        with pytest.raises(grpc.RpcError) as info:
            stub.Classify(request, timeout=0.5)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        waiting = [stub.Classify.future(request, timeout=5) for _ in range(8)]  # a queue of 4
        codes = []
        for future in waiting:
            try:
                future.result()
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as err:
                codes.append(err.code())
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    deadline = time.monotonic() + 10
    while True:  # serving again once the replica has dropped what expired in its queue
        try:
            assert stub.Classify(request, timeout=10).results[0].label < 10
            break
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() < deadline
            time.sleep(0.1)


def test_a_malformed_message_is_invalid_argument(stack: Stack) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{stack.gateway.grpc_port}")
    # TranslateRequest.sentences (field 1, a string) carrying bytes that are not UTF-8.
    call = channel.unary_unary(f"/{SERVICE}/Translate", request_serializer=lambda raw: raw,
                               response_deserializer=lambda raw: raw)
    with pytest.raises(grpc.RpcError) as info:
        call(b"\x0a\x03\xffab", timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed tensorgate.v1.TranslateRequest" in info.value.details()
    assert "bad UTF-8" in info.value.details()


def test_health_and_reflection_cover_the_service(stack: Stack) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{stack.gateway.grpc_port}")
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = list(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                   timeout=5))
    assert SERVICE in {s.name for s in answers[0].list_services_response.service}
    described = list(reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE)]), timeout=5))
    assert described[0].file_descriptor_response.file_descriptor_proto  # grpcurl can describe it
