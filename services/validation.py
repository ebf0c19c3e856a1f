"""Checks a ModelInferRequest against the model's config; every message names the input at fault."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tensorgate.errors import InvalidArgument, ModelNotFound
from tensorgate.proto import grpc_service_pb2 as pb
from tensorgate.repository import ModelSpec, TensorSpec
from tensorgate.tensors import request_inputs


@dataclass(frozen=True)
class ValidRequest:
    """A request that passed validation, decoded."""

    inputs: dict[str, np.ndarray]
    rows: int  # batch size of this request (1 for models without batching)
    outputs: tuple[str, ...]  # names to return, in the model's order
    # Request parameters the model takes (e.g. the translator's beam_size), as sorted pairs so
    # that requests with equal options can share a batch.
    options: tuple[tuple[str, int], ...] = ()


# Integer request parameters a model may take: the config's `parameters` gives the default under
# the same key and the upper bound under `max_<key>`. Other request parameters are ignored, as
# Triton ignores parameters a model does not use.
INT_OPTIONS = ("beam_size",)


def config_parameters(spec: ModelSpec) -> frozenset[str]:
    """The config `parameters` this module reads for this model: the request options' defaults
    and bounds, `allow_non_finite`, `<input>_range` per numeric input and `<input>_max_bytes`,
    `_utf8` and `_nonempty` per BYTES input (each documented where it is read, below)."""
    keys = {"allow_non_finite", *INT_OPTIONS, *(f"max_{key}" for key in INT_OPTIONS)}
    for tensor in spec.inputs:
        suffixes = ("max_bytes", "utf8", "nonempty") if tensor.datatype == "BYTES" else ("range",)
        keys.update(f"{tensor.name}_{suffix}" for suffix in suffixes)
    return frozenset(keys)


def _options(spec: ModelSpec, request: pb.ModelInferRequest) -> tuple[tuple[str, int], ...]:
    options = []
    for key in INT_OPTIONS:
        if key not in request.parameters:
            continue
        if key not in spec.parameters:
            raise InvalidArgument(f"parameter '{key}': model '{spec.name}' takes no such parameter")
        param = request.parameters[key]
        kind = param.WhichOneof("parameter_choice")
        if kind not in ("int64_param", "uint64_param"):
            raise InvalidArgument(f"parameter '{key}': expected an integer, got {kind or 'nothing'}")
        value = getattr(param, kind)
        high = int(spec.parameters.get(f"max_{key}", spec.parameters[key]))
        if not 1 <= value <= high:
            raise InvalidArgument(f"parameter '{key}': {value} outside 1..{high}")
        options.append((key, int(value)))
    return tuple(options)


def _check_shape(spec: TensorSpec, shape: list[int]) -> None:
    if not spec.accepts(shape):
        also = f" or {list(spec.model_shape)}" if spec.model_shape != spec.shape else ""
        raise InvalidArgument(f"input '{spec.name}': expected shape {list(spec.shape)}{also}, got {shape}")


def value_range(spec: ModelSpec, name: str) -> tuple[float, float] | None:
    """The config parameter `<input>_range` ("0..9") bounds an input's values, inclusive: a digit
    index outside the embedding table must be the caller's INVALID_ARGUMENT, not a failed batch."""
    text = spec.parameters.get(f"{name}_range")
    if text is None:
        return None
    low, _, high = text.partition("..")
    return float(low), float(high)


def _check_ranges(spec: ModelSpec, inputs: dict[str, np.ndarray]) -> None:
    for name, array in inputs.items():
        bounds = value_range(spec, name)
        if bounds is None or array.size == 0 or array.dtype == object:
            continue
        bad = array[(array < bounds[0]) | (array > bounds[1])]
        if bad.size:
            raise InvalidArgument(f"input '{name}': values must be in {spec.parameters[f'{name}_range']}, "
                                  f"got {bad.flat[0]}")


def _check_finite(spec: ModelSpec, inputs: dict[str, np.ndarray]) -> None:
    """NaN and infinities in floating-point inputs are refused unless the config's parameter
    `allow_non_finite` is true: a NaN pixel would otherwise come back as NaN probabilities."""
    if _flag(spec, "allow_non_finite"):
        return
    for name, array in inputs.items():
        if array.dtype.kind == "f" and array.size and not np.isfinite(array).all():
            raise InvalidArgument(f"input '{name}': NaN or infinite values (the model's config does not set "
                                  "allow_non_finite)")


