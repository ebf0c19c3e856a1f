"""`tensorgate.v1.Tensorgate`, the typed application API, thin: typed proto in -> ModelInfer
requests through the KServe servicer's own `infer` (validation, deadline, metrics, queue) ->
typed proto out. Statuses come from services.grpc.status, as for KServe.

Classify sends each encoded image as its own request through the classifier's optional
`image_bytes` input (a bad image fails with its index, and never takes the others with it) and
the raw pixels together through `image`; Translate and TranslateStream send one request per
sentence, so each answer can go out the moment it is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

import grpc
import numpy as np

from services import grid
from tensorgate.errors import InvalidArgument
from services.grpc.handlers import InferCall
from services.grpc.status import lenient, rpc, stream_rpc
from tensorgate.proto import grpc_service_pb2 as kserve
from tensorgate.proto import tensorgate_pb2 as pb
from tensorgate.proto import tensorgate_pb2_grpc
from tensorgate.repository import ModelSpec
from tensorgate.tensors import add_input, response_outputs

SERVICE = pb.DESCRIPTOR.services_by_name["Tensorgate"]
DEFAULT_CLASSIFIER = "mnist_cnn"
DEFAULT_TRANSLATOR = "translator_de_en"
DEFAULT_GENERATOR = "digit_gan"
PIXELS = 28 * 28
GRID_COLUMNS = 8

T = TypeVar("T")


class Inference(Protocol):
    """What this service needs of the KServe servicer: one ModelInfer, errors as TensorgateError."""

    async def infer(self, call: InferCall, context: grpc.aio.ServicerContext) -> bytes: ...


def _bytes_tensor(items: Sequence[bytes]) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = list(items)
    return array


def _within(index: str, err: InvalidArgument) -> InvalidArgument:
    """The error of one part of a call, naming the part."""
    return InvalidArgument(f"{index}: {err}")


def _drop(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel what still runs (its reply, when it comes, is dropped); mark the failures of what
    ended as seen, so that asyncio does not log them as never retrieved."""
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()
        task.cancel()


async def _all(calls: Sequence[Awaitable[T]]) -> list[T]:
    """Every result in order; the first failure cancels the rest."""
    tasks = [asyncio.ensure_future(c) for c in calls]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        _drop(tasks)


