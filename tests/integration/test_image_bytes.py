"""Encoded images over ModelInfer: the classifier runner prepares `image_bytes` in the model
service, through a real gateway, Redis and model service; a bad image fails its own request
alone (INVALID_ARGUMENT naming the problem) and its batch-mates are answered."""

from __future__ import annotations

import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image, ImageDraw

from tensorgate.proto import grpc_service_pb2 as pb
from tensorgate.proto import grpc_service_pb2_grpc
from tensorgate.tensors import add_input, response_outputs
from tensorgate.digits import prepare_digit
from tests.support import (REPO_ROOT, RedisServer, ServiceProcess, make_tiny_repository, start_gateway,
                           start_model_service)

pytestmark = pytest.mark.integration

MODEL = "mnist_mlp"  # the tiny linear stand-in behind the real classifiers' config


@dataclass
class ImageStack:
    repo: Path
    gateway: ServiceProcess
    service: ServiceProcess

    def stub(self, port: int) -> grpc_service_pb2_grpc.GRPCInferenceServiceStub:
        return grpc_service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))


@pytest.fixture(scope="module")
def image_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageStack]:
    root = tmp_path_factory.mktemp("image_bytes")
    repo = make_tiny_repository(root / "models", MODEL)
    # The shipped classifier's config (image optional, image_bytes, runner: classifier).
    config = (REPO_ROOT / "models" / MODEL / "config.pbtxt").read_text()
    # A 300 ms batching window, so requests sent together share one batch.
    config = config.replace("max_queue_delay_microseconds: 2000", "max_queue_delay_microseconds: 300000")
    (repo / MODEL / "config.pbtxt").write_text(config)
    redis = RedisServer(root / "redis")
    service = start_model_service(repo, MODEL, redis.url, root, max_image_pixels="2000000")
    gateway = start_gateway(repo, redis.url, root)
    try:
        service.wait_serving()
        gateway.wait_serving()
        yield ImageStack(repo, gateway, service)
    finally:
        gateway.stop()
        service.stop()
        redis.stop()


def digit_photo(fmt: str, shift: int = 0) -> bytes:
    img = Image.new("RGB", (240, 200), (230, 228, 220))
    draw = ImageDraw.Draw(img)
    draw.line([(60 + shift, 40), (160 + shift, 40), (110 + shift, 170)], fill=(30, 30, 60), width=8)
    out = io.BytesIO()
    img.save(out, fmt)
    return out.getvalue()


def request(files: list[bytes], request_id: str = "", **inputs: np.ndarray) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name=MODEL, id=request_id)
    if files:
        add_input(message, "image_bytes", np.array(files, dtype=object).reshape(len(files), 1))
    for name, array in inputs.items():
        add_input(message, name, array)
    return message


