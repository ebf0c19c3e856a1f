"""ONNX export, checker and parity on small models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from training.common.export import WithSoftmax, check_onnx, export_and_verify, parity


class TwoInputs(nn.Module):
    """(B, 3) and (B, 3) -> (B, 2): checks several named, batched inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(6, 2)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.cat([a, b], dim=1))


def test_two_inputs_dynamic_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    inputs = {"a": torch.rand(10, 3), "b": torch.rand(10, 3)}
    path = tmp_path / "m.onnx"
    diff = export_and_verify(TwoInputs(), path, inputs, ["y"], batch_size=4)
    assert diff <= 1e-6  # batches of 4, 4, 2 after an example of 2
    proto = check_onnx(path)
    assert [i.name for i in proto.graph.input] == ["a", "b"]
    assert [o.name for o in proto.graph.output] == ["y"]
    assert all(i.type.tensor_type.shape.dim[0].dim_param for i in proto.graph.input)


def test_softmax_head_and_tolerance(tmp_path: Path) -> None:
    model = WithSoftmax(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)))
    x = torch.rand(6, 1, 2, 2)
    path = tmp_path / "s.onnx"
    export_and_verify(model, path, {"x": x}, ["p"], batch_size=3)
    # A different model against the same file is caught.
    other = WithSoftmax(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)))
    assert parity(other, path, {"x": x}, batch_size=3) > 1e-3
    with pytest.raises(ValueError, match="differ"):
        export_and_verify(model, path, {"x": x}, ["p"], batch_size=2)
