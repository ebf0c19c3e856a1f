"""Wire compatibility of protos/*.proto with Triton's `inference` package.

The reference is the descriptor set shipped in tritonclient 2.41.0
(tritonclient.grpc.service_pb2 / model_config_pb2).

tritonclient's generated modules register the same proto file names and the
same symbols (inference.ModelConfig, ...) in the process-wide default
descriptor pool as ours do, so the two can never be imported into one
process ("duplicate file name model_config.proto"). tritonclient therefore
runs in a child interpreter: once to export its FileDescriptorSet, which is
loaded here into a private pool for the structural comparison, and once per
round-trip test to encode/decode messages with its real classes.
"""

from __future__ import annotations

import base64
import json
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, text_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from services.proto import grpc_service_pb2 as gs
from services.proto import grpc_service_pb2_grpc as gs_grpc
from services.proto import model_config_pb2 as mc
from tests.support import REPO_ROOT

SERVICE = "inference.GRPCInferenceService"

EXPECTED_METHODS = {
    "ServerLive",
    "ServerReady",
    "ModelReady",
    "ServerMetadata",
    "ModelMetadata",
    "ModelInfer",
    "ModelStreamInfer",
    "ModelConfig",
    "ModelStatistics",
    "RepositoryIndex",
}

EXPECTED_MESSAGES = {
    "inference.ModelConfig",
    "inference.ModelVersionPolicy",
    "inference.ModelInput",
    "inference.ModelOutput",
    "inference.ModelInstanceGroup",
    "inference.ModelDynamicBatching",
    "inference.ModelQueuePolicy",
    "inference.ModelParameter",
    "inference.ModelTransactionPolicy",
    "inference.InferParameter",
    "inference.InferTensorContents",
    "inference.ModelInferRequest",
    "inference.ModelInferRequest.InferInputTensor",
    "inference.ModelInferRequest.InferRequestedOutputTensor",
    "inference.ModelInferResponse",
    "inference.ModelInferResponse.InferOutputTensor",
    "inference.ModelStreamInferResponse",
    "inference.ModelConfigRequest",
    "inference.ModelConfigResponse",
    "inference.ModelStatisticsRequest",
    "inference.ModelStatisticsResponse",
    "inference.ModelStatistics",
    "inference.InferStatistics",
    "inference.InferBatchStatistics",
    "inference.StatisticDuration",
    "inference.MemoryUsage",
    "inference.RepositoryIndexRequest",
    "inference.RepositoryIndexResponse",
    "inference.RepositoryIndexResponse.ModelIndex",
}

# The shipped config (so Triton's own ModelConfig, in a child process below, parses the real file),
# plus a parameters map as later models use.
SAMPLE_CONFIG_PBTXT = (REPO_ROOT / "models" / "mnist_mlp" / "config.pbtxt").read_text() + (
    'parameters { key: "tokenizer" value: { string_value: "spm.model" } }\n'
)

# Runs in the child interpreter. Reads a JSON list of jobs on stdin, writes a
# JSON list of results on stdout. Binary payloads travel base64-encoded.
_TRITON_WORKER = textwrap.dedent(
    """
    import base64, json, sys

    import numpy as np
    from google.protobuf import descriptor_pb2, json_format, text_format
    import tritonclient.grpc as tc
    from tritonclient.grpc import _utils, model_config_pb2, service_pb2

    def cls(name):
        for mod in (service_pb2, model_config_pb2):
            if hasattr(mod, name):
                return getattr(mod, name)
        raise KeyError(name)

    def b64(data):
        return base64.b64encode(data).decode()

    def run(job):
        op = job["op"]
        if op == "descriptors":
            fds = descriptor_pb2.FileDescriptorSet()
            for mod in (model_config_pb2, service_pb2):
                fds.file.add().MergeFromString(mod.DESCRIPTOR.serialized_pb)
            return b64(fds.SerializeToString())
        if op == "decode":
            msg = cls(job["type"]).FromString(base64.b64decode(job["data"]))
            return {
                "dict": json_format.MessageToDict(
                    msg, preserving_proto_field_name=True
                ),
                "bytes": b64(msg.SerializeToString(deterministic=True)),
            }
        if op == "from_text":
            msg = text_format.Parse(job["text"], cls(job["type"])())
            return b64(msg.SerializeToString(deterministic=True))
        if op == "client_request":
            image = tc.InferInput("image", [2, 1, 28, 28], "FP32")
            image.set_data_from_numpy(
                np.arange(2 * 28 * 28, dtype=np.float32).reshape(2, 1, 28, 28)
            )
            text = tc.InferInput("text", [2], "BYTES")
            text.set_data_from_numpy(np.array([b"hello", b""], dtype=np.object_))
            outputs = [
                tc.InferRequestedOutput("probabilities", class_count=3),
                tc.InferRequestedOutput("embedding"),
            ]
            req = _utils._get_inference_request(
                model_name="mnist_mlp",
                inputs=[image, text],
                model_version="1",
                request_id="req-7",
                outputs=outputs,
                sequence_id=42,
                sequence_start=True,
                sequence_end=False,
                priority=2,
                timeout=5000,
                parameters={"tag": "bench", "top": 4, "debug": True},
            )
            return b64(req.SerializeToString(deterministic=True))
        if op == "infer_result":
            resp = service_pb2.ModelInferResponse.FromString(
                base64.b64decode(job["data"])
            )
            result = tc.InferResult(resp)
            out = {}
            for name in job["outputs"]:
                arr = result.as_numpy(name)
                out[name] = {
                    "dtype": arr.dtype.str,
                    "shape": list(arr.shape),
                    "values": [
                        v.decode("latin-1") if isinstance(v, bytes) else v
                        for v in arr.reshape(-1).tolist()
                    ],
                }
            return out
        raise ValueError(op)

    jobs = json.load(sys.stdin)
    json.dump([run(job) for job in jobs], sys.stdout)
    """
)


