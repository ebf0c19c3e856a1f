"""Runners by name: the config parameter `runner` picks one (default `onnx`).

A new kind of model is one module with a `Model` or `ContinuousModel` subclass plus one line in
RUNNERS (or, without touching this file, `runner: "package.module:Class"` in the config).
Modules are imported only when a config names them, so serving an MNIST model never imports the
translator's tokenizer, and no runner imports another.
"""

from __future__ import annotations

import importlib
from typing import Any

from services.modelservice.runners.base import ContinuousModel, Model
from tensorgate.repository import ModelSpec
from services.settings import ModelServiceSettings

RUNNERS: dict[str, str] = {
    "onnx": "services.modelservice.runners.onnx:OnnxModel",
    "classifier": "services.modelservice.runners.classifier:ClassifierModel",
    "translator": "services.modelservice.runners.translator:TranslatorModel",
}


def load_model(spec: ModelSpec, settings: ModelServiceSettings) -> Model:
    runner = spec.parameters.get("runner", "onnx")
    target = RUNNERS.get(runner) or (runner if ":" in runner else None)
    if target is None:
        raise ValueError(f"model '{spec.name}': unknown runner '{runner}' (known: {', '.join(sorted(RUNNERS))})")
    module, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(module), cls_name)
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        raise ValueError(f"model '{spec.name}': runner '{runner}' is not a Model subclass")
    runner_cls: Any = cls  # every runner takes (spec, settings); Model itself declares no __init__
    model: Model = runner_cls(spec, settings)
    return model


__all__ = ["RUNNERS", "ContinuousModel", "Model", "load_model"]
