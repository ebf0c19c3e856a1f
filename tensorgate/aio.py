"""The asyncio client (grpc.aio): the same calls as `tensorgate.Client`, awaited.

    async with tensorgate.AsyncClient("localhost:8001") as client:
        async for index, translation in client.translate_stream(sentences):
            print(index, translation.text)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np

from tensorgate.proto import grpc_service_pb2 as kserve
from tensorgate.proto import grpc_service_pb2_grpc, tensorgate_pb2_grpc
from tensorgate import wire
from tensorgate.client import DEFAULT_URL
from tensorgate.results import Classified, Generated, InferenceError, ModelState, Translation

T = TypeVar("T")


class AsyncClient:
    """Options as for `tensorgate.Client`. Create it inside the event loop that uses it."""

    def __init__(self, url: str = DEFAULT_URL, *, timeout_s: float = 30.0, api_key: str | None = None,
                 retries: int = 3, credentials: grpc.ChannelCredentials | None = None, tls: bool = False,
                 root_certificates: str | Path | None = None, certificate_chain: str | Path | None = None,
                 private_key: str | Path | None = None) -> None:
        self._channel = wire.open_channel(grpc.aio, url, retries, credentials or
                                          wire.tls_credentials(tls, root_certificates, certificate_chain, private_key))
        self._api = tensorgate_pb2_grpc.TensorgateStub(self._channel)
        self._kserve = grpc_service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        self._metadata = wire.metadata(api_key)
        self.timeout_s = timeout_s

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _timeout(self, timeout_s: float | None) -> float:
        return self.timeout_s if timeout_s is None else timeout_s

    async def _call(self, method: Callable[..., Awaitable[T]], request: object, timeout_s: float | None) -> T:
        try:
            return await method(request, timeout=self._timeout(timeout_s), metadata=self._metadata)
        except grpc.RpcError as err:
            raise InferenceError(err.code(), err.details() or "") from None

    # -- the typed API -------------------------------------------------------------------
    async def classify(self, images: wire.ImagesLike, model: str = "mnist_cnn", *,
                       timeout_s: float | None = None) -> Classified:
        read = await asyncio.to_thread(wire.read_images, images)  # file I/O off the event loop
        return wire.classified(await self._call(self._api.Classify, wire.classify_request(read, model), timeout_s))

    async def translate(self, sentences: str | Sequence[str], beam_size: int | None = None,
                        model: str = "translator_de_en", *, timeout_s: float | None = None) -> list[Translation]:
        request = wire.translate_request(sentences, beam_size, model)
        return wire.translations(await self._call(self._api.Translate, request, timeout_s))

    async def translate_stream(self, sentences: str | Sequence[str], beam_size: int | None = None,
                               model: str = "translator_de_en", *,
                               timeout_s: float | None = None) -> AsyncIterator[tuple[int, Translation]]:
        """(index, translation) as each sentence is done; leaving the loop early cancels the call."""
        request = wire.translate_request(sentences, beam_size, model)
        call: Any = self._api.TranslateStream(request, timeout=self._timeout(timeout_s), metadata=self._metadata)
        try:
            async for answer in call:
                yield wire.streamed(answer)
        except grpc.RpcError as err:
            raise InferenceError(err.code(), err.details() or "") from None
        finally:
            call.cancel()

    async def generate(self, digit: int, count: int = 1, seed: int = 0, model: str = "digit_gan", *,
                       timeout_s: float | None = None) -> Generated:
        request = wire.generate_request(digit, count, seed, model)
        return wire.generated(await self._call(self._api.Generate, request, timeout_s))

    # -- any model, KServe ---------------------------------------------------------------
    async def infer(self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] = (),
                    request_id: str = "", parameters: Mapping[str, int | str | bool] | None = None, *,
                    timeout_s: float | None = None) -> dict[str, np.ndarray]:
        request = wire.infer_request(model, inputs, outputs, request_id, parameters)
        return wire.inferred(await self._call(self._kserve.ModelInfer, request, timeout_s))

    async def models(self, *, timeout_s: float | None = None) -> list[ModelState]:
        return wire.model_states(await self.repository_index(timeout_s=timeout_s))

    async def repository_index(self, *, timeout_s: float | None = None) -> kserve.RepositoryIndexResponse:
        """As Client.repository_index: every model version, its state and why when not plainly ready."""
        return await self._call(self._kserve.RepositoryIndex, kserve.RepositoryIndexRequest(), timeout_s)

    async def statistics(self, model: str = "", *, timeout_s: float | None = None) -> kserve.ModelStatisticsResponse:
        return await self._call(self._kserve.ModelStatistics, kserve.ModelStatisticsRequest(name=model), timeout_s)

    async def live(self, *, timeout_s: float | None = None) -> bool:
        return bool((await self._call(self._kserve.ServerLive, kserve.ServerLiveRequest(), timeout_s)).live)

    async def ready(self, *, timeout_s: float | None = None) -> bool:
        return bool((await self._call(self._kserve.ServerReady, kserve.ServerReadyRequest(), timeout_s)).ready)
