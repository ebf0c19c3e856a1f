"""bench.stack.perf_repository: the copy perf_analyzer can drive keeps only graph inputs."""

from __future__ import annotations

from pathlib import Path

from bench.stack import perf_repository
from tensorgate.repository import load_spec
from tests.support import make_tiny_repository


def test_optional_inputs_the_graph_lacks_are_left_out(tmp_path: Path) -> None:
    make_tiny_repository(tmp_path / "src", "m")
    config = tmp_path / "src" / "m" / "config.pbtxt"
    config.write_text(config.read_text().replace(
        '{ name: "image" data_type: TYPE_FP32 dims: [ 1, 28, 28 ] }',
        '{ name: "image" data_type: TYPE_FP32 dims: [ 1, 28, 28 ] optional: true },\n'
        '  { name: "image_bytes" data_type: TYPE_STRING dims: [ 1 ] optional: true }')
        + 'parameters { key: "runner" value: { string_value: "classifier" } }\n')
    out = perf_repository(tmp_path / "src", tmp_path / "out")
    spec = load_spec(out / "m")
    assert [(t.name, t.optional) for t in spec.inputs] == [("image", False)]
    assert spec.parameters["runner"] == "classifier" and spec.max_batch_size == 64
    assert (out / "m" / "1").is_symlink() and spec.model_file.is_file()


def test_perf_input_data_is_finite_pixels(tmp_path: Path) -> None:
    import json

    import numpy as np

    from bench.perf import input_data

    make_tiny_repository(tmp_path / "src", "m")
    rows = json.loads(input_data(tmp_path / "src" / "m", tmp_path / "m.json", samples=3).read_text())["data"]
    assert len(rows) == 3 and rows[0]["image"]["shape"] == [1, 28, 28]
    values = np.array(rows[0]["image"]["content"])
    assert values.size == 784 and np.isfinite(values).all() and 0 <= values.min() and values.max() < 1
