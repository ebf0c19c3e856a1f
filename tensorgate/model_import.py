"""`tensorgate import-model`: any ONNX graph into the model repository, no code.

The graph is copied to `<repository>/<name>/<version>/model.onnx` and `<name>/config.pbtxt` is
written from it, as Triton's ONNX Runtime backend auto-completes a config: platform
`onnxruntime_onnx`, every input and output with its Triton datatype and dims. A dynamic first
dimension on every input and output (symbolic, unknown, or a dim_value of -1) is taken as
the batch dimension: `max_batch_size` is set and that dimension left out of `dims`, with dynamic
batching on. Any other dynamic dimension becomes -1. A graph with a fixed first dimension
anywhere does not batch (`max_batch_size: 0`, full dims).

What the servers cannot serve is refused with `ImportRefused` before anything is written:
a file that is not an ONNX model, a tensor of a datatype tensorgate/tensors.py cannot carry, a
graph ONNX Runtime cannot load, a model folder that exists already (unless `force`). The last
check reads the new folder back with `tensorgate.repository.load_spec`, the servers' own reader.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx
from google.protobuf import text_format

from tensorgate.proto import model_config_pb2 as mc
from tensorgate.repository import CONFIG_FILE, ModelSpec, datatype_name, load_spec
from tensorgate.tensors import DTYPES

PLATFORM = "onnxruntime_onnx"
MODEL_FILE = "model.onnx"
DEFAULT_MAX_BATCH_SIZE = 8
# A short batching window: long enough for requests that arrive together to share a batch,
# short enough that a lone request hardly notices it (Triton's own examples use 100-2000 us).
DEFAULT_QUEUE_DELAY_US = 1000
# The queue bound the gateway admits against (RESOURCE_EXHAUSTED beyond it), as in models/.
DEFAULT_MAX_QUEUE_SIZE = 1024

# ONNX element type -> Triton config datatype. Types missing here (complex, float8, int4, ...)
# have no Triton datatype at all; BFLOAT16 has one, but tensorgate/tensors.py cannot carry it.
ONNX_TO_TRITON: dict[int, mc.DataType] = {
    onnx.TensorProto.FLOAT: mc.TYPE_FP32,
    onnx.TensorProto.DOUBLE: mc.TYPE_FP64,
    onnx.TensorProto.FLOAT16: mc.TYPE_FP16,
    onnx.TensorProto.BFLOAT16: mc.TYPE_BF16,
    onnx.TensorProto.BOOL: mc.TYPE_BOOL,
    onnx.TensorProto.UINT8: mc.TYPE_UINT8,
    onnx.TensorProto.UINT16: mc.TYPE_UINT16,
    onnx.TensorProto.UINT32: mc.TYPE_UINT32,
    onnx.TensorProto.UINT64: mc.TYPE_UINT64,
    onnx.TensorProto.INT8: mc.TYPE_INT8,
    onnx.TensorProto.INT16: mc.TYPE_INT16,
    onnx.TensorProto.INT32: mc.TYPE_INT32,
    onnx.TensorProto.INT64: mc.TYPE_INT64,
    onnx.TensorProto.STRING: mc.TYPE_STRING,
}

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class ImportRefused(Exception):
    """The graph cannot be served as it is, or the repository already holds the model."""


class BadArgument(ValueError):
    """A model name, version or batch size that cannot be used (the caller's mistake, not the graph's)."""


@dataclass(frozen=True)
class GraphTensor:
    """One graph input or output as the config will declare it."""

    name: str
    data_type: mc.DataType
    shape: tuple[int, ...]  # full shape, -1 = dynamic


@dataclass(frozen=True)
class Imported:
    """What an import wrote, and what the servers will read of it."""

    spec: ModelSpec
    config_path: Path
    warnings: tuple[str, ...] = ()


def check_name(name: str) -> str:
    """A model name usable as a folder, a Redis key part and a Triton model name."""
    if not _NAME.fullmatch(name):
        raise BadArgument(f"model name '{name}': use letters, digits, '_', '.' and '-', starting with a letter or digit")
    return name


def check_version(version: str) -> str:
    """Versions are positive integers (Triton's version folders)."""
    if not version.isdigit() or int(version) < 1:
        raise BadArgument(f"version '{version}': must be a positive integer")
    return str(int(version))


def read_graph(path: Path) -> onnx.ModelProto:
    """The model proto (weights stored outside the file are not loaded); ImportRefused if it is no ONNX model."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf's DecodeError, or onnx's own errors on a garbled file
        raise ImportRefused(f"{path} is not an ONNX model ({type(err).__name__}: {err})") from None
    if not model.ir_version or not model.HasField("graph") or not model.graph.output:
        raise ImportRefused(f"{path} is not an ONNX model (no IR version, graph or outputs)")
    return model


def _dim(dim: onnx.TensorShapeProto.Dimension) -> int:
    """Its size; -1 when dynamic: symbolic (dim_param), unknown, or -1 as old exporters write it."""
    if not dim.HasField("dim_value"):
        return -1
    return dim.dim_value if dim.dim_value >= 0 else -1


def _tensor(kind: str, value: onnx.ValueInfoProto) -> GraphTensor:
    """One graph input or output, or ImportRefused naming it and what the servers cannot carry."""
    which = value.type.WhichOneof("value")
    if which != "tensor_type":
        shown = which.removesuffix("_type") if which else "value of no type"
        raise ImportRefused(f"{kind} '{value.name}' is a {shown}, not a tensor: the servers carry tensors only")
    tensor = value.type.tensor_type
    known = tensor.elem_type in onnx.TensorProto.DataType.values()
    onnx_type = onnx.TensorProto.DataType.Name(tensor.elem_type) if known else f"number {tensor.elem_type}"
    triton = ONNX_TO_TRITON.get(tensor.elem_type)
    if triton is None or datatype_name(triton) not in DTYPES:
        served = ", ".join(DTYPES)
        raise ImportRefused(f"{kind} '{value.name}' has ONNX type {onnx_type}, which the servers cannot carry "
                            f"(they carry {served})")
    if not tensor.HasField("shape"):
        raise ImportRefused(f"{kind} '{value.name}' ({onnx_type}) has no shape in the graph, not even its rank; "
                            "run onnx.shape_inference on the model or export it with shapes")
    shape = tuple(_dim(d) for d in tensor.shape.dim)
    if 0 in shape:  # ONNX Runtime holds a 0 to its word (only empty tensors fit); Triton has no 0 dims
        raise ImportRefused(f"{kind} '{value.name}' has a dimension of size 0 in {list(shape)}: ONNX Runtime "
                            "would take only empty tensors there (a dynamic dim is symbolic or -1)")
    return GraphTensor(value.name, triton, shape)


def graph_tensors(model: onnx.ModelProto) -> tuple[list[GraphTensor], list[GraphTensor]]:
    """The graph's inputs (initializers left out: they are weights) and outputs, in graph order."""
    graph = model.graph
    if any(not o.type.tensor_type.HasField("shape") for o in graph.output):
        try:  # exporters often leave output shapes out; ONNX's own inference recovers most of them
            graph = onnx.shape_inference.infer_shapes(model).graph
        except Exception:  # unknown custom ops and the like: keep what the file says
            pass
    weights = {i.name for i in graph.initializer}
    inputs = [_tensor("input", v) for v in graph.input if v.name not in weights]
    outputs = [_tensor("output", v) for v in graph.output]
    if not inputs:
        raise ImportRefused("the graph has no inputs: a request must give at least one")
    return inputs, outputs


def _fixed_first_dim(tensors: list[tuple[str, GraphTensor]]) -> str | None:
    """Why the graph cannot batch, or None when every tensor starts with a dynamic dim."""
    for kind, t in tensors:
        if not t.shape:
            return f"{kind} '{t.name}' is a scalar"
        if t.shape[0] != -1:
            return f"{kind} '{t.name}' has a fixed first dimension {t.shape[0]}"
    return None


def build_config(name: str, inputs: list[GraphTensor], outputs: list[GraphTensor],
                 max_batch_size: int | None = None) -> mc.ModelConfig:
    """The config Triton's auto-complete would make. `max_batch_size`: None takes
    DEFAULT_MAX_BATCH_SIZE when the graph can batch and 0 otherwise; 0 turns batching off."""
    tensors = [("input", t) for t in inputs] + [("output", t) for t in outputs]
    fixed = _fixed_first_dim(tensors)
    if fixed and max_batch_size:
        raise ImportRefused(f"max batch size {max_batch_size}: the graph cannot batch, its {fixed}")
    batch = 0 if fixed else (DEFAULT_MAX_BATCH_SIZE if max_batch_size is None else max_batch_size)
    config = mc.ModelConfig(name=name, platform=PLATFORM, max_batch_size=batch)
    for kind, t in tensors:
        if not t.shape:  # Triton wants dims, and an empty reshape only for a batching model
            raise ImportRefused(f"{kind} '{t.name}' is a scalar in a graph that does not batch: "
                                "a Triton config cannot declare it")
        dims = list(t.shape[1:] if batch else t.shape)
        entry = config.input.add() if kind == "input" else config.output.add()
        entry.name, entry.data_type = t.name, t.data_type
        entry.dims.extend(dims or [1])
        if not dims:  # [batch] alone: declared as Triton does, dims [1] with an empty reshape
            entry.reshape.SetInParent()
    batching = config.dynamic_batching  # also for batch 0: it carries the queue bound
    if batch:
        batching.max_queue_delay_microseconds = DEFAULT_QUEUE_DELAY_US
    batching.default_queue_policy.max_queue_size = DEFAULT_MAX_QUEUE_SIZE
    return config


def config_text(config: mc.ModelConfig, note: str = "") -> str:
    """Protobuf text of the config, with `note` as a leading comment (Triton's parser skips comments)."""
    comment = "".join(f"# {line}\n" for line in note.splitlines())
    return comment + text_format.MessageToString(config)


def _external_files(model: onnx.ModelProto, source: Path) -> list[str]:
    """Files next to the graph that hold its weights (models over 2 GB), relative to its folder."""
    files = set()
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            resolved = (source.parent / location).resolve()
            if not location or not resolved.is_relative_to(source.parent.resolve()):
                raise ImportRefused(f"weight '{tensor.name}' is stored outside the graph's folder ('{location}')")
            files.add(location)
    return sorted(files)


def check_loads(model_file: Path) -> list[str]:
    """Refuse a graph ONNX Runtime cannot load; warnings (as text) when the check cannot be made."""
    try:
        import onnxruntime as ort
    except ImportError:  # a minimal install (the SDK alone) may lack it
        return [f"onnxruntime is not installed: not checked that ONNX Runtime can load {model_file.name}"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    try:
        ort.InferenceSession(str(model_file), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
        raise ImportRefused(f"ONNX Runtime cannot load the graph: {err}") from None
    return []


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _install(staged: Path, model_dir: Path, version: str) -> None:
    """Move the staged model into place. Over an existing model (force) only its config and this
    version folder are replaced; other versions and side files stay."""
    if not model_dir.exists():
        staged.rename(model_dir)
        return
    target = model_dir / version
    if target.exists():
        target.rename(staged / f"old-{version}")  # removed with the staging folder
    (staged / version).rename(target)
    os.replace(staged / CONFIG_FILE, model_dir / CONFIG_FILE)


def import_model(source: Path, repository: Path, name: str, version: str = "1",
                 max_batch_size: int | None = None, force: bool = False) -> Imported:
    """Copy `source` into `repository` as model `name`, version `version`, with its config.

    Raises ImportRefused for what the servers could not serve (nothing is written then),
    BadArgument for a bad name, version or batch size, OSError when the file cannot be read."""
    name, version = check_name(name), check_version(version)
    if max_batch_size is not None and max_batch_size < 0:
        raise BadArgument(f"max batch size {max_batch_size}: must be 0 (no batching) or more")
    model_dir = repository / name
    if model_dir.exists() and not force:
        raise ImportRefused(f"{model_dir} exists already (force replaces its config and version {version})")
    if model_dir.exists() and not model_dir.is_dir():
        raise ImportRefused(f"{model_dir} exists and is not a folder")
    source.open("rb").close()  # an unreadable file is an OSError, not "not an ONNX model"
    model = read_graph(source)
    inputs, outputs = graph_tensors(model)
    config = build_config(name, inputs, outputs, max_batch_size)
    extra = _external_files(model, source)
    repository.mkdir(parents=True, exist_ok=True)
    # Staged one level down in a hidden folder: a server listing the repository meanwhile
    # never sees a half-written model, and a refusal leaves nothing behind.
    with tempfile.TemporaryDirectory(prefix=f".import-{name}-", dir=repository) as tmp:
        staged = Path(tmp) / name
        (staged / version).mkdir(parents=True)
        shutil.copyfile(source, staged / version / MODEL_FILE)
        for location in extra:
            (staged / version / location).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source.parent / location, staged / version / location)
        warnings = check_loads(staged / version / MODEL_FILE)
        note = f"written by tensorgate import-model from {source.name} (sha256 {_sha256(source)})"
        (staged / CONFIG_FILE).write_text(config_text(config, note))
        spec = load_spec(staged, version)  # what the servers will read
        declared = [(t.name, datatype_name(t.data_type)) for t in inputs + outputs]
        read = [(t.name, t.datatype) for t in spec.inputs + spec.outputs]
        if read != declared or spec.max_batch_size != config.max_batch_size:
            raise ImportRefused(f"the written config reads back differently: {read} != {declared}")
        _install(staged, model_dir, version)
    return Imported(load_spec(model_dir, version), model_dir / CONFIG_FILE, tuple(warnings))
