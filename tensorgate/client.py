"""The blocking client: typed calls over the gateway's `tensorgate.v1.Tensorgate` API, and any
model over KServe's ModelInfer, on one channel.

    with tensorgate.Client("localhost:8001") as client:
        labels, probabilities = client.classify(["seven.jpg", "two.png"])
        for text, score in client.translate(["Ich habe keine Zeit."]):
            print(text)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np

from tensorgate.proto import grpc_service_pb2 as kserve
from tensorgate.proto import grpc_service_pb2_grpc, tensorgate_pb2_grpc
from tensorgate import wire
from tensorgate.results import Classified, Generated, InferenceError, ModelState, Translation

T = TypeVar("T")

DEFAULT_URL = "localhost:8001"


class Client:
    """`url` is host:port. Every call takes `timeout_s` (its deadline; the client's default when
    None); UNAVAILABLE is retried `retries` times with exponential backoff within that deadline,
    any other status raises InferenceError at once. `api_key` is sent as `authorization: Bearer`.
    TLS: `tls=True` (trusting the system's roots), or `root_certificates` (PEM file of the roots
    to trust), plus `certificate_chain` and `private_key` for mutual TLS; or ready `credentials`.
    Plain text otherwise."""

    def __init__(self, url: str = DEFAULT_URL, *, timeout_s: float = 30.0, api_key: str | None = None,
                 retries: int = 3, credentials: grpc.ChannelCredentials | None = None, tls: bool = False,
                 root_certificates: str | Path | None = None, certificate_chain: str | Path | None = None,
                 private_key: str | Path | None = None) -> None:
        self._channel = wire.open_channel(grpc, url, retries, credentials or
                                          wire.tls_credentials(tls, root_certificates, certificate_chain, private_key))
        self._api = tensorgate_pb2_grpc.TensorgateStub(self._channel)
        self._kserve = grpc_service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        self._metadata = wire.metadata(api_key)
        self.timeout_s = timeout_s

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Callable[..., T], request: object, timeout_s: float | None) -> T:
        try:
            return method(request, timeout=self.timeout_s if timeout_s is None else timeout_s, metadata=self._metadata)
        except grpc.RpcError as err:
            raise InferenceError(err.code(), err.details() or "") from None

    # -- the typed API -------------------------------------------------------------------
    def classify(self, images: wire.ImagesLike, model: str = "mnist_cnn", *,
                 timeout_s: float | None = None) -> Classified:
        """Image files, their bytes, or pixels (see wire.ImageLike; a (N, 1, 28, 28) array is N images)
        -> labels (N,) and probabilities (N, 10)."""
        request = wire.classify_request(wire.read_images(images), model)
        return wire.classified(self._call(self._api.Classify, request, timeout_s))

    def translate(self, sentences: str | Sequence[str], beam_size: int | None = None,
                  model: str = "translator_de_en", *, timeout_s: float | None = None) -> list[Translation]:
        """German sentences -> (text, score) each, in order. beam_size None: the model's default; 1: greedy."""
        request = wire.translate_request(sentences, beam_size, model)
        return wire.translations(self._call(self._api.Translate, request, timeout_s))

    def translate_stream(self, sentences: str | Sequence[str], beam_size: int | None = None,
                         model: str = "translator_de_en", *,
                         timeout_s: float | None = None) -> Iterator[tuple[int, Translation]]:
        """(index, translation) of each sentence as soon as it is done, in any order. Closing the
        iterator early (break) cancels the call."""
        request = wire.translate_request(sentences, beam_size, model)
        answers: Any = self._call(self._api.TranslateStream, request, timeout_s)
        try:
            for answer in answers:
                yield wire.streamed(answer)
        except grpc.RpcError as err:
            raise InferenceError(err.code(), err.details() or "") from None
        finally:
            answers.cancel()

    def generate(self, digit: int, count: int = 1, seed: int = 0, model: str = "digit_gan", *,
                 timeout_s: float | None = None) -> Generated:
        """`count` drawings of `digit` (image i from seed + i: the same seed, the same drawing)."""
        request = wire.generate_request(digit, count, seed, model)
        return wire.generated(self._call(self._api.Generate, request, timeout_s))

    # -- any model, KServe ---------------------------------------------------------------
    def infer(self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] = (), request_id: str = "",
              parameters: Mapping[str, int | str | bool] | None = None, *,
              timeout_s: float | None = None) -> dict[str, np.ndarray]:
        """One ModelInfer: numpy inputs by name -> numpy outputs by name."""
        request = wire.infer_request(model, inputs, outputs, request_id, parameters)
        return wire.inferred(self._call(self._kserve.ModelInfer, request, timeout_s))

    def models(self, *, timeout_s: float | None = None) -> list[ModelState]:
        """(name, version, state) of every model the gateway serves."""
        return wire.model_states(self.repository_index(timeout_s=timeout_s))

    def repository_index(self, *, timeout_s: float | None = None) -> kserve.RepositoryIndexResponse:
        """RepositoryIndex as the gateway answers it: every model version, its state and, when it
        is not plainly ready, why (e.g. the error of a version that failed to load)."""
        return self._call(self._kserve.RepositoryIndex, kserve.RepositoryIndexRequest(), timeout_s)

    def statistics(self, model: str = "", *, timeout_s: float | None = None) -> kserve.ModelStatisticsResponse:
        """Triton's ModelStatistics of one model, or of all when `model` is empty."""
        return self._call(self._kserve.ModelStatistics, kserve.ModelStatisticsRequest(name=model), timeout_s)

    def live(self, *, timeout_s: float | None = None) -> bool:
        return bool(self._call(self._kserve.ServerLive, kserve.ServerLiveRequest(), timeout_s).live)

    def ready(self, *, timeout_s: float | None = None) -> bool:
        return bool(self._call(self._kserve.ServerReady, kserve.ServerReadyRequest(), timeout_s).ready)
