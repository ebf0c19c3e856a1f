"""Optional API keys on the KServe service and the typed application API: `authorization: Bearer <key>` metadata.

Health checking and reflection stay open so orchestrators and tools can probe the server.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence

import grpc

PROTECTED_PREFIXES = ("/inference.GRPCInferenceService/", "/tensorgate.v1.Tensorgate/")
# Methods that are not unary-unary, by kind: the refusal must be a handler of the same kind.
STREAMING = {"/inference.GRPCInferenceService/ModelStreamInfer": "stream_stream",
             "/tensorgate.v1.Tensorgate/TranslateStream": "unary_stream"}
HEADER = "authorization"


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, keys: Sequence[str]) -> None:
        self._keys = [k.encode() for k in keys]
        message = f"missing or unknown API key: send metadata '{HEADER}: Bearer <key>'"

        async def deny(request: object, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        async def deny_stream(requests: object, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        self._deny = {"unary_unary": grpc.unary_unary_rpc_method_handler(deny),
                      "unary_stream": grpc.unary_stream_rpc_method_handler(deny),
                      "stream_stream": grpc.stream_stream_rpc_method_handler(deny_stream)}

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
        if method.startswith(PROTECTED_PREFIXES) and not self._allowed(details.invocation_metadata):
            return self._deny[STREAMING.get(method, "unary_unary")]
        return await continuation(details)
