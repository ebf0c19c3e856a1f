"""Wires one model service together: model, worker, gRPC server, metrics; start and drain."""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from services.grpc.server import GrpcServer, server_tls
from services.health import follow_redis
from services.grpc.servicer import InferenceServicer
from services.metrics import Metrics
from services.modelservice.backend import DirectBackend
from services.modelservice.runners import load_model
from services.modelservice.worker import Worker
from services.queue import streams
from services.queue.counters import StatisticsBuffer
from services.repository import load_spec
from services.settings import ModelServiceSettings

log = logging.getLogger(__name__)


class ModelServiceApp:
    def __init__(self, settings: ModelServiceSettings) -> None:
        self.settings = settings
        self.spec = load_spec(Path(settings.model_repository) / settings.name, settings.version)
        self.metrics = Metrics()
        # One thread per model instance: ONNX Runtime parallelises inside a call, and up to
        # `instance_count` batches run at once, each on its own session.
        self.executor = ThreadPoolExecutor(max_workers=self.spec.instance_count, thread_name_prefix=f"ort-{settings.name}")
        self.model = load_model(self.spec, settings)
        self.metrics.execution_provider.labels(self.spec.name, self.model.provider).set(1)
        # Blocking reads wait idle_block_ms, so the socket timeout must outlast them.
        timeout = settings.redis_timeout_s + settings.idle_block_ms / 1000
        self.redis = streams.connect(settings.redis_url, timeout)
        self.statistics = StatisticsBuffer(self.redis)
        self.backend = DirectBackend(self.spec, self.model, self.redis, self.executor, self.statistics)
        servicer = InferenceServicer(self.backend, self.metrics, default_timeout_s=self.spec.default_timeout_s or 30.0,
                                     server_name=f"tensorgate-model-{self.spec.name}")
        self.grpc = GrpcServer(servicer, settings.host, settings.grpc_port, settings.max_message_mb,
                               tls=server_tls(settings), max_concurrent_rpcs=settings.max_concurrent_rpcs)
        consumer = streams.RequestConsumer(self.redis, self.spec.name, settings.consumer)
        self.worker = Worker(self.spec, self.model, consumer, self.metrics, settings, self.executor, self.statistics)
        self._metrics_server: tuple[WSGIServer, threading.Thread] | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._statistics_task: asyncio.Task[None] | None = None
        self._health: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self.executor, self.model.warmup)
        await self.redis.ping()
        self._metrics_server = self.metrics.serve(self.settings.metrics_port, self.settings.host)
        await self.grpc.start()
        self._statistics_task = asyncio.create_task(self.statistics.run())
        self._worker_task = asyncio.create_task(self.worker.run())
        self.backend.ready = True
        self._health = asyncio.create_task(follow_redis(self.redis.ping, self.grpc.set_serving, lambda: self.backend.ready))
        log.info("model %s ready: gRPC :%d, metrics :%d, provider %s", self.spec.name, self.grpc.port,
                 self.settings.metrics_port, self.model.provider)

    def failed(self) -> asyncio.Future[None] | None:
        return self._worker_task

    async def stop(self) -> None:
        """Stop taking work, finish what this replica holds, then close."""
        self.backend.ready = False
        if self._health is not None:
            self._health.cancel()
        await self.grpc.set_serving(False)  # first: balancers stop sending direct calls while it drains
        await self.worker.stop()
        if self._worker_task is not None:
            try:
                await asyncio.wait_for(self._worker_task, self.settings.drain_s + self.settings.grace_s)
            except TimeoutError:
                log.warning("worker did not drain within %.1fs; its entries stay pending for other replicas",
                            self.settings.drain_s + self.settings.grace_s)
        await self.grpc.stop(self.settings.grace_s)
        await self.statistics.close()
        if self._statistics_task is not None:
            await self._statistics_task
        await self.redis.aclose()
        if self._metrics_server is not None:
            self._metrics_server[0].shutdown()
        self.executor.shutdown(wait=True)
        self.model.close()
