"""Runners that fail on purpose, named by test configs (`runner: "tests.faults:..."`): the fault
injection the integration tests need, on top of the real ONNX runner."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np

from tensorgate.errors import InvalidArgument
from services.modelservice.runners.onnx import OnnxModel


class PoisonOnNegative(OnnxModel):
    """The model call fails whenever its batch holds a negative pixel (a poison request); a
    request whose pixels are all exactly 2.0 is refused by `prepare`, as a bad image would be."""

    def prepare(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if np.all(inputs["image"] == 2.0):
            raise InvalidArgument("input 'image': refused by prepare (test)")
        return inputs

    def run(self, inputs: dict[str, np.ndarray], outputs: Sequence[str],
            options: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
        if (inputs["image"] < 0).any():
            raise RuntimeError("poisoned batch (test)")
        return super().run(inputs, outputs, options)


class SlowModel(OnnxModel):
    """Every model call takes at least the config parameter `slow_ms` (a slow or overloaded model)."""

    PARAMETERS = OnnxModel.PARAMETERS | {"slow_ms"}

    def run(self, inputs: dict[str, np.ndarray], outputs: Sequence[str],
            options: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
        time.sleep(float(self.spec.parameters.get("slow_ms", "300")) / 1000)
        return super().run(inputs, outputs, options)