class ApplicationServicer(tensorgate_pb2_grpc.TensorgateServicer):
    def __init__(self, inference: Inference, specs: dict[str, ModelSpec]) -> None:
        self._inference = inference
        self._specs = specs

    async def _infer(self, request: kserve.ModelInferRequest, context: grpc.aio.ServicerContext,
                     part: str = "") -> kserve.ModelInferResponse:
        try:
            raw = await self._inference.infer(InferCall.of(request), context)
        except InvalidArgument as err:
            raise (_within(part, err) if part else err) from None
        return kserve.ModelInferResponse.FromString(raw)

    def _check_count(self, what: str, count: int, model: str, low: int = 1) -> None:
        """1 to the model's max_batch_size parts per call; an unknown model is left to `infer`'s NOT_FOUND."""
        spec = self._specs.get(model)
        high = spec.max_batch_size if spec is not None and spec.max_batch_size > 0 else None
        if count < low or (high is not None and count > high):
            raise InvalidArgument(f"{what}: {count} given, model '{model}' takes 1 to {high or 'any number'} per call")

    # -- Classify -------------------------------------------------------------------
    @rpc
    async def Classify(self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext) -> pb.ClassifyResponse:
        model = request.model or DEFAULT_CLASSIFIER
        self._check_count("images", len(request.images), model)
        top_k = request.top_k or 1
        if top_k > 10:
            raise InvalidArgument(f"top_k: {top_k} given, at most 10")
        requests: list[tuple[kserve.ModelInferRequest, str]] = []  # and the part each names in errors
        parts: list[list[int]] = []  # the images each request carries
        pixels: list[int] = []
        for i, image in enumerate(request.images):
            kind = image.WhichOneof("kind")
            if kind == "encoded":
                one = kserve.ModelInferRequest(model_name=model)
                add_input(one, "image_bytes", _bytes_tensor([image.encoded]))
                requests.append((one, f"images[{i}]"))
                parts.append([i])
            elif kind == "pixels":
                if len(image.pixels.values) != PIXELS:
                    raise InvalidArgument(f"images[{i}]: pixels need {PIXELS} values (28x28), got {len(image.pixels.values)}")
                pixels.append(i)
            else:
                raise InvalidArgument(f"images[{i}]: neither encoded bytes nor pixels")
        if pixels:
            together = kserve.ModelInferRequest(model_name=model)
            values = np.array([request.images[i].pixels.values for i in pixels], np.float32)
            add_input(together, "image", values.reshape(-1, 1, 28, 28))
            requests.append((together, ""))
            parts.append(pixels)
        responses = await _all([self._infer(one, context, part) for one, part in requests])
        probabilities: list[np.ndarray] = [np.empty(0)] * len(request.images)
        for indices, response in zip(parts, responses):
            for i, row in zip(indices, response_outputs(response)["probabilities"]):
                probabilities[i] = row
        answer = pb.ClassifyResponse(model=model, model_version=responses[0].model_version)
        for row in probabilities:
            order = np.argsort(-row, kind="stable")
            result = answer.results.add(label=int(order[0]), probability=float(row[order[0]]),
                                        probabilities=row.tolist())
            for label in order[:top_k]:
                result.top.add(label=int(label), probability=float(row[label]))
        return answer

    # -- Translate ------------------------------------------------------------------
    async def _translations(self, request: pb.TranslateRequest, context: grpc.aio.ServicerContext,
                            ) -> AsyncIterator[tuple[int, pb.Translation, str]]:
        """(index, translation, model version) of each sentence as soon as it is done."""
        model = request.model or DEFAULT_TRANSLATOR
        self._check_count("sentences", len(request.sentences), model)
        tasks: dict[asyncio.Future[kserve.ModelInferResponse], int] = {}
        for i, sentence in enumerate(request.sentences):
            one = kserve.ModelInferRequest(model_name=model)
            add_input(one, "text", _bytes_tensor([sentence.encode("utf-8")]))
            if request.HasField("beam_size"):  # 0 goes on, for validation to refuse
                one.parameters["beam_size"].int64_param = request.beam_size
            tasks[asyncio.ensure_future(self._infer(one, context, f"sentences[{i}]"))] = i
        try:
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=tasks.__getitem__):
                    response = task.result()
                    out = response_outputs(response)
                    text, score = out["translation"].reshape(-1)[0], out["score"].reshape(-1)[0]
                    yield tasks[task], pb.Translation(text=text.decode("utf-8"), score=float(score)), \
                        response.model_version
        finally:  # a failure or a cancelled call: what is still queued is answered to nobody
            _drop(tasks)

    @rpc
    async def Translate(self, request: pb.TranslateRequest, context: grpc.aio.ServicerContext) -> pb.TranslateResponse:
        answers: dict[int, pb.Translation] = {}
        version = ""
        async for i, translation, version in self._translations(request, context):
            answers[i] = translation
        return pb.TranslateResponse(model=request.model or DEFAULT_TRANSLATOR, model_version=version,
                                    translations=[answers[i] for i in range(len(answers))])

    @stream_rpc
    async def TranslateStream(self, request: pb.TranslateRequest, context: grpc.aio.ServicerContext,
                              ) -> AsyncIterator[pb.TranslateStreamResponse]:
        async for i, translation, _ in self._translations(request, context):
            yield pb.TranslateStreamResponse(index=i, translation=translation)

    # -- Generate -------------------------------------------------------------------
    @rpc
    async def Generate(self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext) -> pb.GenerateResponse:
        model = request.model or DEFAULT_GENERATOR
        count = request.count or 1
        self._check_count("count", count, model)
        seeds = np.arange(count, dtype=np.int64) + np.int64(request.seed)
        one = kserve.ModelInferRequest(model_name=model)
        add_input(one, "digit", np.full(count, request.digit, np.int64))
        add_input(one, "seed", seeds)
        response = await self._infer(one, context)
        images = response_outputs(response)["image"].reshape(count, 28, 28)  # (N, 1, 28, 28) -> (N, 28, 28)
        picture = await asyncio.get_running_loop().run_in_executor(None, grid.png, images, GRID_COLUMNS)
        return pb.GenerateResponse(model=model, model_version=response.model_version, seeds=seeds.tolist(),
                                   images=[pb.Pixels(values=image.ravel().tolist()) for image in images], png=picture)


def _handler(method: Any, behaviour: Any) -> grpc.RpcMethodHandler:
    request_cls = getattr(pb, method.input_type.name)
    make = grpc.unary_stream_rpc_method_handler if method.server_streaming else grpc.unary_unary_rpc_method_handler
    return make(behaviour, request_deserializer=lenient(request_cls.FromString, request_cls.DESCRIPTOR.full_name),
                response_serializer=lambda message: message.SerializeToString())


def add_application_service(servicer: ApplicationServicer, server: grpc.aio.Server) -> None:
    """Register every RPC, as the generated `add_TensorgateServicer_to_server` would, but with a
    request parser whose failure is the caller's INVALID_ARGUMENT (services.grpc.status)."""
    handlers = {m.name: _handler(m, getattr(servicer, m.name)) for m in SERVICE.methods}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),))
    server.add_registered_method_handlers(SERVICE.full_name, handlers)
