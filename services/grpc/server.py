"""Builds a grpc.aio server with the KServe service (and, on the gateway, the typed application
API), health checking and reflection."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.grpc.application import SERVICE as APPLICATION_SERVICE
from services.grpc.application import ApplicationServicer, add_application_service
from services.grpc.auth import ApiKeyInterceptor
from services.grpc.handlers import add_inference_service
from services.grpc.tls import TlsFiles
from tensorgate.proto import grpc_service_pb2, grpc_service_pb2_grpc
from services.settings import ServerSettings

KSERVE_SERVICE = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


def server_tls(settings: ServerSettings) -> TlsFiles | None:
    return TlsFiles.from_settings(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)


class GrpcServer:
    """A started server and its health servicer, so shutdown can flip health first."""

    def __init__(
        self,
        servicer: grpc_service_pb2_grpc.GRPCInferenceServiceServicer,
        host: str,
        port: int,
        max_message_mb: int,
        api_keys: Sequence[str] = (),
        application: ApplicationServicer | None = None,
        tls: TlsFiles | None = None,
        max_concurrent_rpcs: int | None = None,
    ) -> None:
        limit = max_message_mb * 1024 * 1024
        self.server = grpc.aio.server(
            interceptors=[ApiKeyInterceptor(api_keys)] if api_keys else None,
            options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)],
            maximum_concurrent_rpcs=max_concurrent_rpcs or None,  # past it: RESOURCE_EXHAUSTED at once
        )
        add_inference_service(servicer, self.server)
        self.services: tuple[str, ...] = (KSERVE_SERVICE,)
        if application is not None:
            add_application_service(application, self.server)
            self.services += (APPLICATION_SERVICE.full_name,)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if not api_keys:  # with API keys, a stranger learns nothing of the API from the server
            reflection.enable_server_reflection((*self.services, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        address = f"{host}:{port}"
        self.port = (self.server.add_secure_port(address, tls.credentials()) if tls is not None
                     else self.server.add_insecure_port(address))
        if self.port == 0:
            raise OSError(f"cannot bind gRPC server to {host}:{port}")

    async def start(self) -> None:
        await self.server.start()

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *self.services):
            await self.health.set(name, status)

    async def stop(self, grace_s: float) -> None:
        """Health goes NOT_SERVING first so balancers stop sending, then in-flight calls get grace_s."""
        await self.set_serving(False)
        await self.server.stop(grace_s)
