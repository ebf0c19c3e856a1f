"""Optional API keys on the KServe service: `authorization: Bearer <key>` metadata.

Health checking and reflection stay open so orchestrators and tools can probe the server.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence

import grpc

PROTECTED_PREFIX = "/inference.GRPCInferenceService/"
STREAMING = {PROTECTED_PREFIX + "ModelStreamInfer"}
HEADER = "authorization"


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, keys: Sequence[str]) -> None:
        self._keys = [k.encode() for k in keys]
        message = f"missing or unknown API key: send metadata '{HEADER}: Bearer <key>'"

        async def deny(request: object, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        async def deny_stream(requests: object, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        self._deny = grpc.unary_unary_rpc_method_handler(deny)
        self._deny_stream = grpc.stream_stream_rpc_method_handler(deny_stream)

    def _allowed(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> bool:
        for key, value in metadata or ():
            if key == HEADER:
                token = value.encode() if isinstance(value, str) else value
                token = token.removeprefix(b"Bearer ").strip()
                return any(hmac.compare_digest(token, k) for k in self._keys)
        return False

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = details.method
        if method.startswith(PROTECTED_PREFIX) and not self._allowed(details.invocation_metadata):
            return self._deny_stream if method in STREAMING else self._deny
        return await continuation(details)
