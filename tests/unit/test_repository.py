from __future__ import annotations

from pathlib import Path

import pytest

from tensorgate.errors import ModelNotFound
from tensorgate.repository import load_repository, load_spec
from tests.support import make_tiny_repository


def test_spec_from_config(tmp_path: Path) -> None:
    make_tiny_repository(tmp_path, "mnist_mlp", max_batch_size=32, delay_us=2000, max_queue_size=100)
    spec = load_spec(tmp_path / "mnist_mlp")
    assert spec.name == "mnist_mlp" and spec.version == "1"
    assert spec.inputs[0].shape == (-1, 1, 28, 28) and spec.inputs[0].datatype == "FP32"
    assert spec.outputs[0].shape == (-1, 10)
    assert spec.max_batch_size == 32 and spec.max_queue_delay_s == pytest.approx(0.002)
    assert spec.preferred_batch_sizes == (32,) and spec.max_queue_size == 100
    assert spec.default_timeout_s == 5.0 and spec.allow_timeout_override
    assert spec.model_file == tmp_path / "mnist_mlp" / "1" / "model.onnx"


def test_highest_version_is_default_and_versions_are_checked(tmp_path: Path) -> None:
    make_tiny_repository(tmp_path, "m")
    (tmp_path / "m" / "10").mkdir()
    (tmp_path / "m" / "2").mkdir()
    assert load_spec(tmp_path / "m").version == "10"
    assert load_spec(tmp_path / "m", "2").version == "2"
    with pytest.raises(ModelNotFound, match="no version 3"):
        load_spec(tmp_path / "m", "3")


def test_repository_lists_models_and_rejects_missing(tmp_path: Path) -> None:
    make_tiny_repository(tmp_path, "a")
    make_tiny_repository(tmp_path, "b")
    (tmp_path / "not_a_model").mkdir()
    assert sorted(load_repository(tmp_path)) == ["a", "b"]
    with pytest.raises(FileNotFoundError):
        load_repository(tmp_path / "nope")


def test_bytes_and_unbatched_models(tmp_path: Path) -> None:
    d = tmp_path / "t"
    (d / "1").mkdir(parents=True)
    (d / "config.pbtxt").write_text(
        'name: "t"\nmax_batch_size: 0\ninput [{ name: "text" data_type: TYPE_STRING dims: [ -1 ] }]\n'
        'output [{ name: "score" data_type: TYPE_FP32 dims: [ -1 ] }]\n'
        'parameters { key: "runner" value: { string_value: "onnx" } }\n'
    )
    spec = load_spec(d)
    assert spec.inputs[0].datatype == "BYTES" and spec.inputs[0].shape == (-1,)
    assert spec.max_batch_size == 0 and spec.parameters == {"runner": "onnx"}
    assert spec.default_timeout_s == 0 and spec.allow_timeout_override
