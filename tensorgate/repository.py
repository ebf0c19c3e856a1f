"""The model repository in Triton's layout: `<repo>/<name>/config.pbtxt` + `<repo>/<name>/<version>/`.

`config.pbtxt` is protobuf text of `inference.ModelConfig`, so the same folder is valid for
Triton, and the ModelConfig RPC returns exactly what is on disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format

from tensorgate.errors import ModelNotFound
from tensorgate.proto import model_config_pb2 as mc

CONFIG_FILE = "config.pbtxt"


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: KServe datatype and the full shape including the batch dim (-1 = any).

    `model_shape` is the shape the graph sees: the same as `shape` unless the config has a
    Triton `reshape` (e.g. dims [1] reshaped to [] for one scalar per batch row: a client may
    send [N, 1] or [N], the graph gets [N])."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    model_shape: tuple[int, ...] = ()
    optional: bool = False  # Triton's `optional: true`: a request may leave it out

    def __post_init__(self) -> None:
        if not self.model_shape:
            object.__setattr__(self, "model_shape", self.shape)

    def accepts(self, shape: list[int] | tuple[int, ...]) -> bool:
        def fits(expected: tuple[int, ...]) -> bool:
            return len(shape) == len(expected) and all(e == -1 or e == s for e, s in zip(expected, shape))

        return fits(self.shape) or fits(self.model_shape)


@dataclass(frozen=True)
class ModelSpec:
    """What the servers need to know of one model, derived once from its config."""

    name: str
    version: str
    path: Path  # the version folder
    config: mc.ModelConfig
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int
    max_queue_delay_s: float
    preferred_batch_sizes: tuple[int, ...]
    max_queue_size: int  # 0 = unbounded
    default_timeout_s: float  # 0 = none set
    allow_timeout_override: bool
    parameters: dict[str, str] = field(default_factory=dict)
    instance_count: int = 1  # parallel model instances (Triton's instance_group counts, summed)

    def input(self, name: str) -> TensorSpec | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((t for t in self.outputs if t.name == name), None)

    @property
    def model_file(self) -> Path:
        return self.path / (self.config.default_model_filename or "model.onnx")


def datatype_name(data_type: int) -> str:
    """TYPE_FP32 -> FP32 (KServe names drop the prefix; TYPE_STRING is BYTES)."""
    name = mc.DataType.Name(data_type).removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


def parse_config(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


def _tensor_specs(tensors: list, batched: bool) -> tuple[TensorSpec, ...]:
    prefix = (-1,) if batched else ()
    return tuple(
        TensorSpec(t.name, datatype_name(t.data_type), prefix + tuple(t.dims),
                   prefix + tuple(t.reshape.shape) if t.HasField("reshape") else prefix + tuple(t.dims),
                   optional=bool(getattr(t, "optional", False)))
        for t in tensors
    )


def versions_of(model_dir: Path) -> list[str]:
    """Numeric version folders, lowest first."""
    return sorted((p.name for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=int)


def select_versions(config: mc.ModelConfig, available: list[str]) -> list[str]:
    """The version folders a replica serves, by the config's `version_policy` (Triton's
    semantics: `latest { num_versions }`, default 1; `all`; `specific { versions }`), lowest first."""
    ordered = sorted(available, key=int)
    policy = config.version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return ordered
    if which == "specific":
        wanted = {str(v) for v in policy.specific.versions}
        return [v for v in ordered if v in wanted]
    newest = policy.latest.num_versions if which == "latest" and policy.latest.num_versions else 1
    return ordered[-newest:]


def read_config(model_dir: Path) -> mc.ModelConfig:
    config_path = model_dir / CONFIG_FILE
    if not config_path.is_file():
        raise ModelNotFound(f"no {CONFIG_FILE} in {model_dir}")
    config = parse_config(config_path.read_text())
    if not config.name:
        config.name = model_dir.name
    return config


def spec_from_config(config: mc.ModelConfig, version: str, path: Path) -> ModelSpec:
    """The ModelSpec of one version: from a repository on disk, or from a config a replica announced
    (then `path` means nothing to the reader)."""
    batching = config.dynamic_batching
    policy = batching.default_queue_policy
    return ModelSpec(
        name=config.name,
        version=version,
        path=path,
        config=config,
        inputs=_tensor_specs(list(config.input), config.max_batch_size > 0),
        outputs=_tensor_specs(list(config.output), config.max_batch_size > 0),
        max_batch_size=config.max_batch_size,
        max_queue_delay_s=batching.max_queue_delay_microseconds / 1e6,
        preferred_batch_sizes=tuple(sorted(batching.preferred_batch_size)),
        max_queue_size=policy.max_queue_size,
        default_timeout_s=policy.default_timeout_microseconds / 1e6,
        allow_timeout_override=policy.allow_timeout_override or not policy.default_timeout_microseconds,
        parameters={k: v.string_value for k, v in config.parameters.items()},
        instance_count=max(1, sum(g.count or 1 for g in config.instance_group)),
    )


def load_specs(model_dir: Path, version: str = "") -> dict[str, ModelSpec]:
    """Every version a replica serves, by version: `version` alone when given (a pinned replica),
    else those the config's version_policy selects. Raises ModelNotFound when there is none."""
    config = read_config(model_dir)
    versions = versions_of(model_dir)
    if version and version not in versions:
        raise ModelNotFound(f"model '{config.name}' has no version {version} (has {versions})")
    if not versions:
        raise ModelNotFound(f"model '{config.name}' has no version folder in {model_dir}")
    chosen = [version] if version else select_versions(config, versions)
    if not chosen:
        raise ModelNotFound(f"model '{config.name}': its version_policy selects none of the versions {versions}")
    return {v: spec_from_config(config, v, model_dir / v) for v in chosen}


def load_spec(model_dir: Path, version: str = "") -> ModelSpec:
    """Read one model's config.pbtxt and pick one version folder (the newest its policy serves by default)."""
    specs = load_specs(model_dir, version)
    return specs[max(specs, key=int)]


def load_repository(root: Path) -> dict[str, ModelSpec]:
    """Every model folder with a config.pbtxt, by model name."""
    if not root.is_dir():
        raise FileNotFoundError(f"model repository {root} does not exist")
    specs = [load_spec(d) for d in sorted(root.iterdir()) if (d / CONFIG_FILE).is_file()]
    return {spec.name: spec for spec in specs}
