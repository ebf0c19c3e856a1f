"""Wire compatibility of protos/*.proto with Triton's `inference` package: every message, enum
and the service have Triton's fields, numbers and types (a field we leave out stays reserved).
The reference is tritonclient 2.41.0's descriptor set, exported by a child interpreter
(protos_triton)."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from tensorgate.proto import grpc_service_pb2 as gs
from tensorgate.proto import grpc_service_pb2_grpc as gs_grpc
from tensorgate.proto import model_config_pb2 as mc
from tests.unit.protos_triton import _triton, _unb64

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
    "RepositoryModelLoad",
    "RepositoryModelUnload",
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
    "inference.ModelRepositoryParameter",
    "inference.RepositoryModelLoadRequest",
    "inference.RepositoryModelLoadRequest.ParametersEntry",
    "inference.RepositoryModelLoadResponse",
    "inference.RepositoryModelUnloadRequest",
    "inference.RepositoryModelUnloadRequest.ParametersEntry",
    "inference.RepositoryModelUnloadResponse",
}


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
