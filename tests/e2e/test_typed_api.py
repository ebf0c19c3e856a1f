"""The typed application API, the SDK and the CLI against every shipped model (the local stack):
encoded images decoded on the server as offline, a bad image failing only its own call,
translation checks over Translate and ModelInfer alike, a stream cancelled midway, the GAN's grid."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

import tensorgate
from tensorgate.proto import tensorgate_pb2 as pb
from services.stack import DEMO_SENTENCES
from tensorgate.digits import load_digit
from tests.e2e.conftest import Shipped
from tests.support import REPO_ROOT, scrape

pytestmark = pytest.mark.integration

SHIPPED = {p.name for p in (REPO_ROOT / "models").iterdir() if (p / "config.pbtxt").is_file()}
PHOTOS = sorted((REPO_ROOT / "examples").glob("*.*")) if (REPO_ROOT / "examples").is_dir() else []
SAMPLES = sorted((REPO_ROOT / "samples" / "mnist").glob("*.png"))
SENTENCES = ["Ich habe keine Zeit.", "Der Hund kam unter dem Tisch hervor.", "Guten Morgen.", "Das Haus ist groß.",
             "Wir fahren morgen nach Berlin.", "Ja.", "Wo ist der Bahnhof?", "Das Wetter ist heute schön."]


def needs(*models: str) -> pytest.MarkDecorator:
    missing = [m for m in models if m not in SHIPPED]
    return pytest.mark.skipif(bool(missing), reason=f"models/{missing} not trained yet")


def images_of(files: list[Path]) -> list[Path]:
    return [f for f in files if f.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")]


@needs("mnist_cnn", "mnist_mlp")
def test_encoded_images_are_prepared_on_the_server_as_offline(shipped: Shipped) -> None:
    files = images_of(PHOTOS) + SAMPLES[:4]
    with tensorgate.Client(shipped.url) as client:
        for model in ("mnist_cnn", "mnist_mlp"):
            served = client.classify(files, model)  # the files' bytes through image_bytes
            offline = client.classify([load_digit(f) for f in files], model)  # the same preparation, here
            np.testing.assert_allclose(served.probabilities, offline.probabilities, atol=1e-5)
            assert served.labels.tolist() == offline.labels.tolist()
        assert client.classify(SAMPLES, "mnist_cnn").labels.tolist() == [int(f.stem[-1]) for f in SAMPLES]


@needs("mnist_cnn")
def test_a_bad_image_fails_its_call_only(shipped: Shipped) -> None:
    good = SAMPLES[0].read_bytes()
    truncated = good[: len(good) // 2]
    with tensorgate.Client(shipped.url) as client:
        for bad, problem in ((b"not an image at all", "not"), (truncated, "truncated")):
            with pytest.raises(tensorgate.InferenceError) as err:
                client.classify([good, bad, good])
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.message.startswith("images[1]: ") and problem in err.value.message.lower()

        # Good and bad calls at once share the model's batches; only the bad ones fail.
        def one(i: int) -> str:
            try:
                client.classify([good] if i % 3 else [b"\x89PNG\r\n\x1a\n broken"])
                return "ok"
            except tensorgate.InferenceError as err:
                return err.code.name

        with ThreadPoolExecutor(12) as pool:
            outcomes = list(pool.map(one, range(36)))
    assert outcomes == ["INVALID_ARGUMENT" if i % 3 == 0 else "ok" for i in range(36)]


@needs("translator_de_en")
def test_translate_and_stream_answer_as_modelinfer(shipped: Shipped) -> None:
    with tensorgate.Client(shipped.url) as client:
        unary = client.translate(SENTENCES, beam_size=2)
        direct = client.infer("translator_de_en", {"text": np.array([s.encode() for s in SENTENCES], dtype=object)},
                              parameters={"beam_size": 2})
        assert [t.text for t in unary] == [t.decode() for t in direct["translation"].reshape(-1)]
        np.testing.assert_allclose([t.score for t in unary], direct["score"].reshape(-1), rtol=1e-5)
        streamed = dict(client.translate_stream(SENTENCES, beam_size=2))
        assert sorted(streamed) == list(range(len(SENTENCES)))
        assert [streamed[i].text for i in range(len(SENTENCES))] == [t.text for t in unary]
        assert client.translate("Ja.", beam_size=2)[0].text == unary[5].text  # one sentence, as a string


@needs("translator_de_en")
def test_translation_input_checks_here_and_over_modelinfer(shipped: Shipped) -> None:
    channel = grpc.insecure_channel(shipped.url)
    raw_translate = channel.unary_unary("/tensorgate.v1.Tensorgate/Translate", request_serializer=lambda b: b,
                                        response_deserializer=lambda b: b)
    with tensorgate.Client(shipped.url) as client:
        for sentences, message in [(["Ja.", " "], "sentences[1]: input 'text': element 0 is empty"),
                                   (["x" * 3000], "sentences[0]: input 'text': element 0 has 3000 bytes")]:
            with pytest.raises(tensorgate.InferenceError) as err:
                client.translate(sentences)
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and message in err.value.message
            with pytest.raises(tensorgate.InferenceError) as err:
                list(client.translate_stream(sentences))
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        for text, message in [(b"", "element 0 is empty"), (b"Gr\xf6\xdfe", "element 0 is not valid UTF-8")]:
            with pytest.raises(tensorgate.InferenceError) as err:
                client.infer("translator_de_en", {"text": np.array([text], dtype=object)})
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and message in err.value.message
    with pytest.raises(grpc.RpcError) as info:
        raw_translate(pb.TranslateRequest(sentences=["Ja."]).SerializeToString().replace(b"Ja.", b"J\xffa"), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "bad UTF-8" in info.value.details()


@needs("translator_de_en")
def test_a_stream_cancelled_midway_leaves_nothing_waiting(shipped: Shipped) -> None:
    pending = 'tensorgate_pending_requests{model="translator_de_en"}'
    with tensorgate.Client(shipped.url) as client:
        stream = client.translate_stream(SENTENCES * 4, beam_size=5)
        first_index, _ = next(stream)
        assert 0 <= first_index < len(SENTENCES) * 4
        stream.close()  # cancels the call with most sentences still in the queue or the decoder
        deadline = time.monotonic() + 10
        while scrape(shipped.metrics_port).get(pending, 0) > 0:
            assert time.monotonic() < deadline, "the cancelled stream's requests are still waiting"
            time.sleep(0.1)
        assert client.translate("Guten Morgen.")[0].text  # still serving


@needs("digit_gan")
def test_generate_answers_pixels_and_a_png_grid(shipped: Shipped) -> None:
    with tensorgate.Client(shipped.url) as client:
        drawn = client.generate(3, count=10, seed=11)
        direct = client.infer("digit_gan", {"digit": np.full(10, 3, np.int64), "seed": np.arange(11, 21, dtype=np.int64)})
        for bad, message in [({"digit": 10}, "input 'digit'"), ({"digit": 1, "count": 65}, "count: 65 given")]:
            with pytest.raises(tensorgate.InferenceError) as err:
                client.generate(**bad)
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and message in err.value.message
    assert drawn.images.shape == (10, 1, 28, 28) and drawn.seeds.tolist() == list(range(11, 21))
    np.testing.assert_array_equal(drawn.images, direct["image"])
    grid = np.asarray(Image.open(io.BytesIO(drawn.png)))
    assert grid.shape == (2 + 2 * 30, 2 + 8 * 30)  # 8 per row, 2 px gaps
    np.testing.assert_array_equal(grid[2:30, 2:30], (drawn.images[0, 0] * 255).round().astype(np.uint8))


@needs("mnist_cnn", "translator_de_en", "digit_gan")
def test_asyncio_client_on_the_shipped_models(shipped: Shipped) -> None:
    async def main() -> tuple[list[int], dict[int, str], int]:
        async with tensorgate.AsyncClient(shipped.url) as client:
            labels = (await client.classify(SAMPLES[:3])).labels.tolist()
            streamed = {i: t.text async for i, t in client.translate_stream(DEMO_SENTENCES, beam_size=1)}
            drawn = await client.generate(7, count=4)
            return labels, streamed, len(drawn.images)

    labels, streamed, count = asyncio.run(main())
    assert labels == [int(f.stem[-1]) for f in SAMPLES[:3]] and sorted(streamed) == [0, 1] and count == 4


@needs("mnist_cnn", "translator_de_en", "digit_gan")
def test_cli_commands_succeed(shipped: Shipped, tmp_path: Path) -> None:
    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([sys.executable, "-m", "tensorgate", *argv, "--url", shipped.url], capture_output=True,
                             text=True, timeout=120, cwd=REPO_ROOT)
        assert out.returncode == 0, out.stderr
        return out

    files = [str(f) for f in SAMPLES[:3]]
    lines = [json.loads(line) for line in cli("classify", "--json", *files).stdout.splitlines()]
    assert [line["file"] for line in lines] == files
    assert [line["label"] for line in lines] == [int(f[-5]) for f in files]
    assert all(len(line["probabilities"]) == 10 and line["probability"] == max(line["probabilities"]) for line in lines)
    assert cli("classify", "--model", "mnist_mlp", files[0]).stdout.startswith(f"{files[0]}: ")
    assert len(cli("translate", "--beam-size", "1", *DEMO_SENTENCES).stdout.splitlines()) == 2
    streamed = cli("translate", "--stream", *DEMO_SENTENCES).stdout.splitlines()
    assert sorted(line.split("]")[0] for line in streamed) == ["[0", "[1"]
    grid = tmp_path / "grid.png"
    assert "4 drawings of 5" in cli("generate", "5", "--count", "4", "-o", str(grid)).stdout
    with Image.open(grid) as picture:
        assert picture.size == (2 + 4 * 30, 2 + 30)


@needs("mnist_cnn", "mnist_mlp", "translator_de_en", "digit_gan")
def test_demo_on_a_running_stack(shipped: Shipped, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "services.demo", "--url", shipped.url, "--metrics-url",
                          f"http://127.0.0.1:{shipped.metrics_port}/metrics", "--out", str(tmp_path / "grid.png")],
                         capture_output=True, text=True, timeout=180, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "starting one" not in out.stdout  # it used the stack that was up
    assert "mnist_mlp" in out.stdout and "mnist_cnn" in out.stdout and "TranslateStream" in out.stdout
    assert len([line for line in out.stdout.splitlines() if line.strip().startswith("[")]) == 5  # one per sentence
    with Image.open(tmp_path / "grid.png") as picture:
        assert picture.size == (2 + 8 * 30, 2 + 10 * 30)  # 8 of each digit, a row per digit
    table = out.stdout.split("latency at the gateway")[1].splitlines()[2:]
    rows = {line.split()[0]: line.split()[1:] for line in table if line.strip()}
    assert {"mnist_mlp", "mnist_cnn", "translator_de_en", "digit_gan"} <= set(rows)
    assert all(int(cells[0]) > 0 and float(cells[1]) <= float(cells[2]) <= float(cells[3]) for cells in rows.values())
