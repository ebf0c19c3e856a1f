from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from services.modelservice.runners import load_model, unknown_parameters
from services.modelservice.runners.base import (
    CPU,
    CUDA,
    cgroup_cpu_limit,
    choose_providers,
    default_intra_op_threads,
    model_threads,
    session_options,
    usable_cores,
)
from services.modelservice.runners.onnx import OnnxModel
from tensorgate.repository import load_spec
from services.settings import ModelServiceSettings
from tests.support import make_tiny_repository


def test_provider_choice() -> None:
    assert choose_providers("auto", [CUDA, CPU]) == [CUDA, CPU]
    assert choose_providers("auto", [CPU]) == [CPU]
    assert choose_providers("cpu", [CUDA, CPU]) == [CPU]
    with pytest.raises(RuntimeError, match="onnxruntime-gpu"):
        choose_providers("cuda", [CPU])


def test_onnx_model_runs_and_warms_up(tmp_path: Path) -> None:
    make_tiny_repository(tmp_path, "m", max_batch_size=4)
    spec = load_spec(tmp_path / "m")
    model = load_model(spec, ModelServiceSettings(device="cpu", intra_op_threads=1))
    assert isinstance(model, OnnxModel) and model.provider == CPU
    model.warmup()
    out = model.run({"image": np.zeros((3, 1, 28, 28), np.float32)}, ["probabilities"])
    assert out["probabilities"].shape == (3, 10)
    np.testing.assert_allclose(out["probabilities"].sum(axis=1), 1.0, rtol=1e-5)


def test_config_and_graph_must_agree(tmp_path: Path) -> None:
    make_tiny_repository(tmp_path, "m")
    config = tmp_path / "m" / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "probabilities"', 'name: "logits"'))
    with pytest.raises(ValueError, match="config output 'logits' is not a graph output"):
        load_model(load_spec(tmp_path / "m"), ModelServiceSettings(device="cpu"))


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENSORGATE_MODEL_NAME", "mnist_cnn")
    monkeypatch.setenv("TENSORGATE_MODEL_GRPC_PORT", "8102")
    settings = ModelServiceSettings()
    assert settings.name == "mnist_cnn" and settings.grpc_port == 8102
    assert ModelServiceSettings(grpc_port=9000).grpc_port == 9000  # explicit values (CLI flags) win


def test_sessions_do_not_spin_and_take_threads_from_the_cores() -> None:
    options = session_options(ModelServiceSettings(device="cpu"))
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == default_intra_op_threads()
    spinning = session_options(ModelServiceSettings(device="cpu", ort_spinning=True, intra_op_threads=3))
    assert spinning.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert spinning.intra_op_num_threads == 3
    assert [default_intra_op_threads(n) for n in (1, 2, 4, 16, 64)] == [1, 1, 2, 8, 8]


def test_a_model_config_sets_its_own_thread_counts_as_for_tritons_onnxruntime_backend(tmp_path: Path) -> None:
    settings = ModelServiceSettings(device="cpu", intra_op_threads=1)
    assert model_threads({}, (1, 1)) == (1, 1)
    assert model_threads({"intra_op_thread_count": "3", "inter_op_thread_count": "2"}, (1, 1)) == (3, 2)
    assert model_threads({"intra_op_thread_count": "0"}, (1, 1)) == (usable_cores(), 1)
    for bad in ("-1", "two", "1.5", ""):
        with pytest.raises(ValueError, match="intra_op_thread_count must be a whole number"):
            model_threads({"intra_op_thread_count": bad}, (1, 1))
    options = session_options(settings, {"intra_op_thread_count": "2"})
    assert options.intra_op_num_threads == 2
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    # Served: the runner's sessions take the config's count over the service's setting.
    make_tiny_repository(tmp_path, "m")
    config = tmp_path / "m" / "config.pbtxt"
    config.write_text(config.read_text() + 'parameters { key: "intra_op_thread_count" value: { string_value: "2" } }\n')
    model = load_model(load_spec(tmp_path / "m"), settings)
    assert isinstance(model, OnnxModel)
    assert [s.get_session_options().intra_op_num_threads for s in model.sessions] == [2]
    config.write_text(config.read_text().replace('string_value: "2"', 'string_value: "many"'))
    with pytest.raises(ValueError, match="intra_op_thread_count"):
        load_model(load_spec(tmp_path / "m"), settings)


