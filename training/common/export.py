"""ONNX export with a dynamic batch axis, structural check, and parity check.

The served model must compute what the trained one computes: after export
the file is checked with `onnx.checker`, then ONNX Runtime and PyTorch run
the same inputs at a batch size that differs from the export example (so a
batch size baked into the graph would show) and the largest absolute
difference is returned.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

DEFAULT_OPSET = 18


class WithSoftmax(nn.Module):
    """Puts the softmax inside the exported graph: logits (B, C) -> probabilities (B, C)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=-1)


def export_onnx(
    model: nn.Module,
    examples: Sequence[torch.Tensor],
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Export `model` (eval mode, CPU) with axis 0 of every input and output
    dynamic; weights are kept inside the one .onnx file."""
    if opset < 17:
        raise ValueError("opset must be >= 17")
    model = model.eval().cpu()
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    # The exporter logs one line per torchvision op it cannot register; we
    # never use torchvision, so keep that out of the job's output.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        # Raised inside torch.export's own pytree handling (torch 2.13), not
        # by anything we pass; harmless and not ours to fix.
        warnings.filterwarnings(
            "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
            category=FutureWarning,
        )
        # With several inputs the shared "batch" axis is renamed once; the
        # exporter then notes that the other inputs already carry that name.
        warnings.filterwarnings(
            "ignore", message=r"# The axis name: batch will not be used, since it shares",
            category=UserWarning,
        )
        program = torch.onnx.export(
            model,
            tuple(examples),
            dynamo=True,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_shapes=tuple({0: batch} for _ in examples),
            opset_version=opset,
            external_data=False,
            verbose=False,
        )
    if program is None:  # only the legacy exporter returns None
        raise RuntimeError("torch.onnx.export returned no program")
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path), external_data=False)
    return path


def check_onnx(path: Path) -> onnx.ModelProto:
    """Full `onnx.checker` pass (with shape inference) on a self-contained file."""
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise ValueError(f"{path}: initializer {tensor.name} is stored outside the file")
    onnx.checker.check_model(model, full_check=True)
    return model


def parity(
    model: nn.Module,
    path: Path,
    inputs: Mapping[str, torch.Tensor],
    batch_size: int,
) -> float:
    """Max |torch - onnxruntime| over all outputs, feeding `inputs` (same N
    rows each, in the model's argument order) in batches of `batch_size`."""
    model = model.eval().cpu()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    n = len(next(iter(inputs.values())))
    worst = 0.0
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            batch = {k: v[start:start + batch_size].cpu() for k, v in inputs.items()}
            expected = model(*batch.values())
            if isinstance(expected, torch.Tensor):
                expected = (expected,)
            got = session.run(None, {k: v.numpy() for k, v in batch.items()})
            for want, have in zip(expected, got, strict=True):
                if tuple(want.shape) != have.shape:
                    raise AssertionError(f"shape {have.shape} != torch {tuple(want.shape)}")
                worst = max(worst, float(np.max(np.abs(want.numpy() - have), initial=0.0)))
    return worst


def export_and_verify(
    model: nn.Module,
    path: Path,
    inputs: Mapping[str, torch.Tensor],
    output_names: Sequence[str],
    batch_size: int,
    example_batch: int = 2,
    tolerance: float = 1e-5,
    opset: int = DEFAULT_OPSET,
) -> float:
    """Export, check and compare; raise when the parity exceeds `tolerance`.

    The export example is the first `example_batch` rows of each input, and
    `batch_size` must differ from it.
    """
    if batch_size == example_batch:
        raise ValueError("parity batch size must differ from the export example's")
    examples = [v[:example_batch].cpu() for v in inputs.values()]
    export_onnx(model, examples, path, list(inputs), output_names, opset)
    check_onnx(path)
    diff = parity(model, path, inputs, batch_size)
    if not diff <= tolerance:
        raise AssertionError(f"ONNX parity {diff:.3g} exceeds {tolerance:.3g}")
    return diff