def _triton(*jobs: dict) -> list:
    """Run jobs in a child interpreter that imports tritonclient.grpc."""
    proc = subprocess.run(
        [sys.executable, "-c", _TRITON_WORKER],
        input=json.dumps(list(jobs)).encode(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return json.loads(proc.stdout)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(data: str) -> bytes:
    return base64.b64decode(data)


def _as_dict(msg) -> dict:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


# ----------------------------------------------------------- our descriptors


def _walk_messages(md: Descriptor):
    yield md
    for nested in md.nested_types:
        yield from _walk_messages(nested)


def _our_messages() -> list[Descriptor]:
    out = []
    for module in (mc, gs):
        for md in module.DESCRIPTOR.message_types_by_name.values():
            out.extend(_walk_messages(md))
    return out


def _our_enums() -> list[EnumDescriptor]:
    out = []
    for module in (mc, gs):
        out.extend(module.DESCRIPTOR.enum_types_by_name.values())
    for md in _our_messages():
        out.extend(md.enum_types)
    return out


OUR_MESSAGES = _our_messages()
OUR_ENUMS = _our_enums()


@pytest.fixture(scope="module")
def triton_pool() -> descriptor_pool.DescriptorPool:
    """tritonclient's descriptors, loaded into a private pool."""
    (data,) = _triton({"op": "descriptors"})
    fds = descriptor_pb2.FileDescriptorSet.FromString(_unb64(data))
    pool = descriptor_pool.DescriptorPool()
    for file_proto in fds.file:
        assert file_proto.package == "inference"
        pool.Add(file_proto)
    return pool


def _type_name(field: FieldDescriptor) -> str | None:
    if field.message_type is not None:
        return field.message_type.full_name
    if field.enum_type is not None:
        return field.enum_type.full_name
    return None


def _field_signature(field: FieldDescriptor) -> dict:
    oneof = field.containing_oneof
    return {
        "number": field.number,
        "type": field.type,
        "repeated": field.is_repeated,
        "packed": field.is_packed,
        "presence": field.has_presence,
        "type_name": _type_name(field),
        "oneof": oneof.name if oneof is not None else None,
    }


# ------------------------------------------------------------ structure


def test_files_use_inference_package():
    assert mc.DESCRIPTOR.package == "inference"
    assert gs.DESCRIPTOR.package == "inference"
    assert [d.name for d in gs.DESCRIPTOR.dependencies] == [mc.DESCRIPTOR.name]


def test_required_messages_are_defined():
    ours = {md.full_name for md in OUR_MESSAGES}
    assert EXPECTED_MESSAGES <= ours, sorted(EXPECTED_MESSAGES - ours)
    assert "inference.DataType" in {e.full_name for e in OUR_ENUMS}


@pytest.mark.parametrize("ours", OUR_MESSAGES, ids=lambda md: md.full_name)
def test_message_matches_triton(ours: Descriptor, triton_pool):
    theirs = triton_pool.FindMessageTypeByName(ours.full_name)
    assert ours.GetOptions().map_entry == theirs.GetOptions().map_entry

    for field in ours.fields:
        assert field.name in theirs.fields_by_name, (
            f"{ours.full_name}.{field.name} does not exist in Triton"
        )
        their_field = theirs.fields_by_name[field.name]
        assert _field_signature(field) == _field_signature(their_field), (
            f"{field.full_name} differs from Triton"
        )

    # A Triton field we leave out must keep its number (and name) reserved.
    ours_proto = descriptor_pb2.DescriptorProto()
    ours.CopyToProto(ours_proto)
    reserved_numbers = {
        n for r in ours_proto.reserved_range for n in range(r.start, r.end)
    }
    for their_field in theirs.fields:
        if their_field.name in ours.fields_by_name:
            continue
        assert their_field.number in reserved_numbers, (
            f"{their_field.full_name} = {their_field.number} is left out "
            "but its number is not reserved"
        )
        assert their_field.name in ours_proto.reserved_name, their_field.full_name
        assert their_field.number not in ours.fields_by_number


@pytest.mark.parametrize("ours", OUR_ENUMS, ids=lambda ed: ed.full_name)
def test_enum_matches_triton(ours: EnumDescriptor, triton_pool):
    theirs = triton_pool.FindEnumTypeByName(ours.full_name)
    our_values = {v.name: v.number for v in ours.values}
    their_values = {v.name: v.number for v in theirs.values}
    for name, number in our_values.items():
        assert their_values.get(name) == number, f"{ours.full_name}.{name}"
    assert our_values == their_values


def test_service_matches_triton(triton_pool):
    ours = gs.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert ours.full_name == SERVICE
    theirs = triton_pool.FindServiceByName(SERVICE)
    assert {m.name for m in ours.methods} == EXPECTED_METHODS
    for method in ours.methods:
        their_method = theirs.methods_by_name[method.name]
        assert method.input_type.full_name == their_method.input_type.full_name
        assert method.output_type.full_name == their_method.output_type.full_name
        assert method.client_streaming == their_method.client_streaming
        assert method.server_streaming == their_method.server_streaming
    stream = ours.methods_by_name["ModelStreamInfer"]
    assert stream.client_streaming and stream.server_streaming
    # The generated gRPC module exposes the same service.
    assert hasattr(gs_grpc, "GRPCInferenceServiceStub")
    assert hasattr(gs_grpc, "add_GRPCInferenceServiceServicer_to_server")


# ------------------------------------------------------------- round trips


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


def test_sample_config_pbtxt_parses():
    config = text_format.Parse(SAMPLE_CONFIG_PBTXT, mc.ModelConfig())
    assert config.name == "mnist_mlp"
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 64
    assert config.WhichOneof("scheduling_choice") == "dynamic_batching"
    image, encoded = config.input  # pixels, or encoded image files (both optional: one of them)
    assert (image.name, image.data_type, list(image.dims), image.optional) == (
        "image",
        mc.TYPE_FP32,
        [1, 28, 28],
        True,
    )
    assert (encoded.name, encoded.data_type, list(encoded.dims), encoded.optional) == (
        "image_bytes",
        mc.TYPE_STRING,
        [1],
        True,
    )
    (probs,) = config.output
    assert (probs.name, probs.data_type, list(probs.dims)) == (
        "probabilities",
        mc.TYPE_FP32,
        [10],
    )
    batching = config.dynamic_batching
    assert list(batching.preferred_batch_size) == [16, 32, 64]
    assert batching.max_queue_delay_microseconds == 2000
    policy = batching.default_queue_policy
    assert policy.timeout_action == mc.ModelQueuePolicy.REJECT
    assert policy.default_timeout_microseconds == 5_000_000
    assert policy.allow_timeout_override is True
    assert policy.max_queue_size == 1024
    assert config.parameters["tokenizer"].string_value == "spm.model"


def test_model_config_roundtrip_with_triton():
    config = text_format.Parse(SAMPLE_CONFIG_PBTXT, mc.ModelConfig())
    config.version_policy.latest.num_versions = 2
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_GPU, count=2, gpus=[0])
    config.model_transaction_policy.decoupled = False
    config.dynamic_batching.priority_queue_policy[1].max_queue_size = 8
    response = gs.ModelConfigResponse(config=config)

    decoded, triton_text_bytes = _triton(
        {
            "op": "decode",
            "type": "ModelConfigResponse",
            "data": _b64(response.SerializeToString()),
        },
        {"op": "from_text", "type": "ModelConfig", "text": SAMPLE_CONFIG_PBTXT},
    )
    assert decoded["dict"] == _as_dict(response)
    assert _unb64(decoded["bytes"]) == response.SerializeToString(deterministic=True)
    # The same config.pbtxt parsed by tritonclient's class decodes to ours.
    assert mc.ModelConfig.FromString(_unb64(triton_text_bytes)) == text_format.Parse(
        SAMPLE_CONFIG_PBTXT, mc.ModelConfig()
    )
