"""`inference.GRPCInferenceService` (KServe v2 + Triton's extensions), thin: proto in ->
backend call -> proto out. Errors become gRPC statuses in services.grpc.status and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping

import grpc

from services import __version__
from tensorgate.errors import INTERNAL_MESSAGE, InvalidArgument, ModelNotFound, TensorgateError
from services.grpc import statistics
from services.grpc.backend import Backend
from services.grpc.handlers import InferCall, stream_response
from services.grpc.status import rpc
from services.metrics import Metrics
from tensorgate.proto import grpc_service_pb2 as pb
from tensorgate.proto import grpc_service_pb2_grpc
from tensorgate.repository import ModelSpec
from services.validation import validate

log = logging.getLogger(__name__)

# Only what is really implemented; perf_analyzer asks for ModelStatistics when it sees "statistics".
EXTENSIONS = ("model_configuration", "statistics", "model_repository")
# Triton's per-request timeout parameter, in microseconds.
TIMEOUT_PARAMETER = "timeout"

class InferenceServicer(grpc_service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, backend: Backend, metrics: Metrics, default_timeout_s: float, server_name: str = "tensorgate",
                 max_timeout_s: float = 300.0) -> None:
        self._backend = backend
        self._metrics = metrics
        self._default_timeout_s = default_timeout_s
        self._max_timeout_s = max_timeout_s
        self._server_name = server_name

    # -- lookups -----------------------------------------------------------------
    def _spec(self, name: str, version: str = "") -> ModelSpec:
        """The newest version of a model, or the version named (which must be servable now)."""
        spec = self._backend.specs.get(name)
        if spec is None:
            known = ", ".join(sorted(self._backend.specs)) or "none"
            raise ModelNotFound(f"unknown model '{name}' (serving: {known})")
        return self._backend.version_spec(name, version) if version else spec

    def _deadline(self, spec: ModelSpec, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext) -> float:
        """Absolute deadline: the config's default timeout (or ours), a `timeout` parameter where the
        config allows overriding it, never later than the client's own gRPC deadline, and never
        more than the server's maximum (a waiting call holds memory and a queue place)."""
        budget = spec.default_timeout_s or self._default_timeout_s
        if TIMEOUT_PARAMETER in request.parameters and spec.allow_timeout_override:
            micros = request.parameters[TIMEOUT_PARAMETER].int64_param
            if micros <= 0:
                raise InvalidArgument(f"parameter '{TIMEOUT_PARAMETER}' must be a positive int64 of microseconds")
            budget = micros / 1e6
        remaining = context.time_remaining()
        if remaining is not None:
            budget = min(budget, remaining)
        return time.time() + min(budget, self._max_timeout_s)

    # -- health and metadata ------------------------------------------------------
    @rpc
    async def ServerLive(self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @rpc
    async def ServerReady(self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=await self._backend.server_ready())

    @rpc
    async def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext) -> pb.ModelReadyResponse:
        spec = self._spec(request.name, request.version)
        return pb.ModelReadyResponse(ready=await self._backend.model_ready(spec))

    @rpc
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=self._server_name, version=__version__, extensions=list(EXTENSIONS))

    @rpc
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        spec = self._spec(request.name, request.version)
        versions = [request.version] if request.version else self._backend.versions(spec.name)
        meta = pb.ModelMetadataResponse(name=spec.name, versions=versions, platform=spec.config.platform)
        for t in spec.inputs:
            meta.inputs.add(name=t.name, datatype=t.datatype, shape=list(t.model_shape))
        for t in spec.outputs:
            meta.outputs.add(name=t.name, datatype=t.datatype, shape=list(t.model_shape))
        return meta

    @rpc
    async def ModelConfig(self, request: pb.ModelConfigRequest, context: grpc.aio.ServicerContext) -> pb.ModelConfigResponse:
        spec = self._spec(request.name, request.version)
        return pb.ModelConfigResponse(config=spec.config)

    @rpc
    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelStatisticsResponse:
        if request.name:
            spec = self._spec(request.name)
            pairs = [(spec.name, v) for v in ([request.version] if request.version else self._backend.versions(spec.name))]
        else:
            pairs = [(name, v) for name in sorted(self._backend.specs) for v in self._backend.versions(name)]
        response = pb.ModelStatisticsResponse()
        for name, version in pairs:  # one entry per model version, as Triton
            counters = await self._backend.statistics(name, version)
            response.model_stats.append(statistics.to_proto(name, version, counters))
        return response

    @rpc
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        response = pb.RepositoryIndexResponse()
        for entry in await self._backend.index():
            if request.ready and entry.state != "READY":
                continue
            response.models.add(name=entry.name, version=entry.version, state=entry.state, reason=entry.reason)
        return response

    @rpc
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        self._check_repository_request(request.model_name, request.parameters)
        await self._backend.load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    @rpc
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        # tritonclient's unload_model always sends unload_dependents: there are no ensembles here, so
        # no dependents, and the flag changes nothing.
        others = {k: v for k, v in request.parameters.items() if k != "unload_dependents"}
        self._check_repository_request(request.model_name, others)
        await self._backend.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    def _check_repository_request(self, name: str, parameters: Mapping[str, object]) -> None:
        if not name:
            raise InvalidArgument("model_name is required")
        if parameters:
            # Triton's "config" and "file:" overrides: the repository on disk is what replicas load.
            raise InvalidArgument(f"parameters {sorted(parameters)} are not supported: put the config and the "
                                  "version folder into the model repository, then call load")

    # -- inference ----------------------------------------------------------------
    async def infer(self, call: InferCall, context: grpc.aio.ServicerContext) -> bytes:
        """One inference with its metrics: the serialised ModelInferResponse; raises TensorgateError.
        The typed application API (services.grpc.application) sends its requests through here too."""
        started = time.perf_counter()
        request = call.request
        known = self._backend.specs.get(request.model_name)
        model = request.model_name if known is not None else "unknown"
        version = "" if known is None else request.model_version or known.version  # bounded: served versions
        gauge = self._metrics.pending_requests.labels(model)
        gauge.inc()
        try:
            spec = self._spec(request.model_name, request.model_version)
            valid = validate(spec, request)
            response = await self._backend.infer(spec, call, valid, self._deadline(spec, request, context))
            self._metrics.requests.labels(model, version, "success").inc()
            return response
        except TensorgateError as err:
            if isinstance(err, ModelNotFound):
                version = ""  # a version nobody serves is not a label
            self._metrics.requests.labels(model, version, err.reason).inc()
            raise
        except Exception:
            self._metrics.requests.labels(model, version, "internal").inc()
            raise
        finally:
            gauge.dec()
            self._metrics.request_duration.labels(model, version).observe(time.perf_counter() - started)

    @rpc
    async def ModelInfer(self, call: InferCall, context: grpc.aio.ServicerContext) -> bytes:
        return await self.infer(call, context)

    async def ModelStreamInfer(
        self, calls: AsyncIterator[InferCall], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes | pb.ModelStreamInferResponse]:
        """Requests on one stream run concurrently; each answer (or its error) is sent as it
        completes, matched by the request's `id`, as Triton does."""
        answers: asyncio.Queue[bytes | pb.ModelStreamInferResponse | None] = asyncio.Queue()

        async def one(call: InferCall) -> None:
            request = call.request
            try:
                answers.put_nowait(stream_response(await self.infer(call, context)))
            except TensorgateError as err:
                answers.put_nowait(
                    pb.ModelStreamInferResponse(
                        error_message=str(err),
                        infer_response=pb.ModelInferResponse(
                            id=request.id, model_name=request.model_name, model_version=request.model_version
                        ),
                    )
                )
            except Exception:
                log.exception("stream inference failed")
                answers.put_nowait(
                    pb.ModelStreamInferResponse(
                        error_message=INTERNAL_MESSAGE, infer_response=pb.ModelInferResponse(id=request.id)
                    )
                )

        async def read_all() -> None:
            tasks: set[asyncio.Task[None]] = set()
            try:
                async for call in calls:
                    task = asyncio.create_task(one(call))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if tasks:
                    await asyncio.gather(*tasks)
            finally:
                answers.put_nowait(None)

        reader = asyncio.create_task(read_all())
        try:
            while (answer := await answers.get()) is not None:
                yield answer
            await reader
        finally:
            reader.cancel()
