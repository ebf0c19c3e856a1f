"""A small synchronous client over the gateway's KServe v2 gRPC API.

    client = Client("localhost:8001")
    labels, probs = client.classify([load_digit("seven.png")])

Triton's own `tritonclient.grpc` works against the same port; this one adds typed helpers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc
import numpy as np

from services.proto import grpc_service_pb2 as pb
from services.proto import grpc_service_pb2_grpc
from services.tensors import add_input, response_outputs
from tensorgate.digits import load_digit as _load_digit


class InferenceError(Exception):
    """A call the server refused or could not answer; `code` is the gRPC status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


def load_digit(path: str | Path) -> np.ndarray:
    """An image file -> the MNIST models' input [1, 28, 28] float32 in 0..1, white digit on black,
    prepared as MNIST was made (tensorgate.digits, the same function the model service runs on
    `image_bytes`): polarity, paper and specks removed, cropped, fitted to 20x20, centred by mass."""
    return _load_digit(path)


class Client:
    def __init__(self, url: str = "localhost:8001", timeout_s: float = 30.0) -> None:
        self._channel = grpc.insecure_channel(url)
        self._stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        self.timeout_s = timeout_s

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, request: object) -> object:
        try:
            return getattr(self._stub, method)(request, timeout=self.timeout_s)
        except grpc.RpcError as err:
            raise InferenceError(err.code(), err.details() or "") from err

    # -- health and metadata ---------------------------------------------------------
    def live(self) -> bool:
        return bool(self._call("ServerLive", pb.ServerLiveRequest()).live)  # type: ignore[attr-defined]

    def ready(self) -> bool:
        return bool(self._call("ServerReady", pb.ServerReadyRequest()).ready)  # type: ignore[attr-defined]

    def model_ready(self, model: str) -> bool:
        return bool(self._call("ModelReady", pb.ModelReadyRequest(name=model)).ready)  # type: ignore[attr-defined]

    def models(self) -> list[tuple[str, str, str]]:
        """(name, version, state) of every model in the repository."""
        index = self._call("RepositoryIndex", pb.RepositoryIndexRequest())
        return [(m.name, m.version, m.state) for m in index.models]  # type: ignore[attr-defined]

    def metadata(self, model: str) -> pb.ModelMetadataResponse:
        return self._call("ModelMetadata", pb.ModelMetadataRequest(name=model))  # type: ignore[return-value]

    def statistics(self, model: str = "") -> pb.ModelStatisticsResponse:
        return self._call("ModelStatistics", pb.ModelStatisticsRequest(name=model))  # type: ignore[return-value]

    # -- inference ---------------------------------------------------------------------
    def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] = (),
        request_id: str = "",
        parameters: Mapping[str, int | str | bool] | None = None,
    ) -> dict[str, np.ndarray]:
        request = pb.ModelInferRequest(model_name=model, id=request_id)
        for name, array in inputs.items():
            add_input(request, name, np.asarray(array))
        for name in outputs:
            request.outputs.add(name=name)
        for key, value in (parameters or {}).items():
            param = request.parameters[key]
            if isinstance(value, bool):
                param.bool_param = value
            elif isinstance(value, int):
                param.int64_param = value
            else:
                param.string_param = value
        response = self._call("ModelInfer", request)
        return response_outputs(response)  # type: ignore[arg-type]

    def classify(self, images: np.ndarray | Sequence[np.ndarray], model: str = "mnist_mlp") -> tuple[np.ndarray, np.ndarray]:
        """Digits [N, 1, 28, 28] (or a list of [1, 28, 28]) -> (labels [N], probabilities [N, 10])."""
        batch = np.asarray(np.stack(images) if isinstance(images, (list, tuple)) else images, dtype=np.float32)
        if batch.ndim == 3:
            batch = batch[:, None]
        probs = self.infer(model, {"image": batch})["probabilities"]
        return probs.argmax(axis=1), probs

    def translate(self, sentences: str | Sequence[str], beam_size: int | None = None,
                  model: str = "translator_de_en") -> list[tuple[str, float]]:
        """German sentences -> (English, score) each; score is the length-normalised log-probability.
        beam_size None keeps the model's default (its config), 1 is greedy search."""
        batch = [sentences] if isinstance(sentences, str) else list(sentences)
        text = np.empty(len(batch), dtype=object)
        text[:] = [s.encode("utf-8") for s in batch]
        params = {"beam_size": beam_size} if beam_size is not None else None
        out = self.infer(model, {"text": text}, parameters=params)
        return [(t.decode("utf-8"), float(s)) for t, s in zip(out["translation"].reshape(-1), out["score"].reshape(-1))]

    def generate(self, digits: int | Sequence[int], seeds: int | Sequence[int] | None = None,
                 model: str = "digit_gan") -> np.ndarray:
        """Digits to draw (0-9) -> images [N, 1, 28, 28] in 0..1; the same seed draws the same image.
        Seeds default to 0, 1, 2, ..."""
        wanted = np.atleast_1d(np.asarray(digits, dtype=np.int64))
        chosen = np.arange(len(wanted), dtype=np.int64) if seeds is None else np.atleast_1d(np.asarray(seeds, dtype=np.int64))
        return self.infer(model, {"digit": wanted, "seed": chosen})["image"]

