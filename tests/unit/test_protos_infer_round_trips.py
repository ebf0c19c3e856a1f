"""ModelInferRequest, ModelInferResponse and ModelStreamInferResponse cross the wire between our
generated classes and tritonclient's (run in a child interpreter, protos_triton) both ways,
byte for byte, including a request exactly as tritonclient's client builds it."""

from __future__ import annotations

import struct

import numpy as np
from google.protobuf import text_format

from tensorgate.proto import grpc_service_pb2 as gs
from tests.unit.protos_triton import _as_dict, _b64, _triton, _unb64


def _sample_requests() -> list[gs.ModelInferRequest]:
    image = np.linspace(-1.0, 1.0, 2 * 28 * 28, dtype=np.float32)
    raw = gs.ModelInferRequest(
        model_name="mnist_mlp",
        model_version="1",
        id="req-1",
        inputs=[
            gs.ModelInferRequest.InferInputTensor(
                name="image", datatype="FP32", shape=[2, 1, 28, 28]
            )
        ],
        outputs=[
            gs.ModelInferRequest.InferRequestedOutputTensor(
                name="probabilities",
                parameters={"classification": gs.InferParameter(int64_param=3)},
            )
        ],
        raw_input_contents=[image.tobytes()],
    )
    raw.parameters["priority"].uint64_param = 2**63 + 5
    raw.parameters["timeout"].int64_param = -7
    raw.parameters["sequence_start"].bool_param = True
    raw.parameters["tag"].string_param = "bench"
    raw.parameters["scale"].double_param = 0.25

    typed = gs.ModelInferRequest(model_name="typed")
    tensor = typed.inputs.add(name="all", datatype="BYTES", shape=[2])
    tensor.parameters["binary_data_size"].int64_param = 11
    tensor.contents.bool_contents.extend([True, False])
    tensor.contents.int_contents.extend([-(2**31), 7])
    tensor.contents.int64_contents.extend([-(2**63), 2**62])
    tensor.contents.uint_contents.extend([2**32 - 1, 0])
    tensor.contents.uint64_contents.extend([2**64 - 1, 1])
    tensor.contents.fp32_contents.extend([0.5, -1.25])
    tensor.contents.fp64_contents.extend([1e300, -0.0])
    tensor.contents.bytes_contents.extend([b"\x00\xff", b"abc"])
    return [raw, typed]


def test_infer_request_ours_to_triton():
    requests = _sample_requests()
    results = _triton(
        *(
            {
                "op": "decode",
                "type": "ModelInferRequest",
                "data": _b64(r.SerializeToString()),
            }
            for r in requests
        )
    )
    for ours, theirs in zip(requests, results, strict=True):
        assert theirs["dict"] == _as_dict(ours)
        assert _unb64(theirs["bytes"]) == ours.SerializeToString(deterministic=True)


def test_infer_request_triton_to_ours():
    request_text = """
        model_name: "mnist_mlp" model_version: "3" id: "abc"
        parameters { key: "priority" value { uint64_param: 9 } }
        parameters { key: "flag" value { bool_param: true } }
        inputs {
          name: "image" datatype: "FP32" shape: [1, 1, 28, 28]
          parameters { key: "shared_memory_region" value { string_param: "r0" } }
          contents { fp32_contents: [0.5, 1.5] }
        }
        outputs {
          name: "probabilities"
          parameters { key: "classification" value { int64_param: 2 } }
        }
        raw_input_contents: "\\001\\002\\003"
    """
    from_text, client_built = _triton(
        {"op": "from_text", "type": "ModelInferRequest", "text": request_text},
        {"op": "client_request"},
    )

    ours = gs.ModelInferRequest.FromString(_unb64(from_text))
    assert ours == text_format.Parse(request_text, gs.ModelInferRequest())
    assert ours.SerializeToString(deterministic=True) == _unb64(from_text)

    # A request exactly as tritonclient.grpc.InferenceServerClient.infer sends it.
    req = gs.ModelInferRequest.FromString(_unb64(client_built))
    assert req.SerializeToString(deterministic=True) == _unb64(client_built)
    assert (req.model_name, req.model_version, req.id) == ("mnist_mlp", "1", "req-7")
    assert [(i.name, i.datatype, list(i.shape)) for i in req.inputs] == [
        ("image", "FP32", [2, 1, 28, 28]),
        ("text", "BYTES", [2]),
    ]
    assert not any(i.HasField("contents") for i in req.inputs)
    image = np.frombuffer(req.raw_input_contents[0], dtype="<f4")
    np.testing.assert_array_equal(image, np.arange(2 * 28 * 28, dtype=np.float32))
    # BYTES elements: 4-byte little-endian length prefix, then the bytes.
    assert req.raw_input_contents[1] == struct.pack("<I", 5) + b"hello" + struct.pack(
        "<I", 0
    )
    assert [o.name for o in req.outputs] == ["probabilities", "embedding"]
    assert req.outputs[0].parameters["classification"].int64_param == 3
    assert not req.outputs[1].parameters
    params = req.parameters
    assert params["sequence_id"].WhichOneof("parameter_choice") == "int64_param"
    assert params["sequence_id"].int64_param == 42
    assert params["sequence_start"].bool_param is True
    assert params["sequence_end"].WhichOneof("parameter_choice") == "bool_param"
    assert params["priority"].uint64_param == 2
    assert params["timeout"].int64_param == 5000
    assert params["tag"].string_param == "bench"
    assert params["top"].int64_param == 4
    assert params["debug"].bool_param is True


def test_infer_response_decodes_with_tritonclient():
    probs = np.arange(20, dtype=np.float32).reshape(2, 10) / 20
    ids = np.array([[-1, 2**40]], dtype=np.int64)
    labels = [b"seven", b"\x00\xffraw"]
    resp = gs.ModelInferResponse(model_name="mnist_mlp", model_version="1", id="r")
    resp.parameters["triton_final_response"].bool_param = True
    resp.outputs.add(name="probabilities", datatype="FP32", shape=[2, 10])
    resp.outputs.add(name="ids", datatype="INT64", shape=[1, 2])
    resp.outputs.add(name="labels", datatype="BYTES", shape=[2])
    resp.raw_output_contents.extend(
        [
            probs.tobytes(),
            ids.tobytes(),
            b"".join(struct.pack("<I", len(s)) + s for s in labels),
        ]
    )
    stream_ok = gs.ModelStreamInferResponse(infer_response=resp)
    stream_err = gs.ModelStreamInferResponse(error_message="model not ready")

    decoded, ok, err = _triton(
        {
            "op": "infer_result",
            "data": _b64(resp.SerializeToString()),
            "outputs": ["probabilities", "ids", "labels"],
        },
        {
            "op": "decode",
            "type": "ModelStreamInferResponse",
            "data": _b64(stream_ok.SerializeToString()),
        },
        {
            "op": "decode",
            "type": "ModelStreamInferResponse",
            "data": _b64(stream_err.SerializeToString()),
        },
    )
    assert decoded["probabilities"]["shape"] == [2, 10]
    assert decoded["probabilities"]["dtype"] == "<f4"
    np.testing.assert_array_equal(
        np.array(decoded["probabilities"]["values"], dtype=np.float32),
        probs.reshape(-1),
    )
    assert decoded["ids"]["shape"] == [1, 2]
    assert decoded["ids"]["values"] == ids.reshape(-1).tolist()
    assert decoded["labels"]["shape"] == [2]
    assert decoded["labels"]["values"] == [s.decode("latin-1") for s in labels]
    assert ok["dict"] == _as_dict(stream_ok)
    assert err["dict"] == {"error_message": "model not ready"}

