"""The SDK's two clients (tensorgate.Client, tensorgate.AsyncClient) against the real gateway, and
their retry policy against a fake server that injects UNAVAILABLE (the one fault-injecting mock)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest

import tensorgate
from tensorgate.proto import tensorgate_pb2 as pb
from tensorgate.proto import tensorgate_pb2_grpc
from tests.integration.conftest import Stack
from tests.support import free_port, start_gateway

pytestmark = pytest.mark.integration


def reference(stack: Stack, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(stack.repo / "mnist_mlp" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"image": images})[0]


def test_blocking_client(stack: Stack) -> None:
    images = np.random.default_rng(11).random((3, 1, 28, 28), dtype=np.float32)
    with tensorgate.Client(f"127.0.0.1:{stack.gateway.grpc_port}") as client:
        labels, probabilities = client.classify(images, "mnist_mlp")  # an (N, 1, 28, 28) array: N images
        np.testing.assert_allclose(probabilities, reference(stack, images), atol=1e-6)
        assert labels.tolist() == probabilities.argmax(axis=1).tolist()
        one = client.classify([images[0], images[1, 0]], "mnist_mlp")  # (1, 28, 28) and (28, 28)
        np.testing.assert_allclose(one.probabilities, probabilities[:2], atol=1e-6)
        assert one.probability.shape == (2,)
        direct = client.infer("mnist_mlp", {"image": images})["probabilities"]
        np.testing.assert_allclose(direct, probabilities, atol=1e-6)
        assert ("mnist_mlp", "1", "READY") in client.models() and ("orphan", "1", "UNAVAILABLE") in client.models()
        reasons = {(m.name, m.state): m.reason for m in client.repository_index().models}
        assert reasons[("orphan", "UNAVAILABLE")] == "no replica is serving this model"
        stats = client.statistics("mnist_mlp").model_stats[0]
        assert stats.name == "mnist_mlp" and stats.inference_stats.success.count >= 3
        assert client.live()
        with pytest.raises(tensorgate.InferenceError) as err:
            client.classify(images, "nope")
        assert err.value.code == grpc.StatusCode.NOT_FOUND and "unknown model 'nope'" in err.value.message
        with pytest.raises(tensorgate.InferenceError) as err, stack.paused("small_queue"):
            client.classify(images[:1], "small_queue", timeout_s=0.3)  # a deadline per call
        assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_asyncio_client(stack: Stack, tmp_path: Path) -> None:
    images = np.random.default_rng(12).random((4, 1, 28, 28), dtype=np.float32)

    async def main() -> None:
        async with tensorgate.AsyncClient(f"127.0.0.1:{stack.gateway.grpc_port}") as client:
            results = await asyncio.gather(*(client.classify(images[i], "mnist_mlp") for i in range(4)))
            np.testing.assert_allclose(np.concatenate([r.probabilities for r in results]), reference(stack, images),
                                       atol=1e-6)
            direct = await client.infer("mnist_mlp", {"image": images})
            np.testing.assert_allclose(direct["probabilities"], reference(stack, images), atol=1e-6)
            assert ("mnist_mlp", "1", "READY") in await client.models()
            assert {m.name for m in (await client.repository_index()).models} >= {"mnist_mlp", "orphan"}
            assert (await client.statistics()).model_stats
            assert await client.ready() is False  # `orphan` has no replica
            with pytest.raises(FileNotFoundError):  # files are read on the client, off the loop
                await client.classify(tmp_path / "missing.png", "mnist_mlp")
            with pytest.raises(tensorgate.InferenceError) as err:
                await client.classify(images, "nope")
            assert err.value.code == grpc.StatusCode.NOT_FOUND

    asyncio.run(main())


def test_api_key_option(stack: Stack, tmp_path: Path) -> None:
    gateway = start_gateway(stack.repo, stack.redis.url, tmp_path, api_keys='["k3y"]')
    image = np.zeros((1, 28, 28), np.float32)
    try:
        gateway.wait_serving()
        url = f"127.0.0.1:{gateway.grpc_port}"
        with tensorgate.Client(url) as anonymous, pytest.raises(tensorgate.InferenceError) as err:
            anonymous.classify(image, "mnist_mlp")
        assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
        with tensorgate.Client(url, api_key="k3y") as client:
            assert client.classify(image, "mnist_mlp").labels.shape == (1,)
            assert client.infer("mnist_mlp", {"image": image[None]})["probabilities"].shape == (1, 10)

        async def asynchronous() -> int:
            async with tensorgate.AsyncClient(url, api_key="k3y") as client:
                return len((await client.classify(image, "mnist_mlp")).labels)

        assert asyncio.run(asynchronous()) == 1
    finally:
        gateway.stop()


class Flaky(tensorgate_pb2_grpc.TensorgateServicer):
    """Answers `failures` calls with `code`, then OK; counts every attempt."""

    def __init__(self, failures: int, code: grpc.StatusCode) -> None:
        self.failures, self.code, self.attempts = failures, code, 0
        self._lock = threading.Lock()

    def Classify(self, request: pb.ClassifyRequest, context: grpc.ServicerContext) -> pb.ClassifyResponse:
        with self._lock:
            self.attempts += 1
            failing = self.attempts <= self.failures
        if failing:
            context.abort(self.code, f"injected {self.code.name}")
        answer = pb.ClassifyResponse(model=request.model)
        answer.results.add(label=3, probability=1.0, probabilities=[0.0, 0.0, 0.0, 1.0] + [0.0] * 6)
        return answer


@pytest.fixture()
def flaky() -> Iterator[tuple[str, Flaky]]:
    servicer = Flaky(0, grpc.StatusCode.OK)
    server = grpc.server(futures.ThreadPoolExecutor(4))
    tensorgate_pb2_grpc.add_TensorgateServicer_to_server(servicer, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(None)


def test_unavailable_is_retried_with_backoff(flaky: tuple[str, Flaky]) -> None:
    url, servicer = flaky
    servicer.failures, servicer.code = 2, grpc.StatusCode.UNAVAILABLE
    with tensorgate.Client(url) as client:
        assert client.classify(np.zeros((28, 28), np.float32)).labels.tolist() == [3]
    assert servicer.attempts == 3

    servicer.attempts = 0

    async def asynchronous() -> list[int]:
        async with tensorgate.AsyncClient(url) as client:
            return (await client.classify(np.zeros((28, 28), np.float32))).labels.tolist()

    assert asyncio.run(asynchronous()) == [3] and servicer.attempts == 3

    servicer.attempts = 0
    with tensorgate.Client(url, retries=0) as client, pytest.raises(tensorgate.InferenceError) as err:
        client.classify(np.zeros((28, 28), np.float32))
    assert err.value.code == grpc.StatusCode.UNAVAILABLE and servicer.attempts == 1


@pytest.mark.parametrize("code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                  grpc.StatusCode.DEADLINE_EXCEEDED])
def test_other_statuses_are_never_retried(flaky: tuple[str, Flaky], code: grpc.StatusCode) -> None:
    url, servicer = flaky
    servicer.failures, servicer.code = 1, code
    with tensorgate.Client(url) as client, pytest.raises(tensorgate.InferenceError) as err:
        client.classify(np.zeros((28, 28), np.float32))
    assert err.value.code == code and err.value.message == f"injected {code.name}"
    assert servicer.attempts == 1


def test_retries_are_bounded_by_grpc() -> None:
    with pytest.raises(ValueError, match="retries must be 0..4"):
        tensorgate.Client("127.0.0.1:1", retries=5)
