"""Typed errors and their one mapping to gRPC status codes.

Library code raises these; the servicers turn them into a status with `grpc_status`. Anything
else becomes INTERNAL with a fixed message, so internals never leak to clients.
"""

from __future__ import annotations

import grpc


class TensorgateError(Exception):
    """Base of every error a client is allowed to see."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "internal"  # bounded label value for metrics


class InvalidArgument(TensorgateError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "invalid_argument"


class ModelNotFound(TensorgateError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "not_found"


class QueueFull(TensorgateError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "queue_full"


class Unavailable(TensorgateError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "unavailable"


class DeadlineExceeded(TensorgateError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "deadline_exceeded"


class Unauthenticated(TensorgateError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "unauthenticated"


class InternalError(TensorgateError):
    code = grpc.StatusCode.INTERNAL
    reason = "internal"


INTERNAL_MESSAGE = "Internal server error"

_BY_CODE: dict[grpc.StatusCode, type[TensorgateError]] = {
    cls.code: cls
    for cls in (InvalidArgument, ModelNotFound, QueueFull, Unavailable, DeadlineExceeded, Unauthenticated, InternalError)
}
_BY_VALUE: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def from_status(code_value: int, message: str) -> TensorgateError:
    """Rebuild a typed error from a status code number carried over a queue."""
    code = _BY_VALUE.get(code_value, grpc.StatusCode.INTERNAL)
    return _BY_CODE.get(code, InternalError)(message)


def status_value(err: TensorgateError) -> int:
    """The integer of the error's gRPC status code (for queue messages)."""
    return int(err.code.value[0])
