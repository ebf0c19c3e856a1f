"""tensorgate for applications: the SDK and CLI users import and run (`import tensorgate`,
the `tensorgate` console script), and the image preparation the model services share with it.

    import tensorgate
    with tensorgate.Client("localhost:8001") as client:
        labels, probabilities = client.classify(["seven.jpg"])
"""

from __future__ import annotations

from typing import Any

from tensorgate.aio import AsyncClient
from tensorgate.client import Client
from tensorgate.results import Classified, Generated, InferenceError, ModelState, Translation

__version__ = "0.1.0"

__all__ = ["AsyncClient", "Classified", "Client", "Generated", "InferenceError", "ModelState", "Translation",
           "load_digit"]


def __getattr__(name: str) -> Any:
    # The image preparation pulls in Pillow and numpy work the clients do not need: loaded on first use.
    if name == "load_digit":
        from tensorgate.digits import load_digit

        return load_digit
    raise AttributeError(f"module 'tensorgate' has no attribute {name!r}")
