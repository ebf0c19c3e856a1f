"""The SDK's requests and answers (tensorgate.wire) and the Generate grid (services.grid), without a server."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from services import grid
from tensorgate.proto import tensorgate_pb2 as pb
from tensorgate import wire


def test_images_may_be_files_bytes_or_pixels_of_any_usual_shape(tmp_path: Path) -> None:
    photo = tmp_path / "seven.png"
    photo.write_bytes(b"\x89PNG file")
    read = wire.read_images([photo, str(photo), b"raw bytes", np.zeros((28, 28)), np.ones((1, 28, 28)),
                             np.full((3, 1, 28, 28), 0.5)])
    assert read[:3] == [b"\x89PNG file", b"\x89PNG file", b"raw bytes"]
    assert len(read) == 3 + 1 + 1 + 3 and all(r.shape == (784,) for r in read[3:])  # type: ignore[union-attr]
    assert len(wire.read_images(np.zeros((5, 28, 28)))) == 5 and wire.read_images(b"one") == [b"one"]
    for bad in (np.zeros((27, 28)), np.zeros((2, 3, 28, 28)), np.zeros(784)):
        with pytest.raises(ValueError, match="pixels must be"):
            wire.read_images(bad)
    request = wire.classify_request(read[2:4], "mnist_mlp", top_k=2)
    assert [i.WhichOneof("kind") for i in request.images] == ["encoded", "pixels"]
    assert request.model == "mnist_mlp" and request.top_k == 2 and len(request.images[1].pixels.values) == 784


def test_answers_become_numpy() -> None:
    response = pb.ClassifyResponse()
    for label in (3, 8):
        probs = [0.0] * 10
        probs[label] = 0.75
        response.results.add(label=label, probability=0.75, probabilities=probs)
    labels, probabilities = wire.classified(response)
    assert labels.tolist() == [3, 8] and probabilities.shape == (2, 10)
    assert wire.classified(response).probability.tolist() == [0.75, 0.75]
    assert wire.translate_request("Ja.", None, "m").sentences == ["Ja."]
    assert not wire.translate_request(["a", "b"], None, "m").HasField("beam_size")
    assert wire.translate_request(["a"], 0, "m").HasField("beam_size")  # an explicit 0 reaches validation


def test_retry_policy_only_names_unavailable() -> None:
    options = dict(wire.channel_options(retries=3))
    config = json.loads(str(options["grpc.service_config"]))
    policy = config["methodConfig"][0]["retryPolicy"]
    assert policy["maxAttempts"] == 4 and policy["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert {n["service"] for n in config["methodConfig"][0]["name"]} == {"tensorgate.v1.Tensorgate",
                                                                          "inference.GRPCInferenceService"}
    assert "grpc.service_config" not in dict(wire.channel_options(retries=0))
    assert wire.metadata("k") == (("authorization", "Bearer k"),) and wire.metadata(None) == ()


def test_grid_tiles_row_major_with_gaps() -> None:
    images = np.stack([np.full((28, 28), i / 10) for i in range(10)])
    picture = grid.tile(images, columns=4)
    assert picture.shape == (2 + 3 * 30, 2 + 4 * 30)
    assert picture[2, 2] == 0 and picture[2, 32] == 26 and picture[62, 32] == 230  # images 0, 1 and 9
    assert picture[0].max() == 0 and picture[-1, -31:].max() == 0  # the gap and the empty last cells
    decoded = np.asarray(Image.open(io.BytesIO(grid.png(images, columns=4))))
    np.testing.assert_array_equal(decoded, picture)
