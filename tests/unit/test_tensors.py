from __future__ import annotations

import struct

import numpy as np
import pytest

from tensorgate.errors import InvalidArgument
from tensorgate.proto import grpc_service_pb2 as pb
from tensorgate.tensors import (
    add_input, build_response, datatype_of, deserialize_bytes, from_raw, request_inputs, response_outputs,
    serialize_bytes, split_rows,
)


def test_bytes_raw_form_is_length_prefixed_little_endian() -> None:
    array = np.array([b"Hallo", "Welt ä".encode(), b""], dtype=object)
    raw = serialize_bytes(array)
    assert raw[:4] == struct.pack("<I", 5) and raw[4:9] == b"Hallo"
    assert list(deserialize_bytes(raw, 3)) == [b"Hallo", "Welt ä".encode(), b""]


def test_bytes_accepts_str_and_keeps_shape() -> None:
    array = np.array([["a", "bb"], ["ccc", "d"]], dtype=object)
    decoded = from_raw(serialize_bytes(array), "BYTES", [2, 2])
    assert decoded.shape == (2, 2) and decoded[1, 0] == b"ccc"


@pytest.mark.parametrize("raw, message", [
    (struct.pack("<I", 10) + b"short", "claims 10 bytes"),
    (struct.pack("<I", 1) + b"a", "ends after 1 of 2"),
    (struct.pack("<I", 1) + b"a" + struct.pack("<I", 1) + b"b" + b"junk", "4 bytes left over"),
])
def test_bad_bytes_framing_is_refused(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        deserialize_bytes(raw, 2, "text")


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int64, np.int32, np.int8, np.uint8, np.bool_])
def test_numeric_round_trip_through_request(dtype: type) -> None:
    array = (np.arange(12).reshape(3, 4) % 2).astype(dtype)
    request = pb.ModelInferRequest()
    add_input(request, "x", array)
    decoded = request_inputs(request)["x"]
    assert decoded.dtype == np.dtype(dtype) and decoded.shape == (3, 4)
    np.testing.assert_array_equal(decoded, array)


def test_typed_contents_are_read_when_raw_is_absent() -> None:
    request = pb.ModelInferRequest()
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[2, 2])
    tensor.contents.fp32_contents.extend([1, 2, 3, 4])
    words = request.inputs.add(name="w", datatype="BYTES", shape=[2])
    words.contents.bytes_contents.extend([b"a", b"b"])
    decoded = request_inputs(request)
    np.testing.assert_array_equal(decoded["x"], [[1, 2], [3, 4]])
    assert list(decoded["w"]) == [b"a", b"b"]


def test_size_mismatches_name_the_input() -> None:
    with pytest.raises(InvalidArgument, match="input 'image': FP32 shape \\[2, 3\\] needs 24 bytes, got 20"):
        from_raw(bytes(20), "FP32", [2, 3], "image")
    request = pb.ModelInferRequest()
    request.inputs.add(name="x", datatype="FP32", shape=[3]).contents.fp32_contents.extend([1.0])
    with pytest.raises(InvalidArgument, match="needs 3 elements, got 1"):
        request_inputs(request)


def test_raw_contents_count_must_match_inputs() -> None:
    request = pb.ModelInferRequest()
    add_input(request, "a", np.zeros(2, np.float32))
    request.inputs.add(name="b", datatype="FP32", shape=[2])
    with pytest.raises(InvalidArgument, match="raw_input_contents has 1 entries"):
        request_inputs(request)


def test_response_round_trip_and_datatypes() -> None:
    outputs = {"score": np.array([0.5, 1.5], np.float64), "text": np.array([b"x", b"yz"], dtype=object)}
    response = build_response("m", "1", "id-1", outputs, {"score": "FP32"})
    assert [o.datatype for o in response.outputs] == ["FP32", "BYTES"]
    decoded = response_outputs(response)
    assert decoded["score"].dtype == np.float32 and list(decoded["text"]) == [b"x", b"yz"]


def test_datatype_names_and_split() -> None:
    assert datatype_of(np.zeros(1, np.float32)) == "FP32"
    assert datatype_of(np.array(["a"])) == "BYTES"
    with pytest.raises(InvalidArgument):
        datatype_of(np.zeros(1, np.complex64))
    parts = split_rows(np.arange(10).reshape(5, 2), [2, 1, 2])
    assert [p.shape[0] for p in parts] == [2, 1, 2] and parts[1][0, 0] == 4
