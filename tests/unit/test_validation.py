from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tensorgate.errors import InvalidArgument, ModelNotFound
from tensorgate.proto import grpc_service_pb2 as pb
from tensorgate.repository import ModelSpec, load_spec
from tensorgate.tensors import add_input
from services.validation import validate
from tests.support import make_tiny_repository


@pytest.fixture()
def spec(tmp_path: Path) -> ModelSpec:
    make_tiny_repository(tmp_path, "mnist_mlp", max_batch_size=8)
    return load_spec(tmp_path / "mnist_mlp")


def request(*arrays: tuple[str, np.ndarray], version: str = "") -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="mnist_mlp", model_version=version)
    for name, array in arrays:
        add_input(req, name, array)
    return req


def test_valid_request_decodes(spec: ModelSpec) -> None:
    valid = validate(spec, request(("image", np.zeros((3, 1, 28, 28), np.float32))))
    assert valid.rows == 3 and valid.outputs == ("probabilities",) and valid.inputs["image"].shape == (3, 1, 28, 28)


@pytest.mark.parametrize("arrays, message", [
    ((("image", np.zeros((1, 28, 28), np.float32)),), r"input 'image': expected shape \[-1, 1, 28, 28\], got \[1, 28, 28\]"),
    ((("image", np.zeros((1, 1, 28, 28), np.float64)),), "input 'image': expected datatype FP32, got FP64"),
    ((("image", np.zeros((9, 1, 28, 28), np.float32)),), r"batch size 9 outside 1..8"),
    ((("image", np.zeros((0, 1, 28, 28), np.float32)),), r"batch size 0 outside 1..8"),
    ((), "missing input 'image'; model 'mnist_mlp' takes 'image' FP32"),
    ((("image", np.zeros((1, 1, 28, 28), np.float32)), ("extra", np.zeros(1, np.float32))), "unexpected input 'extra'"),
])
def test_invalid_requests_name_the_problem(spec: ModelSpec, arrays: tuple, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        validate(spec, request(*arrays))


def test_unknown_version_and_output(spec: ModelSpec) -> None:
    with pytest.raises(ModelNotFound, match="no version 2"):
        validate(spec, request(("image", np.zeros((1, 1, 28, 28), np.float32)), version="2"))
    req = request(("image", np.zeros((1, 1, 28, 28), np.float32)))
    req.outputs.add(name="logits")
    with pytest.raises(InvalidArgument, match="unknown output 'logits'; model 'mnist_mlp' has 'probabilities'"):
        validate(spec, req)


RESHAPED = """name: "digits"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [
  { name: "digit" data_type: TYPE_INT64 dims: [ 1 ] reshape: { shape: [ ] } },
  { name: "seed" data_type: TYPE_INT64 dims: [ 1 ] reshape: { shape: [ ] } }
]
output [
  { name: "image" data_type: TYPE_FP32 dims: [ 1, 28, 28 ] }
]
"""


def test_reshape_accepts_the_config_dims_and_the_graph_shape(tmp_path: Path) -> None:
    # Triton's reshape: dims [1] for clients, [] for the graph. Both [N, 1] and [N]
    # arrive as the graph's [N], so requests of either form batch together.
    (tmp_path / "digits" / "1").mkdir(parents=True)
    (tmp_path / "digits" / "config.pbtxt").write_text(RESHAPED)
    spec = load_spec(tmp_path / "digits")
    digit = spec.input("digit")
    assert digit is not None and digit.shape == (-1, 1) and digit.model_shape == (-1,)
    flat = ("digit", np.array([3, 4], np.int64)), ("seed", np.array([1, 2], np.int64))
    column = ("digit", np.array([[3], [4]], np.int64)), ("seed", np.array([[1], [2]], np.int64))
    for arrays in (flat, column):
        valid = validate(spec, request(*arrays))
        assert valid.rows == 2 and valid.inputs["digit"].shape == (2,) and valid.inputs["digit"].tolist() == [3, 4]
    with pytest.raises(InvalidArgument, match=r"input 'digit': expected shape \[-1, 1\] or \[-1\], got \[2, 2\]"):
        validate(spec, request(("digit", np.zeros((2, 2), np.int64)), ("seed", np.zeros((2, 2), np.int64))))


def test_beam_size_is_checked_against_the_config(spec: ModelSpec, tmp_path: Path) -> None:
    image = ("image", np.zeros((1, 1, 28, 28), np.float32))
    req = request(image)
    req.parameters["beam_size"].int64_param = 4
    with pytest.raises(InvalidArgument, match="parameter 'beam_size': model 'mnist_mlp' takes no such parameter"):
        validate(spec, req)
    req = request(image)
    req.parameters["priority"].int64_param = 1  # parameters a model does not use are ignored, as in Triton
    assert validate(spec, req).options == ()

    text = (tmp_path / "mnist_mlp" / "config.pbtxt").read_text()
    (tmp_path / "mnist_mlp" / "config.pbtxt").write_text(
        text + 'parameters { key: "beam_size" value: { string_value: "5" } }\n'
               'parameters { key: "max_beam_size" value: { string_value: "8" } }\n')
    beamy = load_spec(tmp_path / "mnist_mlp")
    for value, message in ((0, r"0 outside 1..8"), (9, r"9 outside 1..8")):
        req = request(image)
        req.parameters["beam_size"].int64_param = value
        with pytest.raises(InvalidArgument, match=message):
            validate(beamy, req)
    req = request(image)
    req.parameters["beam_size"].string_param = "3"
    with pytest.raises(InvalidArgument, match="parameter 'beam_size': expected an integer, got string_param"):
        validate(beamy, req)
    req = request(image)
    req.parameters["beam_size"].int64_param = 3
    assert validate(beamy, req).options == (("beam_size", 3),)


def test_value_range_parameter_bounds_an_input(tmp_path: Path) -> None:
    (tmp_path / "digits" / "1").mkdir(parents=True)
    (tmp_path / "digits" / "config.pbtxt").write_text(
        RESHAPED + 'parameters { key: "digit_range" value: { string_value: "0..9" } }\n')
    spec = load_spec(tmp_path / "digits")
    ok = validate(spec, request(("digit", np.array([0, 9], np.int64)), ("seed", np.array([-5, 2**40], np.int64))))
    assert ok.inputs["digit"].tolist() == [0, 9]  # seeds are not bounded: no seed_range
    for bad in (10, -1):
        with pytest.raises(InvalidArgument, match=rf"input 'digit': values must be in 0..9, got {bad}"):
            validate(spec, request(("digit", np.array([3, bad], np.int64)), ("seed", np.array([1, 2], np.int64))))


def test_optional_inputs_may_be_left_out_but_not_all(tmp_path: Path) -> None:
    make_tiny_repository(tmp_path, "m", max_batch_size=4)
    config = tmp_path / "m" / "config.pbtxt"
    config.write_text(config.read_text().replace(
        '{ name: "image" data_type: TYPE_FP32 dims: [ 1, 28, 28 ] }',
        '{ name: "image" data_type: TYPE_FP32 dims: [ 1, 28, 28 ] optional: true },\n'
        '  { name: "image_bytes" data_type: TYPE_STRING dims: [ 1 ] reshape: { shape: [ ] } optional: true }'))
    spec = load_spec(tmp_path / "m")
    assert [t.optional for t in spec.inputs] == [True, True]
    pixels = validate(spec, request(("image", np.zeros((2, 1, 28, 28), np.float32))))
    assert set(pixels.inputs) == {"image"} and pixels.rows == 2
    encoded = pb.ModelInferRequest(model_name="m")
    add_input(encoded, "image_bytes", np.array([[b"\x89PNG..."]], dtype=object))
    valid = validate(spec, encoded)
    assert set(valid.inputs) == {"image_bytes"} and valid.inputs["image_bytes"].shape == (1,)  # reshaped to [N]
    with pytest.raises(InvalidArgument, match="no input given"):
        validate(spec, pb.ModelInferRequest(model_name="m"))


TEXT_CONFIG = """name: "words"
max_batch_size: 8
input [ { name: "text" data_type: TYPE_STRING dims: [ 1 ] reshape: { shape: [ ] } } ]
output [ { name: "translation" data_type: TYPE_STRING dims: [ 1 ] reshape: { shape: [ ] } } ]
"""


def text_request(*items: bytes) -> pb.ModelInferRequest:
    text = np.empty(len(items), dtype=object)
    text[:] = list(items)
    return request(("text", text))


def test_text_parameters_refuse_broken_empty_and_long_elements(tmp_path: Path) -> None:
    (tmp_path / "words" / "1").mkdir(parents=True)
    (tmp_path / "words" / "config.pbtxt").write_text(TEXT_CONFIG)
    plain = load_spec(tmp_path / "words")
    assert validate(plain, text_request(b"", b"\xff")).rows == 2  # no parameters: anything goes
    (tmp_path / "words" / "config.pbtxt").write_text(
        TEXT_CONFIG + "".join(f'parameters {{ key: "text_{k}" value: {{ string_value: "{v}" }} }}\n'
                              for k, v in (("utf8", "true"), ("nonempty", "true"), ("max_bytes", "12"))))
    spec = load_spec(tmp_path / "words")
    assert validate(spec, text_request("Größe".encode(), b"Ja.")).rows == 2
    for items, message in [
        ((b"Ja.", b"ab\xffcd"), r"input 'text': element 1 is not valid UTF-8 \(byte 2: invalid start byte\)"),
        ((b"  \t",), "input 'text': element 0 is empty"),
        ((b"",), "input 'text': element 0 is empty"),
        ((b"x" * 13,), "input 'text': element 0 has 13 bytes, more than 12"),
    ]:
        with pytest.raises(InvalidArgument, match=message):
            validate(spec, text_request(*items))


def test_non_finite_values_are_refused_unless_the_config_allows_them(spec: ModelSpec, tmp_path: Path) -> None:
    image = np.zeros((1, 1, 28, 28), np.float32)
    for bad in (np.nan, np.inf, -np.inf):
        image[0, 0, 3, 4] = bad
        with pytest.raises(InvalidArgument, match="input 'image': NaN or infinite"):
            validate(spec, request(("image", image)))
    make_tiny_repository(tmp_path, "lenient")
    config = tmp_path / "lenient" / "config.pbtxt"
    config.write_text(config.read_text() + 'parameters { key: "allow_non_finite" value: { string_value: "true" } }\n')
    assert np.isinf(validate(load_spec(tmp_path / "lenient"), request(("image", image))).inputs["image"]).sum() == 1
