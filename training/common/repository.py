"""Entries of the Triton-style model repository the services load.

    models/<name>/config.pbtxt            protobuf text of Triton's ModelConfig
    models/<name>/<version>/model.onnx    plus side files (card, vocab, ...)

`config.pbtxt` is written by hand-rolled rendering (no Triton protos needed
at training time) in the layout Triton's docs use; dims exclude the batch
dimension because max_batch_size > 0.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

# Triton's DataType enum names.
DATA_TYPES = frozenset({
    "TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64",
    "TYPE_INT8", "TYPE_INT16", "TYPE_INT32", "TYPE_INT64", "TYPE_FP16",
    "TYPE_FP32", "TYPE_FP64", "TYPE_STRING", "TYPE_BF16",
})
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _ints(values: Sequence[int]) -> str:
    return "[ " + "".join(f"{v}, " for v in values).removesuffix(", ") + " ]" if values else "[ ]"


@dataclass(frozen=True)
class TensorConfig:
    """One input or output: name, Triton type (TYPE_*), dims without batch (-1 = variable)."""

    name: str
    data_type: str
    dims: tuple[int, ...]
    # Triton's reshape: the graph's shape when it differs from dims, e.g. dims (1,) with
    # reshape () for one scalar per batch row (clients send [N, 1] or [N], the graph takes [N]).
    reshape: tuple[int, ...] | None = None
    optional: bool = False  # Triton's `optional: true`: a request may leave this input out

    def __post_init__(self) -> None:
        if self.data_type not in DATA_TYPES:
            raise ValueError(f"{self.name}: unknown data type {self.data_type}")
        if any(d < -1 or d == 0 for d in self.dims):
            raise ValueError(f"{self.name}: dims must be positive or -1, got {self.dims}")

    def render(self) -> str:
        reshape = "" if self.reshape is None else f" reshape: {{ shape: {_ints(self.reshape)} }}"
        optional = " optional: true" if self.optional else ""
        return (f"{{ name: {_quote(self.name)} data_type: {self.data_type} "
                f"dims: {_ints(self.dims)}{reshape}{optional} }}")


@dataclass(frozen=True)
class DynamicBatching:
    """Triton's dynamic_batching with a default queue policy."""

    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_microseconds: int
    max_queue_size: int
    default_timeout_microseconds: int
    timeout_action: str = "REJECT"  # or DELAY
    allow_timeout_override: bool = True

    def render(self) -> list[str]:
        return [
            "dynamic_batching {",
            f"  preferred_batch_size: {_ints(self.preferred_batch_sizes)}",
            f"  max_queue_delay_microseconds: {self.max_queue_delay_microseconds}",
            "  default_queue_policy {",
            f"    timeout_action: {self.timeout_action}",
            f"    default_timeout_microseconds: {self.default_timeout_microseconds}",
            f"    allow_timeout_override: {str(self.allow_timeout_override).lower()}",
            f"    max_queue_size: {self.max_queue_size}",
            "  }",
            "}",
        ]


@dataclass(frozen=True)
class ModelConfig:
    """The fields of Triton's ModelConfig this project uses."""

    name: str
    max_batch_size: int
    inputs: tuple[TensorConfig, ...]
    outputs: tuple[TensorConfig, ...]
    batching: DynamicBatching | None = None
    parameters: Mapping[str, str] = field(default_factory=dict)
    platform: str = "onnxruntime_onnx"

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"bad model name {self.name!r}")
        if self.batching is not None:
            too_big = [b for b in self.batching.preferred_batch_sizes if b > self.max_batch_size]
            if too_big:
                raise ValueError(f"preferred batch sizes {too_big} exceed max_batch_size")

    def render(self) -> str:
        lines = [
            f"name: {_quote(self.name)}",
            f"platform: {_quote(self.platform)}",
            f"max_batch_size: {self.max_batch_size}",
        ]
        for key, tensors in (("input", self.inputs), ("output", self.outputs)):
            lines.append(f"{key} [")
            lines.append(",\n".join("  " + t.render() for t in tensors))
            lines.append("]")
        if self.batching is not None:
            lines.extend(self.batching.render())
        for key, value in self.parameters.items():
            lines.append(f"parameters {{ key: {_quote(key)} "
                         f"value: {{ string_value: {_quote(value)} }} }}")
        return "\n".join(lines) + "\n"


def write_entry(
    root: Path, config: ModelConfig, version: int, files: Mapping[str, Path]
) -> Path:
    """Write `<root>/<name>/config.pbtxt` and copy `files` (name in the
    version folder -> source path) into `<root>/<name>/<version>/`."""
    model_dir = root / config.name
    version_dir = model_dir / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(config.render())
    for name, source in files.items():
        shutil.copyfile(source, version_dir / name)
    return version_dir
