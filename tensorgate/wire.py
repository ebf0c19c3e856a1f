"""Requests and answers of the SDK, shared by the blocking and the asyncio client: Python values
in, protobuf messages to the gateway, Python values back; and the channel options (retries)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import grpc
import numpy as np

from tensorgate.proto import grpc_service_pb2 as kserve
from tensorgate.proto import tensorgate_pb2 as pb
from tensorgate.tensors import add_input, response_outputs
from tensorgate.results import Classified, Generated, ModelState, Translation

# One image for classify: a file path or the file's bytes (PNG, JPEG, BMP, GIF, WebP; the server
# prepares it as MNIST was made), or pixels (28, 28) / (1, 28, 28) in 0..1, white on black.
ImageLike = Union[str, "os.PathLike[str]", bytes, np.ndarray]
ImagesLike = Union[ImageLike, Sequence[ImageLike]]

SERVICES = ("tensorgate.v1.Tensorgate", "inference.GRPCInferenceService")
MAX_ATTEMPTS = 5  # gRPC's own cap on retry attempts


def channel_options(retries: int, max_message_mb: int = 64) -> list[tuple[str, object]]:
    """gRPC's own retry policy: UNAVAILABLE (no replica, gateway draining, connection refused) is
    tried again `retries` times with exponential backoff (0.1 s, 0.2 s, ... at most 2 s, jittered),
    within the call's deadline; every other status is final."""
    if not 0 <= retries < MAX_ATTEMPTS:
        raise ValueError(f"retries must be 0..{MAX_ATTEMPTS - 1} (gRPC allows {MAX_ATTEMPTS} attempts), got {retries}")
    limit = max_message_mb * 1024 * 1024
    options: list[tuple[str, object]] = [
        ("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit),
        # A request larger than the retry buffer would silently not be retried.
        ("grpc.per_rpc_retry_buffer_size", limit), ("grpc.retry_buffer_size", limit),
    ]
    if retries:
        policy = {"maxAttempts": retries + 1, "initialBackoff": "0.1s", "maxBackoff": "2s",
                  "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}
        config = {"methodConfig": [{"name": [{"service": s} for s in SERVICES], "retryPolicy": policy}]}
        options += [("grpc.enable_retries", 1), ("grpc.service_config", json.dumps(config))]
    else:
        options.append(("grpc.enable_retries", 0))
    return options


def metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


# -- classify -------------------------------------------------------------------------
def _pixels(array: np.ndarray) -> list[np.ndarray]:
    """(28, 28), (1, 28, 28), (N, 28, 28) or (N, 1, 28, 28) -> one (784,) row per image."""
    array = np.asarray(array, dtype=np.float32)
    if array.shape[-2:] != (28, 28) or array.ndim > 4 or (array.ndim == 4 and array.shape[1] != 1):
        raise ValueError(f"pixels must be (28, 28), (1, 28, 28), (N, 28, 28) or (N, 1, 28, 28); got {array.shape}")
    return list(array.reshape(-1, 28 * 28))


def read_images(images: ImagesLike) -> list[bytes | np.ndarray]:
    """Each image as encoded bytes (files are read: blocking I/O) or a (784,) pixel row."""
    items = [images] if isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview, np.ndarray)) else images
    out: list[bytes | np.ndarray] = []
    for item in items:
        if isinstance(item, np.ndarray):
            out.extend(_pixels(item))
        elif isinstance(item, (bytes, bytearray, memoryview)):
            out.append(bytes(item))
        else:
            with open(item, "rb") as f:
                out.append(f.read())
    return out


def classify_request(images: Sequence[bytes | np.ndarray], model: str, top_k: int = 1) -> pb.ClassifyRequest:
    request = pb.ClassifyRequest(model=model, top_k=top_k)
    for image in images:
        if isinstance(image, bytes):
            request.images.add(encoded=image)
        else:
            request.images.add(pixels=pb.Pixels(values=image.tolist()))
    return request


def classified(response: pb.ClassifyResponse) -> Classified:
    probabilities = np.array([r.probabilities for r in response.results], np.float32).reshape(len(response.results), -1)
    return Classified(np.array([r.label for r in response.results], np.int64), probabilities)


# -- translate ------------------------------------------------------------------------
def translate_request(sentences: str | Sequence[str], beam_size: int | None, model: str) -> pb.TranslateRequest:
    batch = [sentences] if isinstance(sentences, str) else list(sentences)
    return pb.TranslateRequest(sentences=batch, beam_size=beam_size, model=model)


def translations(response: pb.TranslateResponse) -> list[Translation]:
    return [Translation(t.text, t.score) for t in response.translations]


def streamed(answer: pb.TranslateStreamResponse) -> tuple[int, Translation]:
    return answer.index, Translation(answer.translation.text, answer.translation.score)


# -- generate -------------------------------------------------------------------------
def generate_request(digit: int, count: int, seed: int, model: str) -> pb.GenerateRequest:
    return pb.GenerateRequest(digit=digit, count=count, seed=seed, model=model)


def generated(response: pb.GenerateResponse) -> Generated:
    images = np.array([i.values for i in response.images], np.float32).reshape(-1, 1, 28, 28)
    return Generated(images, np.array(response.seeds, np.int64), response.png)


# -- KServe ---------------------------------------------------------------------------
def infer_request(model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] = (), request_id: str = "",
                  parameters: Mapping[str, int | str | bool] | None = None) -> kserve.ModelInferRequest:
    request = kserve.ModelInferRequest(model_name=model, id=request_id)
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
    return request


def inferred(response: kserve.ModelInferResponse) -> dict[str, np.ndarray]:
    return response_outputs(response)


def model_states(index: kserve.RepositoryIndexResponse) -> list[ModelState]:
    return [ModelState(m.name, m.version, m.state) for m in index.models]


def open_channel(module: Any, url: str, retries: int, credentials: grpc.ChannelCredentials | None) -> Any:
    """A channel of `module` (grpc, or grpc.aio for AsyncClient) with the retry policy: TLS when
    `credentials` are given, plain text otherwise."""
    options = channel_options(retries)
    if credentials is not None:
        return module.secure_channel(url, credentials, options)
    return module.insecure_channel(url, options)


def tls_credentials(tls: bool = False, root_certificates: str | Path | None = None,
                    certificate_chain: str | Path | None = None,
                    private_key: str | Path | None = None) -> grpc.ChannelCredentials | None:
    """TLS credentials from PEM files: `root_certificates` to trust (default: the system's), and a
    client certificate with its key for mutual TLS. None (plain text) when nothing asks for TLS."""
    if (certificate_chain is None) != (private_key is None):
        raise ValueError("a client certificate needs its private key, and the key its certificate")
    if not (tls or root_certificates or certificate_chain):
        return None

    def read(path: str | Path | None) -> bytes | None:
        return Path(path).read_bytes() if path else None

    return grpc.ssl_channel_credentials(read(root_certificates), read(private_key), read(certificate_chain))
