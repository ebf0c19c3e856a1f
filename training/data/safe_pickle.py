"""A pickle reader that can rebuild numpy arrays and nothing else.

Plain `pickle.load` runs whatever callables the file names; a downloaded
pickle is untrusted input. This Unpickler resolves only the three globals a
pickled ndarray needs and refuses every other name.
"""

from __future__ import annotations

import importlib
import io
import pickle
from typing import Any, BinaryIO

import numpy as np


def _reconstruct() -> Any:
    # numpy 2 moved the module to numpy._core; importing numpy.core there
    # warns, so try the new home first.
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return importlib.import_module(module)._reconstruct
        except ImportError:
            continue
    raise ImportError("numpy has no multiarray._reconstruct")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler whose `find_class` allows only ndarray reconstruction."""

    def find_class(self, module: str, name: str) -> Any:
        resolve = _ALLOWED.get((module, name))
        if resolve is None:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return resolve()


def load_numpy_pickle(stream: BinaryIO) -> Any:
    """Unpickle a Python 2 era numpy pickle (bytes decoded as latin1)."""
    return NumpyOnlyUnpickler(stream, encoding="latin1").load()


def loads_numpy_pickle(data: bytes) -> Any:
    """`load_numpy_pickle` on bytes held in memory."""
    return load_numpy_pickle(io.BytesIO(data))