def test_instance_group_gives_parallel_sessions(tmp_path: Path) -> None:
    make_tiny_repository(tmp_path, "m", max_batch_size=4)
    config = tmp_path / "m" / "config.pbtxt"
    config.write_text(config.read_text() + "instance_group [ { count: 2 kind: KIND_CPU } ]\n")
    spec = load_spec(tmp_path / "m")
    assert spec.instance_count == 2
    model = load_model(spec, ModelServiceSettings(device="cpu", intra_op_threads=1))
    assert isinstance(model, OnnxModel) and len(model.sessions) == 2
    model.warmup()
    with ThreadPoolExecutor(2) as pool:  # two batches at once, each on a session of its own
        outs = list(pool.map(lambda n: model.run({"image": np.zeros((n, 1, 28, 28), np.float32)}, ["probabilities"]),
                             [1, 2, 3, 4] * 5))
    assert [o["probabilities"].shape[0] for o in outs] == [1, 2, 3, 4] * 5


def test_unknown_runner_names_the_known_ones(tmp_path: Path) -> None:
    make_tiny_repository(tmp_path, "m")
    config = tmp_path / "m" / "config.pbtxt"
    config.write_text(config.read_text() + 'parameters { key: "runner" value: { string_value: "tensorrt" } }\n')
    with pytest.raises(ValueError, match=r"unknown runner .tensorrt. \(known: .*onnx, translator\)"):
        load_model(load_spec(tmp_path / "m"), ModelServiceSettings(device="cpu"))


def test_cgroup_quota_narrows_the_usable_cores(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(tmp_path) is None  # no cgroup files: no limit
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # docker --cpus 1.5
    assert cgroup_cpu_limit(tmp_path) == 1.5
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("400000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(v1) == 4.0


def test_a_config_may_name_a_runner_class_by_its_path(tmp_path: Path) -> None:
    make_tiny_repository(tmp_path, "m")
    config = tmp_path / "m" / "config.pbtxt"
    base = config.read_text()
    config.write_text(base + 'parameters { key: "runner" value: { string_value: "tests.faults:PoisonOnNegative" } }\n')
    model = load_model(load_spec(tmp_path / "m"), ModelServiceSettings(device="cpu"))
    assert type(model).__name__ == "PoisonOnNegative"
    config.write_text(base + 'parameters { key: "runner" value: { string_value: "pathlib:Path" } }\n')
    with pytest.raises(ValueError, match="is not a Model subclass"):
        load_model(load_spec(tmp_path / "m"), ModelServiceSettings(device="cpu"))


def test_a_config_parameter_nothing_reads_is_refused_by_name(tmp_path: Path) -> None:
    make_tiny_repository(tmp_path, "m")
    config = tmp_path / "m" / "config.pbtxt"
    base = config.read_text()
    # Triton's key is intra_op_thread_count; a near miss would otherwise run with the default.
    config.write_text(base + 'parameters { key: "intra_op_threads" value: { string_value: "2" } }\n')
    with pytest.raises(ValueError, match=r"parameter\(s\) intra_op_threads not read by runner 'onnx' .*"
                                         r"known: .*image_range.*intra_op_thread_count"):
        load_model(load_spec(tmp_path / "m"), ModelServiceSettings(device="cpu"))
    # A text rule on an FP32 input would be ignored by validation: refused too.
    config.write_text(base + 'parameters { key: "image_utf8" value: { string_value: "true" } }\n')
    with pytest.raises(ValueError, match=r"parameter\(s\) image_utf8 not read"):
        load_model(load_spec(tmp_path / "m"), ModelServiceSettings(device="cpu"))
    # What validation reads for this model's inputs, and a custom runner's own, are accepted.
    config.write_text(base + 'parameters { key: "image_range" value: { string_value: "0..1" } }\n'
                      'parameters { key: "runner" value: { string_value: "tests.faults:SlowModel" } }\n'
                      'parameters { key: "slow_ms" value: { string_value: "1" } }\n')
    assert type(load_model(load_spec(tmp_path / "m"), ModelServiceSettings(device="cpu"))).__name__ == "SlowModel"


def test_every_shipped_config_sets_only_parameters_its_runner_reads() -> None:
    """The translator's settings are many; a misspelt one (short_lane) is named, not ignored."""
    repository = Path(__file__).resolve().parents[2] / "models"
    specs = [load_spec(d) for d in sorted(repository.iterdir()) if (d / "config.pbtxt").is_file()]
    assert {s.name for s in specs} >= {"mnist_mlp", "mnist_cnn", "digit_gan", "translator_de_en"}
    assert {s.name: unknown_parameters(s) for s in specs} == {s.name: [] for s in specs}
    translator = next(s for s in specs if s.name == "translator_de_en")
    typo = dataclasses.replace(translator, parameters={**translator.parameters, "short_lanes": "priority"})
    assert unknown_parameters(typo) == ["short_lanes"]
