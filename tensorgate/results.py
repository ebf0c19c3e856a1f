"""What the SDK's calls answer, and the one error they raise."""

from __future__ import annotations

from typing import NamedTuple

import grpc
import numpy as np


class InferenceError(Exception):
    """A call the server refused or could not answer; `code` is the gRPC status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


class Classified(NamedTuple):
    """The answer of one classify call; unpacks as `labels, probabilities = client.classify(...)`."""

    labels: np.ndarray  # (N,) int64: the most likely digit of each image
    probabilities: np.ndarray  # (N, 10) float32, by digit

    @property
    def probability(self) -> np.ndarray:
        """(N,) the probability of each image's label."""
        return self.probabilities[np.arange(len(self.labels)), self.labels]


class Translation(NamedTuple):
    text: str  # English
    score: float  # length-normalised log-probability


class Generated(NamedTuple):
    images: np.ndarray  # (N, 1, 28, 28) float32 in 0..1, white digit on black
    seeds: np.ndarray  # (N,) int64: the seed of each image
    png: bytes  # the images in a grid, 8 per row: a grayscale PNG file


class ModelState(NamedTuple):
    name: str
    version: str
    state: str  # READY or UNAVAILABLE
