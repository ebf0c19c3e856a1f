"""The MNIST classifiers' runner: the ONNX graph, plus encoded images prepared on the server.

A request gives either `image` (FP32 [N, 1, 28, 28], already MNIST-style) or `image_bytes`
(BYTES [N]: PNG, JPEG, BMP, GIF or WebP files). `prepare` turns the files into `image` with
tensorgate.digits, the function the SDK's `load_digit` uses too, in the worker's executor
thread and per request: a bad file fails its own request with INVALID_ARGUMENT naming the
problem, and its batch-mates are run as usual.
"""

from __future__ import annotations

import numpy as np

from tensorgate.errors import InvalidArgument
from services.modelservice.runners.onnx import OnnxModel
from tensorgate.repository import ModelSpec
from services.settings import ModelServiceSettings
from tensorgate.digits import DigitImageError, Limits, prepare_digit

IMAGE, IMAGE_BYTES = "image", "image_bytes"


class ClassifierModel(OnnxModel):
    consumed_inputs = frozenset({IMAGE_BYTES})

    def __init__(self, spec: ModelSpec, settings: ModelServiceSettings) -> None:
        super().__init__(spec, settings)
        self.limits = Limits(max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)

    def prepare(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        encoded = inputs.get(IMAGE_BYTES)
        if encoded is None:
            if IMAGE not in inputs:
                raise InvalidArgument(f"give one of the inputs '{IMAGE}' (pixels) or '{IMAGE_BYTES}' (image files)")
            return inputs
        if IMAGE in inputs:
            raise InvalidArgument(f"inputs '{IMAGE}' and '{IMAGE_BYTES}' exclude each other: give one or the other")
        images = []
        for i, data in enumerate(encoded.reshape(-1)):
            try:
                images.append(prepare_digit(bytes(data), self.limits))  # (1, 28, 28)
            except DigitImageError as err:
                raise InvalidArgument(f"input '{IMAGE_BYTES}': element {i}: {err}") from None
        return {IMAGE: np.stack(images)}  # (N, 1, 28, 28) float32
