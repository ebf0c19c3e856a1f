"""Wires one model service together: its versions, worker, gRPC server, metrics, repository
commands; start and drain."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any
from wsgiref.simple_server import WSGIServer

from redis.exceptions import RedisError

from tensorgate.errors import InternalError, TensorgateError, status_value
from services.grpc.server import GrpcServer, server_tls
from services.grpc.servicer import InferenceServicer
from services.health import follow_redis
from services.metrics import Metrics
from services.modelservice.backend import DirectBackend
from services.modelservice.versions import ModelVersions
from services.modelservice.worker import Worker
from services.queue import keys, streams
from services.queue.counters import StatisticsBuffer
from services.queue.messages import ReplyEntry
from services.settings import ModelServiceSettings

log = logging.getLogger(__name__)

COMMAND_POLL_S = 1.0  # a blocking pub/sub read waits at most this long (well under the socket timeout)


class ModelServiceApp:
    def __init__(self, settings: ModelServiceSettings) -> None:
        self.settings = settings
        self.versions = ModelVersions(settings)
        self.versions.load_initial()
        self.metrics = Metrics()
        for loaded in self.versions.current.values():
            self.metrics.execution_provider.labels(settings.name, loaded.model.provider).set(1)
        # Blocking reads wait idle_block_ms, so the socket timeout must outlast them.
        timeout = settings.redis_timeout_s + settings.idle_block_ms / 1000
        self.redis = streams.connect(settings.redis_url, timeout)
        self.statistics = StatisticsBuffer(self.redis)
        self.backend = DirectBackend(self.versions, self.redis, self.statistics, settings.drain_s)
        default = self.versions.default
        assert default is not None  # load_initial raised otherwise
        servicer = InferenceServicer(self.backend, self.metrics, default_timeout_s=default.spec.default_timeout_s or 30.0,
                                     server_name=f"tensorgate-model-{settings.name}")
        self.grpc = GrpcServer(servicer, settings.host, settings.grpc_port, settings.max_message_mb,
                               tls=server_tls(settings), max_concurrent_rpcs=settings.max_concurrent_rpcs)
        consumer = self.consumer = streams.RequestConsumer(self.redis, settings.name, settings.consumer)
        self.worker = Worker(self.versions, consumer, self.metrics, settings, self.statistics)
        self._metrics_server: tuple[WSGIServer, threading.Thread] | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._running_commands: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await asyncio.to_thread(self.versions.warmup)
        await self.redis.ping()
        self._metrics_server = self.metrics.serve(self.settings.metrics_port, self.settings.host)
        await self.grpc.start()
        self._tasks = [asyncio.create_task(self.statistics.run()), asyncio.create_task(self._commands())]
        if self.settings.repository_poll_s > 0:
            self._tasks.append(asyncio.create_task(self.versions.poll(self.settings.repository_poll_s)))
        self._worker_task = asyncio.create_task(self.worker.run())
        # Health says SERVING only once the gateways can see this replica in the catalogue.
        try:
            await asyncio.wait_for(self.worker.announced.wait(), self.settings.redis_timeout_s)
        except TimeoutError:
            log.warning("first heartbeat not written within %.1fs; serving anyway", self.settings.redis_timeout_s)
        self.backend.ready = True
        self._tasks.append(asyncio.create_task(
            follow_redis(self.redis.ping, self.grpc.set_serving, lambda: self.backend.ready)))
        log.info("model %s ready: versions %s, gRPC :%d, metrics :%d", self.settings.name,
                 sorted(self.versions.current, key=int), self.grpc.port, self.settings.metrics_port)

    def failed(self) -> asyncio.Future[None] | None:
        return self._worker_task

    # -- repository commands from the gateways ----------------------------------------
    async def _commands(self) -> None:
        """Follow control:<model> (pub/sub): each gateway's load or unload, answered on its reply stream."""
        channel = keys.control(self.settings.name)
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel)
                while True:
                    message: Any = await pubsub.get_message(timeout=COMMAND_POLL_S)
                    if message is not None and message.get("type") == "message":
                        task = asyncio.create_task(self._run_command(message["data"]))
                        self._running_commands.add(task)
                        task.add_done_callback(self._running_commands.discard)
            except (RedisError, TimeoutError, OSError) as err:
                log.warning("repository commands: %s; subscribing again", err)
                await asyncio.sleep(1.0)
            finally:
                try:
                    await pubsub.aclose()
                except (RedisError, OSError):
                    pass

    async def _run_command(self, raw: bytes) -> None:
        try:
            command = json.loads(raw)
            op, command_id, reply_to = command["op"], str(command["id"]), str(command["reply_to"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed repository command: %r", raw[:200])
            return
        reply = ReplyEntry(command_id, 0)
        try:
            if op == "load":
                await self.backend.load(self.settings.name)
            elif op == "unload":
                await self.backend.unload(self.settings.name)
            else:
                raise InternalError(f"unknown repository command '{op}'")
        except TensorgateError as err:
            reply = ReplyEntry(command_id, status_value(err), str(err))
        log.info("repository command %s: %s", op, reply.message or "done")
        try:
            await self.worker.heartbeat()  # the new state in the catalogue before the gateway hears back
            await self.redis.xadd(reply_to, reply.to_fields())  # type: ignore[arg-type]
        except RedisError as err:
            log.warning("could not answer repository command %s: %s", command_id, err)

    # -- shutdown -------------------------------------------------------------------------
    async def stop(self) -> None:
        """Stop taking work, finish what this replica holds, then close."""
        self.backend.ready = False
        for task in self._tasks[1:]:
            task.cancel()
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
        if self._tasks:
            await self._tasks[0]
        await self.consumer.close()
        await self.redis.aclose()
        if self._metrics_server is not None:
            self._metrics_server[0].shutdown()
            self._metrics_server[0].server_close()
        self.metrics.close()
        await self.versions.close()
