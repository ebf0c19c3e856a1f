"""Builds a grpc.aio server with the KServe service, health checking and reflection."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.grpc.auth import ApiKeyInterceptor
from services.grpc.handlers import add_inference_service
from services.proto import grpc_service_pb2, grpc_service_pb2_grpc

KSERVE_SERVICE = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


class GrpcServer:
    """A started server and its health servicer, so shutdown can flip health first."""

    def __init__(
        self,
        servicer: grpc_service_pb2_grpc.GRPCInferenceServiceServicer,
        host: str,
        port: int,
        max_message_mb: int,
        api_keys: Sequence[str] = (),
    ) -> None:
        limit = max_message_mb * 1024 * 1024
        self.server = grpc.aio.server(
            interceptors=[ApiKeyInterceptor(api_keys)] if api_keys else None,
            options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)],
        )
        add_inference_service(servicer, self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (KSERVE_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise OSError(f"cannot bind gRPC server to {host}:{port}")

    async def start(self) -> None:
        await self.server.start()

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", KSERVE_SERVICE):
            await self.health.set(name, status)

    async def stop(self, grace_s: float) -> None:
        """Health goes NOT_SERVING first so balancers stop sending, then in-flight calls get grace_s."""
        await self.set_serving(False)
        await self.server.stop(grace_s)
