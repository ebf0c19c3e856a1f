"""The KServe service's method handlers, built from the proto descriptor.

Every RPC uses the generated message classes, except the two inference RPCs: their request
arrives as an `InferCall` (the parsed request and its original bytes, so the gateway queues
those bytes without serialising the message again) and their answer leaves as bytes (the
model service serialised the response once; the gateway passes it through unparsed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from tensorgate.proto import grpc_service_pb2 as pb
from tensorgate.proto import grpc_service_pb2_grpc

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]


@dataclass(frozen=True)
class InferCall:
    """A ModelInferRequest as received: parsed once, with the bytes it came in."""

    request: pb.ModelInferRequest
    raw: bytes

    @classmethod
    def parse(cls, raw: bytes) -> InferCall:
        return cls(pb.ModelInferRequest.FromString(raw), raw)

    @classmethod
    def of(cls, request: pb.ModelInferRequest) -> InferCall:
        return cls(request, request.SerializeToString())


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


# ModelStreamInferResponse.infer_response is field 2, length-delimited: tag (2 << 3) | 2.
_STREAM_RESPONSE_TAG = bytes([(2 << 3) | 2])


def stream_response(response: bytes) -> bytes:
    """A serialised ModelInferResponse wrapped as a serialised ModelStreamInferResponse."""
    return _STREAM_RESPONSE_TAG + _varint(len(response)) + response


def _serialize(message: Any) -> bytes:
    return message if isinstance(message, bytes) else message.SerializeToString()


def _handler(method: Any, behaviour: Callable[..., Any]) -> grpc.RpcMethodHandler:
    request_cls = getattr(pb, method.input_type.name)
    deserialize = InferCall.parse if method.input_type.name == "ModelInferRequest" else request_cls.FromString
    if method.client_streaming and method.server_streaming:
        make = grpc.stream_stream_rpc_method_handler
    elif method.server_streaming:
        make = grpc.unary_stream_rpc_method_handler
    elif method.client_streaming:
        make = grpc.stream_unary_rpc_method_handler
    else:
        make = grpc.unary_unary_rpc_method_handler
    return make(behaviour, request_deserializer=deserialize, response_serializer=_serialize)


def add_inference_service(servicer: grpc_service_pb2_grpc.GRPCInferenceServiceServicer, server: grpc.aio.Server) -> None:
    """Register every RPC of the service, as the generated `add_..._to_server` would."""
    handlers = {m.name: _handler(m, getattr(servicer, m.name)) for m in SERVICE.methods}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),))
    server.add_registered_method_handlers(SERVICE.full_name, handlers)
