"""Checkpoints rebuild their model from what they store."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from training.common.checkpoint import build_model, class_path, load_checkpoint, save_checkpoint


class Tiny(nn.Module):
    def __init__(self, width: int, bias: bool = True) -> None:
        super().__init__()
        self.linear = nn.Linear(4, width, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def test_round_trip_rebuilds_without_the_caller_naming_the_class(tmp_path: Path) -> None:
    model = Tiny(3, bias=False)
    path = save_checkpoint(tmp_path / "c" / "epoch_001.pt", model, {"width": 3, "bias": False},
                           {"lr": 0.1, "name": "x"}, {"val_accuracy": 0.5}, epoch=1)
    assert not list(tmp_path.glob("c/*.tmp"))
    checkpoint = load_checkpoint(path)
    assert checkpoint.model_class == f"{__name__}:Tiny"
    assert checkpoint.config == {"lr": 0.1, "name": "x"} and checkpoint.epoch == 1
    rebuilt = build_model(checkpoint)
    assert isinstance(rebuilt, Tiny) and not rebuilt.training and rebuilt.linear.bias is None
    x = torch.rand(2, 4)
    torch.testing.assert_close(rebuilt(x), model(x))


def test_explicit_class_and_non_module_refused(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "c.pt", Tiny(2), {"width": 2}, {}, {}, epoch=0)
    assert isinstance(build_model(load_checkpoint(path), Tiny), Tiny)
    bogus = load_checkpoint(path)
    object.__setattr__(bogus, "model_class", "pathlib:Path")
    with pytest.raises(TypeError):
        build_model(bogus)


def test_class_path_of_a_module_run_with_dash_m(monkeypatch: pytest.MonkeyPatch) -> None:
    class Job(nn.Module):
        pass

    Job.__module__ = "__main__"
    Job.__qualname__ = "Job"
    spec = type("Spec", (), {"name": "training.some_job"})()
    import sys

    monkeypatch.setattr(sys.modules["__main__"], "__spec__", spec, raising=False)
    assert class_path(Job) == "training.some_job:Job"
