"""The SDK's earlier import path, kept for bench/ and tests/deploy: the SDK is `tensorgate`
(`tensorgate.Client`, `tensorgate.AsyncClient`, the `tensorgate` console script).

`Client` here is `tensorgate.Client` with the earlier `generate(digits, seeds)` (any digits and
seeds in one KServe request, answering the images); everything else is the same object.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

import tensorgate
from tensorgate import InferenceError, load_digit

__all__ = ["Client", "InferenceError", "load_digit"]


class Client(tensorgate.Client):
    def generate(self, digits: int | Sequence[int], seeds: int | Sequence[int] | None = None,  # type: ignore[override]
                 model: str = "digit_gan") -> np.ndarray:
        """Digits to draw (0-9) -> images (N, 1, 28, 28); seeds default to 0, 1, 2, ..."""
        wanted = np.atleast_1d(np.asarray(digits, dtype=np.int64))
        chosen = (np.arange(len(wanted), dtype=np.int64) if seeds is None
                  else np.atleast_1d(np.asarray(seeds, dtype=np.int64)))
        return self.infer(model, {"digit": wanted, "seed": chosen})["image"]
