"""config.pbtxt rendering and the model repository layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.common.repository import DynamicBatching, ModelConfig, TensorConfig, write_entry

MNIST_MLP_PBTXT = """\
name: "mnist_mlp"
platform: "onnxruntime_onnx"
max_batch_size: 64
input [
  { name: "image" data_type: TYPE_FP32 dims: [ 1, 28, 28 ] optional: true },
  { name: "image_bytes" data_type: TYPE_STRING dims: [ 1 ] reshape: { shape: [ ] } optional: true }
]
output [
  { name: "probabilities" data_type: TYPE_FP32 dims: [ 10 ] }
]
dynamic_batching {
  preferred_batch_size: [ 16, 32, 64 ]
  max_queue_delay_microseconds: 2000
  default_queue_policy {
    timeout_action: REJECT
    default_timeout_microseconds: 5000000
    allow_timeout_override: true
    max_queue_size: 1024
  }
}
parameters { key: "runner" value: { string_value: "classifier" } }
"""


def test_mnist_mlp_config_is_exactly_the_contract() -> None:
    from training.mnist.mlp import CONFIG

    assert CONFIG.render() == MNIST_MLP_PBTXT


def test_several_tensors_and_parameters() -> None:
    config = ModelConfig(
        name="digit_gan",
        max_batch_size=8,
        inputs=(TensorConfig("digit", "TYPE_INT64", (1,)), TensorConfig("seed", "TYPE_INT64", (1,))),
        outputs=(TensorConfig("image", "TYPE_FP32", (1, 28, 28)),),
        parameters={"note": 'say "hi"\\now'},
    )
    text = config.render()
    assert 'input [\n  { name: "digit" data_type: TYPE_INT64 dims: [ 1 ] },\n' \
           '  { name: "seed" data_type: TYPE_INT64 dims: [ 1 ] }\n]' in text
    assert "dynamic_batching" not in text
    assert text.endswith('parameters { key: "note" value: { string_value: "say \\"hi\\"\\\\now" } }\n')


@pytest.mark.parametrize("make", [
    lambda: TensorConfig("x", "FP32", (1,)),
    lambda: TensorConfig("x", "TYPE_FP32", (0,)),
    lambda: ModelConfig("bad name", 1, (), ()),
    lambda: ModelConfig("m", 8, (), (), DynamicBatching((16,), 100, 10, 1000)),
])
def test_invalid_configs_are_refused(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]


def test_write_entry_layout(tmp_path: Path) -> None:
    source = tmp_path / "model.onnx"
    source.write_bytes(b"onnx")
    config = ModelConfig("m", 4, (TensorConfig("x", "TYPE_FP32", (-1,)),),
                         (TensorConfig("y", "TYPE_FP32", (2,)),))
    version_dir = write_entry(tmp_path / "models", config, 3, {"model.onnx": source})
    assert version_dir == tmp_path / "models" / "m" / "3"
    assert (version_dir / "model.onnx").read_bytes() == b"onnx"
    assert (tmp_path / "models" / "m" / "config.pbtxt").read_text() == config.render()


def test_config_parses_as_the_servers_model_config() -> None:
    # tensorgate.proto's ModelConfig is wire-compatible with Triton's (tests/unit/test_protos.py checks
    # that); tritonclient's own copy cannot be imported beside it in one process.
    from tensorgate.proto import model_config_pb2
    from tensorgate.repository import parse_config
    from training.mnist.mlp import CONFIG

    parsed = parse_config(ModelConfig(**{**CONFIG.__dict__, "parameters": {"k": "v"}}).render())
    assert parsed.name == "mnist_mlp" and parsed.max_batch_size == 64
    assert list(parsed.input[0].dims) == [1, 28, 28]
    assert parsed.input[0].data_type == model_config_pb2.TYPE_FP32
    assert list(parsed.dynamic_batching.preferred_batch_size) == [16, 32, 64]
    policy = parsed.dynamic_batching.default_queue_policy
    assert policy.timeout_action == model_config_pb2.ModelQueuePolicy.REJECT
    assert (policy.default_timeout_microseconds, policy.max_queue_size) == (5_000_000, 1024)
    assert policy.allow_timeout_override and parsed.parameters["k"].string_value == "v"


def test_reshape_renders_as_triton_parses_it() -> None:
    from tensorgate.repository import parse_config

    config = ModelConfig(
        name="digit_gan", max_batch_size=4,
        inputs=(TensorConfig("digit", "TYPE_INT64", (1,), reshape=()),),
        outputs=(TensorConfig("image", "TYPE_FP32", (1, 28, 28)),))
    parsed = parse_config(config.render())
    assert parsed.input[0].HasField("reshape") and list(parsed.input[0].reshape.shape) == []
    assert not parsed.output[0].HasField("reshape") and list(parsed.output[0].dims) == [1, 28, 28]
