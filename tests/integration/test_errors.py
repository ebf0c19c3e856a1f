"""Every bad request gets its own status and a message naming the problem; the next good
request still succeeds. Includes queue-full and deadline, made real by pausing a replica."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from tensorgate.proto import grpc_service_pb2 as pb
from tensorgate.tensors import add_input, response_outputs
from tests.integration.conftest import Stack
from tests.integration.test_gateway import infer_request
from tests.support import scrape

pytestmark = pytest.mark.integration

GOOD = np.full((1, 1, 28, 28), 0.5, dtype=np.float32)


def with_raw(shape: list[int], datatype: str, raw: bytes, name: str = "image") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="mnist_mlp")
    request.inputs.add(name=name, datatype=datatype, shape=shape)
    request.raw_input_contents.append(raw)
    return request


def wrong_output() -> pb.ModelInferRequest:
    request = infer_request(GOOD)
    request.outputs.add(name="logits")
    return request


def two_inputs() -> pb.ModelInferRequest:
    request = infer_request(GOOD)
    add_input(request, "mask", np.ones((1, 1), np.float32))
    return request


BAD: dict[str, tuple[Callable[[], pb.ModelInferRequest], grpc.StatusCode, str]] = {
    "wrong shape": (lambda: with_raw([1, 784], "FP32", bytes(784 * 4)), grpc.StatusCode.INVALID_ARGUMENT,
                    "input 'image': expected shape [-1, 1, 28, 28], got [1, 784]"),
    "wrong datatype": (lambda: with_raw([1, 1, 28, 28], "INT64", bytes(784 * 8)), grpc.StatusCode.INVALID_ARGUMENT,
                       "input 'image': expected datatype FP32, got INT64"),
    "short data": (lambda: with_raw([1, 1, 28, 28], "FP32", bytes(100)), grpc.StatusCode.INVALID_ARGUMENT,
                   "input 'image': FP32 shape [1, 1, 28, 28] needs 3136 bytes, got 100"),
    "missing input": (lambda: pb.ModelInferRequest(model_name="mnist_mlp"), grpc.StatusCode.INVALID_ARGUMENT,
                      "missing input 'image'"),
    "unknown input": (two_inputs, grpc.StatusCode.INVALID_ARGUMENT, "unexpected input 'mask'"),
    "batch too large": (lambda: infer_request(np.zeros((65, 1, 28, 28), np.float32)), grpc.StatusCode.INVALID_ARGUMENT,
                        "batch size 65 outside 1..64"),
    "unknown output": (wrong_output, grpc.StatusCode.INVALID_ARGUMENT, "unknown output 'logits'"),
    "unknown model": (lambda: infer_request(GOOD, model="resnet50"), grpc.StatusCode.NOT_FOUND,
                      "unknown model 'resnet50'"),
    "unknown version": (lambda: pb.ModelInferRequest(model_name="mnist_mlp", model_version="7"), grpc.StatusCode.NOT_FOUND,
                        "has no version 7"),
    "no replica": (lambda: infer_request(GOOD, model="orphan"), grpc.StatusCode.UNAVAILABLE,
                   "model 'orphan' has no ready replica"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_request_gets_clear_status_and_server_keeps_serving(stack: Stack, case: str) -> None:
    make, code, message = BAD[case]
    stub = stack.stub()
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(make(), timeout=10)
    assert info.value.code() == code
    assert message in info.value.details()
    assert response_outputs(stub.ModelInfer(infer_request(GOOD), timeout=10))["probabilities"].shape == (1, 10)


def test_full_queue_is_refused_at_once_and_accepted_requests_complete(stack: Stack) -> None:
    stub = stack.stub()
    request = infer_request(GOOD, model="small_queue")
    with ThreadPoolExecutor(4) as pool:
        with stack.paused("small_queue"):
            accepted = [pool.submit(stub.ModelInfer, request, timeout=30) for _ in range(4)]
            time.sleep(1.0)  # the four are in the stream now
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(request, timeout=30)
            assert time.monotonic() - started < 2.0  # refused at once, not after waiting
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "queue of model 'small_queue' is full (4 requests)" in info.value.details()
        # Resumed: nothing accepted was lost.
        results = [f.result(timeout=30) for f in accepted]
    assert all(response_outputs(r)["probabilities"].shape == (1, 10) for r in results)


def test_expired_request_gets_deadline_exceeded_and_is_dropped_by_the_replica(stack: Stack) -> None:
    stub = stack.stub()
    request = infer_request(GOOD, model="small_queue")
    request.parameters["timeout"].int64_param = 300_000  # Triton's per-request timeout, microseconds
    with stack.paused("small_queue"):
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=30)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # a client-side gRPC deadline shorter than the config's also bounds the wait
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(infer_request(GOOD, model="small_queue"), timeout=0.3)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # the replica wakes up, drops both expired entries, and serves the next request
    good = stub.ModelInfer(infer_request(GOOD, model="small_queue"), timeout=10)
    assert response_outputs(good)["probabilities"].shape == (1, 10)
    time.sleep(0.3)
    samples = scrape(stack.services["small_queue"].metrics_port)
    assert samples.get('tensorgate_requests_total{model="small_queue",outcome="deadline_exceeded",version="1"}', 0) >= 1
