"""The inference RPCs' wire handling: a request parsed once with its bytes kept, and a
serialised response wrapped for the stream without parsing it."""

from __future__ import annotations

import numpy as np

from services.grpc.handlers import SERVICE, InferCall, stream_response
from tensorgate.proto import grpc_service_pb2 as pb
from tensorgate.tensors import add_input, response_outputs


def test_infer_call_keeps_the_bytes_it_was_parsed_from() -> None:
    request = pb.ModelInferRequest(model_name="mnist_mlp", id="r1")
    add_input(request, "image", np.ones((2, 1, 28, 28), np.float32))
    raw = request.SerializeToString()
    call = InferCall.parse(raw)
    assert call.raw is raw and call.request == request
    assert InferCall.of(request).raw == raw


def test_stream_response_is_a_valid_stream_message_for_any_size() -> None:
    for rows in (0, 1, 3, 1000):  # the length varint takes 1 to 3 bytes here
        response = pb.ModelInferResponse(model_name="m", id=f"id{rows}")
        response.outputs.add(name="probabilities", datatype="FP32", shape=[rows, 10])
        response.raw_output_contents.append(np.arange(rows * 10, dtype=np.float32).tobytes())
        wrapped = pb.ModelStreamInferResponse.FromString(stream_response(response.SerializeToString()))
        assert wrapped.error_message == "" and wrapped.infer_response == response
        assert response_outputs(wrapped.infer_response)["probabilities"].shape == (rows, 10)


def test_every_rpc_of_the_service_gets_a_handler() -> None:
    names = {m.name for m in SERVICE.methods}
    assert {"ModelInfer", "ModelStreamInfer", "ModelConfig", "ModelStatistics", "RepositoryIndex"} <= names
