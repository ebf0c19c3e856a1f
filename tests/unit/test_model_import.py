"""tensorgate import-model on small graphs made here, read back with the servers' own reader
(tensorgate.repository.load_spec), and the generic runner serving what it wrote."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tensorgate.errors import InvalidArgument
from services.modelservice.runners import load_model
from services.modelservice.runners.onnx import OnnxModel
from tensorgate.proto import grpc_service_pb2 as pb
from tensorgate.repository import load_spec, parse_config
from services.settings import ModelServiceSettings
from tensorgate.tensors import add_input
from services.validation import validate
from tensorgate.cli import main
from tensorgate.model_import import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_QUEUE_DELAY_US,
    BadArgument,
    ImportRefused,
    import_model,
)
from tests.support import tiny_mnist_graph

SETTINGS = ModelServiceSettings(device="cpu", intra_op_threads=1)


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def graph(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
          initializers: list[onnx.TensorProto] | None = None) -> onnx.ModelProto:
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers or []),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def value(name: str, elem: int, shape: list[int | str | None]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def identity(elem: int, shape: list[int | str | None]) -> onnx.ModelProto:
    return graph([helper.make_node("Identity", ["x"], ["y"])], [value("x", elem, shape)], [value("y", elem, shape)])


def conv(kernel: int) -> onnx.ModelProto:
    """x [N, 1, H, W] -> y [N, 1, H-k+1, W-k+1]: a kernel without padding, so H and W below k fail."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1, 1, kernel, kernel], [1.0] * kernel * kernel)
    return graph([helper.make_node("Conv", ["x", "w"], ["y"])], [value("x", TensorProto.FLOAT, ["n", 1, "h", "w"])],
                 [value("y", TensorProto.FLOAT, ["n", 1, None, None])], [weight])


def test_fixed_first_dim_does_not_batch(tmp_path: Path) -> None:
    source = save(identity(TensorProto.FLOAT, [1, 3, 4]), tmp_path / "fixed.onnx")
    imported = import_model(source, tmp_path / "models", "fixed")
    spec = load_spec(tmp_path / "models" / "fixed")
    assert spec.max_batch_size == 0 and spec.config.platform == "onnxruntime_onnx"
    assert spec.inputs[0].shape == (1, 3, 4) and spec.outputs[0].shape == (1, 3, 4)
    assert spec.max_queue_size == 1024 and spec.max_queue_delay_s == 0
    assert imported.spec == spec and imported.warnings == ()
    assert (tmp_path / "models" / "fixed" / "1" / "model.onnx").read_bytes() == source.read_bytes()


def test_dynamic_first_dim_is_the_batch(tmp_path: Path) -> None:
    source = save(tiny_mnist_graph(), tmp_path / "mnist.onnx")
    import_model(source, tmp_path / "models", "digits")
    text = (tmp_path / "models" / "digits" / "config.pbtxt").read_text()
    assert text.startswith("# written by tensorgate import-model from mnist.onnx (sha256 ")
    config = parse_config(text)  # plain protobuf text of inference.ModelConfig
    assert config.name == "digits" and config.max_batch_size == DEFAULT_MAX_BATCH_SIZE
    assert list(config.input[0].dims) == [1, 28, 28] and config.input[0].data_type == 11  # TYPE_FP32
    spec = load_spec(tmp_path / "models" / "digits")
    assert spec.inputs[0].shape == (-1, 1, 28, 28) and spec.outputs[0].shape == (-1, 10)
    assert spec.max_queue_delay_s == DEFAULT_QUEUE_DELAY_US / 1e6 and spec.preferred_batch_sizes == ()
    import_model(source, tmp_path / "models", "sixteen", max_batch_size=16)
    assert load_spec(tmp_path / "models" / "sixteen").max_batch_size == 16
    import_model(source, tmp_path / "models", "unbatched", max_batch_size=0)  # 0 turns batching off
    unbatched = load_spec(tmp_path / "models" / "unbatched")
    assert unbatched.max_batch_size == 0 and unbatched.inputs[0].shape == (-1, 1, 28, 28)


