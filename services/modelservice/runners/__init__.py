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
from services.validation import config_parameters

RUNNERS: dict[str, str] = {
    "onnx": "services.modelservice.runners.onnx:OnnxModel",
    "classifier": "services.modelservice.runners.classifier:ClassifierModel",
    "translator": "services.modelservice.runners.translator:TranslatorModel",
}


def runner_class(spec: ModelSpec) -> type[Model]:
    """The runner class the config's `runner` names (its module imported now)."""
    runner = spec.parameters.get("runner", "onnx")
    target = RUNNERS.get(runner) or (runner if ":" in runner else None)
    if target is None:
        raise ValueError(f"model '{spec.name}': unknown runner '{runner}' (known: {', '.join(sorted(RUNNERS))})")
    module, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(module), cls_name)
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        raise ValueError(f"model '{spec.name}': runner '{runner}' is not a Model subclass")
    return cls


def _known_parameters(spec: ModelSpec, cls: type[Model]) -> frozenset[str]:
    return cls.PARAMETERS | config_parameters(spec)


def unknown_parameters(spec: ModelSpec) -> list[str]:
    """Config `parameters` that neither the model's runner nor request validation reads."""
    return sorted(set(spec.parameters) - _known_parameters(spec, runner_class(spec)))


def check_parameters(spec: ModelSpec, cls: type[Model] | None = None) -> None:
    """ValueError naming every config parameter that neither the runner (`cls`, else the one the
    config names) nor request validation reads, and the ones they do (a typo would otherwise be
    a setting silently ignored)."""
    known = _known_parameters(spec, cls or runner_class(spec))
    unknown = sorted(set(spec.parameters) - known)
    if unknown:
        raise ValueError(f"model '{spec.name}': config parameter(s) {', '.join(unknown)} not read by runner "
                         f"'{spec.parameters.get('runner', 'onnx')}' or by request validation "
                         f"(known: {', '.join(sorted(known))})")


def load_model(spec: ModelSpec, settings: ModelServiceSettings) -> Model:
    """The config's runner, built for this version; ValueError for a config it cannot serve."""
    cls = runner_class(spec)
    check_parameters(spec, cls)
    runner_cls: Any = cls  # every runner takes (spec, settings); Model itself declares no __init__
    model: Model = runner_cls(spec, settings)
    return model


__all__ = ["RUNNERS", "ContinuousModel", "Model", "check_parameters", "load_model", "runner_class",
           "unknown_parameters"]
