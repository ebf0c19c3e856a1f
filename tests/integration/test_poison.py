"""One bad request never fails its batch-mates: a request that makes the model fail is isolated
by splitting the batch, tried alone, then dead-lettered with the reason (INTERNAL to its caller);
a request its runner refuses before the model (prepare) gets INVALID_ARGUMENT; the rest succeed."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import redis

from services.queue import keys
from tensorgate.tensors import response_outputs
from tests.integration.conftest import Stack
from tests.integration.test_gateway import infer_request

pytestmark = pytest.mark.integration

MODEL = "poison"  # max_batch_size 8, a 500 ms window: 8 requests sent together share one batch


def test_poison_request_fails_alone_and_is_dead_lettered(stack: Stack) -> None:
    r = redis.Redis.from_url(stack.redis.url)
    dead_before = r.xlen(keys.dead_letter_stream(MODEL))
    images = [np.full((1, 1, 28, 28), 0.5, np.float32) for _ in range(6)]
    images.append(np.full((1, 1, 28, 28), -1.0, np.float32))  # poison: the model call fails on it
    images.append(np.full((1, 1, 28, 28), 2.0, np.float32))  # refused by the runner's prepare
    stub = stack.stub()

    def call(i: int) -> tuple[grpc.StatusCode, str]:
        try:
            response = stub.ModelInfer(infer_request(images[i], model=MODEL, request_id=f"p{i}"), timeout=20)
        except grpc.RpcError as err:
            return err.code(), err.details() or ""
        assert response_outputs(response)["probabilities"].shape == (1, 10)
        return grpc.StatusCode.OK, ""

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(call, range(8)))
    print("outcomes:", [code.name for code, _ in outcomes])
    assert [code for code, _ in outcomes[:6]] == [grpc.StatusCode.OK] * 6
    assert outcomes[6][0] == grpc.StatusCode.INTERNAL and "kept for inspection" in outcomes[6][1]
    assert outcomes[7][0] == grpc.StatusCode.INVALID_ARGUMENT and "refused by prepare" in outcomes[7][1]
    dead = r.xrange(keys.dead_letter_stream(MODEL))[dead_before:]
    assert len(dead) == 1
    assert dead[0][1][b"dead_reason"].startswith(b"model failed: RuntimeError: poisoned batch")
    assert r.xpending(keys.request_stream(MODEL), keys.GROUP)["pending"] == 0  # nothing left unacknowledged
