"""Checkpoints that rebuild their model without guessing (nanoGPT style).

A checkpoint holds the weights, the model's own constructor arguments, the
class that takes them, the run's config and the epoch's metrics. Everything
but the weights is plain data, so `torch.load(weights_only=True)` reads it.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn


@dataclass(frozen=True)
class Checkpoint:
    """One saved epoch."""

    model_class: str  # "package.module:QualName"
    model_args: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any]
    metrics: dict[str, Any]
    epoch: int
    optimizer: dict[str, Any] | None = None  # the optimizer's state_dict, for --resume


def class_path(cls: type) -> str:
    """Importable "module:QualName" of a class, also when the job runs as
    `python -m package.module` (its module is then `__main__`)."""
    module = cls.__module__
    if module == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        if spec is None:
            raise ValueError(f"{cls.__qualname__} lives in a script run by path; "
                             "run the job with python -m so its class can be imported")
        module = spec.name
    return f"{module}:{cls.__qualname__}"


def save_checkpoint(
    path: Path,
    model: nn.Module,
    model_args: Mapping[str, Any],
    config: Mapping[str, Any],
    metrics: Mapping[str, Any],
    epoch: int,
    optimizer: torch.optim.Optimizer | None = None,
) -> Path:
    """Write atomically, so a crash never leaves a half-written checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model_class": class_path(type(model)),
        "model_args": dict(model_args),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": dict(config),
        "metrics": dict(metrics),
        "epoch": epoch,
    }
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: Path) -> Checkpoint:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    return Checkpoint(**payload)


def build_model(checkpoint: Checkpoint, cls: type[nn.Module] | None = None) -> nn.Module:
    """Construct the model from its saved arguments and load the weights.

    `cls` defaults to the class recorded in the checkpoint; the model is
    returned on the CPU in eval mode.
    """
    if cls is None:
        module_name, _, qualname = checkpoint.model_class.partition(":")
        found: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
        if not (isinstance(found, type) and issubclass(found, nn.Module)):
            raise TypeError(f"{checkpoint.model_class} is not an nn.Module class")
        cls = found
    model = cls(**checkpoint.model_args)
    model.load_state_dict(checkpoint.state_dict)
    return model.eval()
