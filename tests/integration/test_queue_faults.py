"""At-least-once delivery: a replica takes over what a dead one left pending, poison and
malformed entries go to the dead-letter stream, and nothing stalls the queue."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
import redis

from tensorgate.proto import grpc_service_pb2 as pb
from services.queue import keys
from services.queue.messages import ReplyEntry, RequestEntry
from tensorgate.tensors import add_input, response_outputs
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

MODEL = "reclaim"


def entry(request_id: str, reply_to: str, payload: bytes | None = None) -> dict[str, str | bytes]:
    if payload is None:
        request = pb.ModelInferRequest(model_name=MODEL, id=request_id)
        add_input(request, "image", np.full((2, 1, 28, 28), 0.25, np.float32))
        payload = request.SerializeToString()
    return RequestEntry(request_id, reply_to, time.time() + 30, time.time(), payload).to_fields()  # type: ignore[return-value]


def lost_by_dead_replica(r: redis.Redis, fields: dict[str, str | bytes]) -> bytes:
    """Add an entry and deliver it to a consumer that never answers, atomically (MULTI), so
    the live replica blocked on the stream cannot take it first."""
    stream = keys.request_stream(MODEL)
    pipe = r.pipeline(transaction=True)
    pipe.xadd(stream, fields)
    pipe.xreadgroup(keys.GROUP, "dead-replica", {stream: ">"}, count=1)
    entry_id, delivered = pipe.execute()
    assert delivered and delivered[0][1][0][0] == entry_id
    return entry_id


def wait_reply(r: redis.Redis, stream: str, timeout_s: float = 10.0) -> ReplyEntry:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = r.xread({stream: "0"}, count=1, block=200)
        if got:
            return ReplyEntry.from_fields(got[0][1][0][1])
    raise TimeoutError(f"no reply on {stream}")


def test_entries_of_a_dead_replica_are_taken_over(stack: Stack) -> None:
    r = redis.Redis.from_url(stack.redis.url)
    stream = keys.request_stream(MODEL)
    # Another replica reads it and dies before replying: it stays pending on "dead-replica".
    lost_by_dead_replica(r, entry("orphaned-1", "rep:test-takeover"))
    reply = wait_reply(r, "rep:test-takeover")
    assert reply.request_id == "orphaned-1" and reply.code == 0
    outputs = response_outputs(pb.ModelInferResponse.FromString(reply.payload))
    assert outputs["probabilities"].shape == (2, 10)
    assert r.xpending(stream, keys.GROUP)["pending"] == 0


def test_entry_delivered_too_often_goes_to_dead_letters(stack: Stack) -> None:
    r = redis.Redis.from_url(stack.redis.url)
    stream = keys.request_stream(MODEL)
    entry_id = lost_by_dead_replica(r, entry("poison-1", "rep:test-poison"))
    r.xclaim(stream, keys.GROUP, "dead-replica-2", 0, [entry_id])  # second delivery, also lost
    reply = wait_reply(r, "rep:test-poison")  # the live replica's claim is the third delivery
    assert reply.request_id == "poison-1" and reply.code == grpc.StatusCode.INTERNAL.value[0]
    assert "failed on 3 deliveries" in reply.message
    dead = r.xrange(keys.dead_letter_stream(MODEL))
    assert any(fields[b"id"] == b"poison-1" for _, fields in dead)
    assert r.xpending(stream, keys.GROUP)["pending"] == 0


def test_malformed_entries_are_answered_or_dropped_and_queue_keeps_moving(stack: Stack) -> None:
    r = redis.Redis.from_url(stack.redis.url)
    stream = keys.request_stream(MODEL)
    r.xadd(stream, {"nonsense": "1"})  # no request fields: nobody to answer, kept as a dead letter
    r.xadd(stream, entry("garbage-1", "rep:test-garbage", payload=b"\xff\xff not protobuf"))
    reply = wait_reply(r, "rep:test-garbage")
    assert reply.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "not a ModelInferRequest" in reply.message
    r.xadd(stream, entry("after-1", "rep:test-after"))
    assert wait_reply(r, "rep:test-after").code == 0
    time.sleep(0.2)
    assert r.xlen(stream) == 0 and r.xpending(stream, keys.GROUP)["pending"] == 0
    dead = r.xrange(keys.dead_letter_stream(MODEL))
    assert any(fields.get(b"nonsense") == b"1" and fields[b"dead_reason"] == b"malformed entry" for _, fields in dead)