def expected(image_stack: ImageStack, files: list[bytes]) -> np.ndarray:
    session = ort.InferenceSession(str(image_stack.repo / MODEL / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(None, {"image": np.stack([prepare_digit(f) for f in files])})
    return probabilities


def test_encoded_images_are_prepared_on_the_server(image_stack: ImageStack) -> None:
    files = [digit_photo("JPEG"), digit_photo("PNG", shift=30), digit_photo("WEBP", shift=-20)]
    response = image_stack.stub(image_stack.gateway.grpc_port).ModelInfer(request(files), timeout=20)
    got = response_outputs(response)["probabilities"]
    assert got.shape == (3, 10)
    np.testing.assert_allclose(got, expected(image_stack, files), atol=1e-5)  # the SDK's load_digit agrees


def test_one_bad_image_fails_alone_in_its_batch(image_stack: ImageStack) -> None:
    good = [digit_photo(fmt, shift) for fmt, shift in (("JPEG", 0), ("PNG", 20), ("BMP", -20), ("GIF", 10),
                                                       ("WEBP", 30), ("JPEG", -30))]
    bad = {2: b"this is not an image", 5: digit_photo("PNG")[:300]}  # positions in the batch
    files = [bad.get(i, f) for i, f in enumerate(good)]
    stub = image_stack.stub(image_stack.gateway.grpc_port)

    def call(i: int) -> tuple[grpc.StatusCode, str, np.ndarray | None]:
        try:
            response = stub.ModelInfer(request([files[i]], request_id=f"img{i}"), timeout=20)
        except grpc.RpcError as err:
            return err.code(), err.details() or "", None
        return grpc.StatusCode.OK, "", response_outputs(response)["probabilities"]

    with ThreadPoolExecutor(len(files)) as pool:  # inside one 300 ms window: one batch
        outcomes = list(pool.map(call, range(len(files))))
    print("outcomes:", [code.name for code, _, _ in outcomes])
    for i, (code, details, probabilities) in enumerate(outcomes):
        if i == 2:
            assert code == grpc.StatusCode.INVALID_ARGUMENT and "not an image" in details
        elif i == 5:
            assert code == grpc.StatusCode.INVALID_ARGUMENT and "truncated or corrupt" in details
        else:
            assert code == grpc.StatusCode.OK
            np.testing.assert_allclose(probabilities, expected(image_stack, [files[i]]), atol=1e-5)


@pytest.mark.parametrize("make, message", [
    (lambda: Image.new("RGB", (200, 200), (240, 240, 240)), "no ink"),
    (lambda: Image.new("RGB", (2000, 1500), (240, 240, 240)), "3,000,000 pixels, the limit is 2,000,000"),
])
def test_refusals_name_the_problem(image_stack: ImageStack, make: object, message: str) -> None:
    out = io.BytesIO()
    make().save(out, "PNG")  # type: ignore[operator]
    with pytest.raises(grpc.RpcError) as info:
        image_stack.stub(image_stack.gateway.grpc_port).ModelInfer(request([out.getvalue()]), timeout=20)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (info.value.details() or "")


def test_image_and_image_bytes_exclude_each_other(image_stack: ImageStack) -> None:
    stub = image_stack.stub(image_stack.gateway.grpc_port)
    both = request([digit_photo("PNG")], image=np.zeros((1, 1, 28, 28), np.float32))
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(both, timeout=20)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "one or the other" in (info.value.details() or "")
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request([]), timeout=20)  # neither
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_raw_pixels_keep_working(image_stack: ImageStack) -> None:
    pixels = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    response = image_stack.stub(image_stack.gateway.grpc_port).ModelInfer(request([], image=pixels), timeout=20)
    assert response_outputs(response)["probabilities"].shape == (2, 10)


def test_direct_calls_to_the_model_service_prepare_too(image_stack: ImageStack) -> None:
    files = [digit_photo("JPEG")]
    response = image_stack.stub(image_stack.service.grpc_port).ModelInfer(request(files), timeout=20)
    np.testing.assert_allclose(response_outputs(response)["probabilities"], expected(image_stack, files), atol=1e-5)
    with pytest.raises(grpc.RpcError) as info:
        image_stack.stub(image_stack.service.grpc_port).ModelInfer(request([b"GIF89a"]), timeout=20)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_real_life_figures_come_through_the_gateway(image_stack: ImageStack, tmp_path: Path) -> None:
    from training.data.digit_photos import main as make_set
    from training.mnist.real_life import main as real_life

    folder = tmp_path / "set"
    make_set(["--out", str(folder), "--count", "20", "--seed", "3", "--no-fonts"])
    (result,) = real_life(["--url", f"127.0.0.1:{image_stack.gateway.grpc_port}", "--set", str(folder),
                           "--models", MODEL])
    files = sorted(p for p in folder.iterdir() if "_label" in p.name)
    offline = expected(image_stack, [p.read_bytes() for p in files]).argmax(axis=1)
    labels = [int(p.name.split("_label")[1][0]) for p in files]
    assert result.total == 20 and result.refused == 0
    assert result.correct == sum(int(o) == label for o, label in zip(offline, labels))
    assert result.predictions == {p.name: int(o) for p, o in zip(files, offline)}