def _flag(spec: ModelSpec, key: str) -> bool:
    return spec.parameters.get(key, "").strip().lower() in ("true", "1", "yes")


def _check_text(spec: ModelSpec, inputs: dict[str, np.ndarray]) -> None:
    """Config parameters on a BYTES input `<input>`: `<input>_max_bytes` (N) bounds each element,
    `<input>_utf8` ("true") wants valid UTF-8, `<input>_nonempty` ("true") refuses an element that
    is empty or only whitespace. A translator given an empty sentence or broken text would
    translate something anyway (or replace the bytes); the caller should hear of it instead."""
    for name, array in inputs.items():
        if array.dtype != object:
            continue
        limit = int(spec.parameters.get(f"{name}_max_bytes", "0"))
        utf8, nonempty = _flag(spec, f"{name}_utf8"), _flag(spec, f"{name}_nonempty")
        if not (limit or utf8 or nonempty):
            continue
        for i, item in enumerate(array.reshape(-1)):
            if limit and len(item) > limit:
                raise InvalidArgument(f"input '{name}': element {i} has {len(item)} bytes, more than {limit}")
            try:
                text = item.decode("utf-8")
            except UnicodeDecodeError as err:
                if utf8:
                    raise InvalidArgument(f"input '{name}': element {i} is not valid UTF-8 "
                                          f"(byte {err.start}: {err.reason})") from None
                text = item.decode("utf-8", "replace")
            if nonempty and not text.strip():
                raise InvalidArgument(f"input '{name}': element {i} is empty")


def validate(spec: ModelSpec, request: pb.ModelInferRequest) -> ValidRequest:
    if request.model_version and request.model_version != spec.version:
        raise ModelNotFound(f"model '{spec.name}' has no version {request.model_version} (serving {spec.version})")
    def expected() -> str:  # for the messages only: not built for a valid request
        return ", ".join(f"'{t.name}' {t.datatype} {list(t.shape)}" for t in spec.inputs)

    seen: set[str] = set()
    rows: set[int] = set()
    for tensor in request.inputs:
        tspec = spec.input(tensor.name)
        if tspec is None:
            raise InvalidArgument(f"unexpected input '{tensor.name}'; model '{spec.name}' takes {expected()}")
        if tensor.datatype != tspec.datatype:
            raise InvalidArgument(f"input '{tensor.name}': expected datatype {tspec.datatype}, got {tensor.datatype or 'none'}")
        shape = list(tensor.shape)
        _check_shape(tspec, shape)
        if spec.max_batch_size > 0:
            batch = shape[0]
            if batch < 1 or batch > spec.max_batch_size:
                raise InvalidArgument(
                    f"input '{tensor.name}': batch size {batch} outside 1..{spec.max_batch_size} (max_batch_size)"
                )
            rows.add(batch)
        seen.add(tensor.name)
    missing = [t.name for t in spec.inputs if t.name not in seen and not t.optional]
    if missing:
        raise InvalidArgument(f"missing input '{missing[0]}'; model '{spec.name}' takes {expected()}")
    if not seen:
        raise InvalidArgument(f"no input given; model '{spec.name}' takes {expected()}")
    if len(rows) > 1:
        raise InvalidArgument(f"inputs disagree on the batch size: {sorted(rows)}")
    inputs = request_inputs(request)  # checks byte sizes and BYTES framing
    _check_ranges(spec, inputs)
    _check_finite(spec, inputs)
    _check_text(spec, inputs)
    for t in spec.inputs:  # the graph's own shape (config reshape), so batches concatenate
        if t.name in inputs and t.model_shape != t.shape:
            lead: tuple[int, ...] = (inputs[t.name].shape[0],) if spec.max_batch_size > 0 else ()
            inputs[t.name] = inputs[t.name].reshape(lead + t.model_shape[len(lead):])
    wanted = [o.name for o in request.outputs]
    for name in wanted:
        if spec.output(name) is None:
            known = ", ".join(f"'{o.name}'" for o in spec.outputs)
            raise InvalidArgument(f"unknown output '{name}'; model '{spec.name}' has {known}")
    outputs = tuple(o.name for o in spec.outputs if not wanted or o.name in wanted)
    return ValidRequest(inputs=inputs, rows=rows.pop() if rows else 1, outputs=outputs,
                        options=_options(spec, request))
