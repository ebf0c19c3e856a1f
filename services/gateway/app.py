"""Wires the gateway together: repository, queue backend, gRPC server, metrics."""

from __future__ import annotations

import asyncio
import logging
import threading
from wsgiref.simple_server import WSGIServer

from services.gateway.dispatcher import QueueBackend
from services.grpc.application import ApplicationServicer
from services.grpc.server import GrpcServer, server_tls
from services.health import follow_redis
from services.grpc.servicer import InferenceServicer
from services.metrics import Metrics
from services.settings import GatewaySettings

log = logging.getLogger(__name__)


class GatewayApp:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.backend = QueueBackend(settings, self.metrics)
        self.specs = self.backend.specs  # the live set, updated in place
        servicer = InferenceServicer(self.backend, self.metrics, settings.default_timeout_s,
                                     max_timeout_s=settings.max_timeout_s)
        self.grpc = GrpcServer(servicer, settings.host, settings.grpc_port, settings.max_message_mb, settings.api_keys,
                               application=ApplicationServicer(servicer, self.specs), tls=server_tls(settings),
                               max_concurrent_rpcs=settings.max_concurrent_rpcs)
        self._metrics_server: tuple[WSGIServer, threading.Thread] | None = None
        self._health: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.backend.start()
        self._metrics_server = self.metrics.serve(self.settings.metrics_port, self.settings.host)
        await self.grpc.start()
        self._health = asyncio.create_task(follow_redis(self.backend.ping, self.grpc.set_serving, lambda: True))
        log.info("gateway ready: gRPC :%d, metrics :%d, models %s", self.grpc.port, self.settings.metrics_port,
                 ", ".join(self.specs))

    def failed(self) -> asyncio.Future[None] | None:
        return None

    async def stop(self) -> None:
        """Health NOT_SERVING, then in-flight calls get grace_s to finish, then the queue closes."""
        log.info("draining: health NOT_SERVING, in-flight calls get %.1fs", self.settings.grace_s)
        if self._health is not None:
            self._health.cancel()
        await self.grpc.stop(self.settings.grace_s)
        log.info("gRPC server stopped; closing the queue")
        await self.backend.stop()
        if self._metrics_server is not None:
            self._metrics_server[0].shutdown()
            self._metrics_server[0].server_close()
        self.metrics.close()
        log.info("gateway stopped")