def test_several_inputs_outputs_and_datatypes(tmp_path: Path) -> None:
    # Symbolic, -1 and unknown first dims all count as dynamic; a [batch]-only tensor is dims [1] reshape [].
    model = graph(
        [helper.make_node("Identity", ["ids"], ["ids_out"]), helper.make_node("Identity", ["mask"], ["mask_out"]),
         helper.make_node("Identity", ["text"], ["text_out"]), helper.make_node("Cast", ["half"], ["full"], to=1)],
        [value("ids", TensorProto.INT64, [-1, "seq"]), value("mask", TensorProto.BOOL, ["b", "seq"]),
         value("text", TensorProto.STRING, [None]), value("half", TensorProto.FLOAT16, ["b", 2])],
        [value("ids_out", TensorProto.INT64, [-1, "seq"]), value("mask_out", TensorProto.BOOL, ["b", "seq"]),
         value("text_out", TensorProto.STRING, [None]), value("full", TensorProto.FLOAT, ["b", 2])],
    )
    import_model(save(model, tmp_path / "multi.onnx"), tmp_path / "models", "multi", max_batch_size=4)
    spec = load_spec(tmp_path / "models" / "multi")
    assert spec.max_batch_size == 4
    assert [(t.name, t.datatype, t.shape) for t in spec.inputs] == [
        ("ids", "INT64", (-1, -1)), ("mask", "BOOL", (-1, -1)), ("text", "BYTES", (-1, 1)), ("half", "FP16", (-1, 2))]
    assert [(t.name, t.datatype) for t in spec.outputs] == [
        ("ids_out", "INT64"), ("mask_out", "BOOL"), ("text_out", "BYTES"), ("full", "FP32")]
    assert spec.inputs[2].model_shape == (-1,) and spec.config.input[2].HasField("reshape")

    model_ = load_model(spec, SETTINGS)  # the generic runner serves it, strings included
    model_.warmup()
    feed = {"ids": np.array([[1, 2, 3]], np.int64), "mask": np.array([[True, False, True]]),
            "text": np.array(["grüß".encode(), b"x"], dtype=object), "half": np.ones((1, 2), np.float16)}
    out = model_.run(model_.prepare(feed), ["text_out", "full", "ids_out"])
    assert list(out["text_out"]) == ["grüß", "x"]  # not "b'gr\\xc3...'": the runner hands ORT str
    assert out["full"].dtype == np.float32 and out["ids_out"].tolist() == [[1, 2, 3]]
    with pytest.raises(InvalidArgument, match="input 'text': element 1 is not valid UTF-8"):
        model_.prepare({**feed, "text": np.array([b"ok", b"\xff"], dtype=object)})


def test_dynamic_non_batch_dims_are_minus_one_and_validated(tmp_path: Path) -> None:
    import_model(save(conv(5), tmp_path / "conv.onnx"), tmp_path / "models", "conv")
    spec = load_spec(tmp_path / "models" / "conv")
    assert spec.max_batch_size == 8 and spec.inputs[0].shape == (-1, 1, -1, -1)

    def request(*shapes: tuple[int, ...]) -> pb.ModelInferRequest:
        r = pb.ModelInferRequest(model_name="conv")
        for shape in shapes:
            add_input(r, "x", np.zeros(shape, np.float32))
        return r

    for shape in [(1, 1, 32, 32), (2, 1, 64, 96), (1, 1, 7, 300)]:  # any H and W, at the gateway
        assert validate(spec, request(shape)).inputs["x"].shape == shape
    with pytest.raises(InvalidArgument, match=r"expected shape \[-1, 1, -1, -1\], got \[1, 3, 32, 32\]"):
        validate(spec, request((1, 3, 32, 32)))
    with pytest.raises(InvalidArgument, match="expected shape"):
        validate(spec, request((1, 32, 32)))
    with pytest.raises(InvalidArgument, match=r"batch size 9 outside 1..8"):
        validate(spec, request((9, 1, 32, 32)))


