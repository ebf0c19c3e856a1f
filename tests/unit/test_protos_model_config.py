"""config.pbtxt as ModelConfig: the shipped MNIST config parses into what the model service
reads, and a ModelConfigResponse round-trips with tritonclient's classes (protos_triton)."""

from __future__ import annotations

from google.protobuf import text_format

from tensorgate.proto import grpc_service_pb2 as gs
from tensorgate.proto import model_config_pb2 as mc
from tests.unit.protos_triton import SAMPLE_CONFIG_PBTXT, _as_dict, _b64, _triton, _unb64


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

