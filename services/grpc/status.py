"""The one place where errors become gRPC statuses, for every servicer method of every service.

Typed errors (tensorgate.errors) keep their code and message; anything else becomes INTERNAL with
a fixed message, logged here, so internals never reach a client. A request that could not be
parsed (see `lenient`) is the caller's INVALID_ARGUMENT, not gRPC's own INTERNAL.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf.message import DecodeError

from tensorgate.errors import INTERNAL_MESSAGE, InvalidArgument, TensorgateError

log = logging.getLogger(__name__)

R = TypeVar("R")


@dataclass(frozen=True)
class Malformed:
    """Stands for a request message that failed to parse (e.g. invalid UTF-8 in a string field)."""

    type_name: str
    error: str


def lenient(parse: Callable[[bytes], Any], type_name: str) -> Callable[[bytes], Any]:
    """A request deserializer that hands a parse failure to the method as `Malformed`, so the
    decorators below can answer INVALID_ARGUMENT naming it."""

    def deserialize(raw: bytes) -> Any:
        try:
            return parse(raw)
        except DecodeError as err:
            return Malformed(type_name, str(err))

    return deserialize


def _check(request: Any) -> None:
    if isinstance(request, Malformed):
        raise InvalidArgument(f"malformed {request.type_name}: {request.error}")


def _status(name: str, err: Exception) -> tuple[grpc.StatusCode, str]:
    if isinstance(err, TensorgateError):
        return err.code, str(err)
    log.error("%s failed", name, exc_info=err)
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE


async def _abort(context: grpc.aio.ServicerContext, status: tuple[grpc.StatusCode, str]) -> NoReturn:
    """Outside any `except` block: the AbortError gRPC raises must not chain the failed call's
    exception, whose traceback holds the request (maybe megabytes) for as long as gRPC keeps it."""
    await context.abort(*status)
    raise AssertionError("unreachable: abort raises")


def rpc(method: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """For a unary-answer method (`async def`)."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R:
        try:
            _check(request)
            return await method(self, request, context)
        except Exception as err:
            status = _status(method.__name__, err)
        del request
        await _abort(context, status)

    return wrapper


def stream_rpc(method: Callable[..., AsyncIterator[R]]) -> Callable[..., AsyncIterator[R]]:
    """For a server-streaming method (`async def` with `yield`): an error after some answers were
    sent ends the stream with its status."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[R]:
        try:
            _check(request)
            async for answer in method(self, request, context):
                yield answer
            return
        except Exception as err:
            status = _status(method.__name__, err)
        del request
        await _abort(context, status)

    return wrapper