def test_warmup_tries_a_larger_size_then_gives_up_without_failing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    repo = tmp_path / "models"
    import_model(save(conv(5), tmp_path / "conv5.onnx"), repo, "conv5")  # 1x1 pixels fail, 32x32 work
    model = load_model(load_spec(repo / "conv5"), SETTINGS)
    with caplog.at_level(logging.WARNING):
        model.warmup()
    assert "warmup skipped" not in caplog.text
    import_model(save(conv(40), tmp_path / "conv40.onnx"), repo, "conv40")  # wants 40 pixels: no guess fits
    model = load_model(load_spec(repo / "conv40"), SETTINGS)
    with caplog.at_level(logging.WARNING):
        model.warmup()  # logged, not raised: the service still starts
    assert "model conv40: warmup skipped" in caplog.text
    out = model.run({"x": np.ones((2, 1, 40, 41), np.float32)}, ["y"])
    np.testing.assert_allclose(out["y"], np.full((2, 1, 1, 2), 1600.0))


def test_unsupported_datatypes_are_refused_by_name(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    source = save(identity(TensorProto.BFLOAT16, ["n", 4]), tmp_path / "bf16.onnx")
    with pytest.raises(ImportRefused, match=r"input 'x' has ONNX type BFLOAT16, which the servers cannot carry "
                                            r"\(they carry BOOL, .*FP32, FP64, BYTES\)"):
        import_model(source, repo, "bf16")
    source = save(identity(TensorProto.COMPLEX64, ["n", 4]), tmp_path / "complex.onnx")
    with pytest.raises(ImportRefused, match="input 'x' has ONNX type COMPLEX64"):
        import_model(source, repo, "complex")
    sequence = graph([helper.make_node("SequenceLength", ["x"], ["y"])],
                     [helper.make_tensor_sequence_value_info("x", TensorProto.FLOAT, None)],
                     [value("y", TensorProto.INT64, [])])
    with pytest.raises(ImportRefused, match="input 'x' is a sequence, not a tensor"):
        import_model(save(sequence, tmp_path / "seq.onnx"), repo, "seq")
    zero = identity(TensorProto.FLOAT, ["n", 0])  # ONNX Runtime takes a 0 literally: only empty tensors
    with pytest.raises(ImportRefused, match=r"input 'x' has a dimension of size 0 in \[-1, 0\]"):
        import_model(save(zero, tmp_path / "zero.onnx"), repo, "zero")
    assert not repo.exists()  # refused before anything was written


def test_not_onnx_and_unloadable_graphs_are_refused(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    text = tmp_path / "notes.onnx"
    text.write_text("not a graph at all\n")
    with pytest.raises(ImportRefused, match="is not an ONNX model"):
        import_model(text, repo, "notes")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ImportRefused, match="is not an ONNX model"):
        import_model(empty, repo, "empty")
    unknown_op = graph([helper.make_node("NoSuchOp", ["x"], ["y"], domain="example.custom")],
                       [value("x", TensorProto.FLOAT, ["n", 2])], [value("y", TensorProto.FLOAT, ["n", 2])])
    unknown_op.opset_import.append(helper.make_opsetid("example.custom", 1))
    with pytest.raises(ImportRefused, match="ONNX Runtime cannot load the graph: .*NoSuchOp"):
        import_model(save(unknown_op, tmp_path / "custom.onnx"), repo, "custom")
    assert sorted(p.name for p in repo.iterdir()) == []  # refused before anything was installed


def test_without_onnxruntime_the_load_check_is_skipped_with_a_warning(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    imported = import_model(save(tiny_mnist_graph(), tmp_path / "m.onnx"), tmp_path / "models", "m")
    assert imported.warnings == ("onnxruntime is not installed: not checked that ONNX Runtime can load model.onnx",)


def test_fixed_graph_refuses_a_batch_size_and_bad_arguments_are_refused(tmp_path: Path) -> None:
    source = save(identity(TensorProto.FLOAT, ["n", 3]), tmp_path / "ok.onnx")
    fixed = save(identity(TensorProto.FLOAT, [2, 3]), tmp_path / "fixed.onnx")
    with pytest.raises(ImportRefused, match="max batch size 4: the graph cannot batch, its input 'x' has a fixed "
                                            "first dimension 2"):
        import_model(fixed, tmp_path / "models", "fixed", max_batch_size=4)
    for name, version in [("a/b", "1"), ("..", "1"), ("", "1"), ("m", "0"), ("m", "v2")]:
        with pytest.raises(BadArgument):
            import_model(source, tmp_path / "models", name, version)


def test_existing_model_needs_force_which_keeps_other_versions(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    first = save(identity(TensorProto.FLOAT, ["n", 3]), tmp_path / "first.onnx")
    second = save(identity(TensorProto.INT32, ["n", 5]), tmp_path / "second.onnx")
    import_model(first, repo, "m")
    (repo / "m" / "labels.txt").write_text("a\nb\n")  # a side file someone added
    with pytest.raises(ImportRefused, match="exists already"):
        import_model(second, repo, "m")
    assert load_spec(repo / "m").inputs[0].datatype == "FP32"  # untouched
    import_model(second, repo, "m", version="2", force=True)
    spec = load_spec(repo / "m")
    assert spec.version == "2" and spec.inputs[0].datatype == "INT32" and spec.inputs[0].shape == (-1, 5)
    assert (repo / "m" / "1" / "model.onnx").read_bytes() == first.read_bytes() and (repo / "m" / "labels.txt").exists()
    import_model(first, repo, "m", version="2", force=True)  # replaces version 2 itself
    assert (repo / "m" / "2" / "model.onnx").read_bytes() == first.read_bytes()
    assert sorted(p.name for p in repo.iterdir()) == ["m"]  # no staging folder left behind


def test_weights_in_external_files_are_copied(tmp_path: Path) -> None:
    model = tiny_mnist_graph()
    src = tmp_path / "src"
    (src / "weights").mkdir(parents=True)
    onnx.save(model, str(src / "big.onnx"), save_as_external_data=True, location="weights/big.bin",
              size_threshold=1024)  # the weights, not the Reshape target ORT must read at load
    import_model(src / "big.onnx", tmp_path / "models", "big")
    version = tmp_path / "models" / "big" / "1"
    assert (version / "weights" / "big.bin").is_file()
    served = load_model(load_spec(tmp_path / "models" / "big"), SETTINGS)
    assert served.run({"image": np.zeros((1, 1, 28, 28), np.float32)}, ["probabilities"])["probabilities"].shape == (1, 10)


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = save(tiny_mnist_graph(), tmp_path / "mnist.onnx")
    repo = str(tmp_path / "models")
    assert main(["import-model", str(source), "--name", "digits", "--repository", repo]) == 0
    out = capsys.readouterr().out
    assert "model 'digits' version 1, batches up to 8" in out and "image" in out and "[-1, 1, 28, 28]" in out
    assert isinstance(load_model(load_spec(Path(repo) / "digits"), SETTINGS), OnnxModel)
    assert main(["import-model", str(source), "--name", "digits", "--repository", repo]) == 1  # exists
    assert "exists already" in capsys.readouterr().err
    assert main(["import-model", str(source), "--name", "digits", "--repository", repo, "--force",
                 "--max-batch-size", "32"]) == 0
    assert load_spec(Path(repo) / "digits").max_batch_size == 32
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01garbage")
    assert main(["import-model", str(bad), "--name", "bad", "--repository", repo]) == 1
    assert "is not an ONNX model" in capsys.readouterr().err
    assert main(["import-model", str(tmp_path / "missing.onnx"), "--name", "x", "--repository", repo]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["import-model", str(source), "--name", "a b", "--repository", repo]) == 2
    assert main(["import-model", str(source), "--name", "v", "--version", "0", "--repository", repo]) == 2
    for argv in (["import-model", str(source)], ["import-model", str(source), "--name", "x", "--max-batch-size", "-1"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["import-model", "--help"])
    assert f"default: {DEFAULT_MAX_BATCH_SIZE}," in capsys.readouterr().out
