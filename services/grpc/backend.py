"""What a KServe servicer needs from the process behind it.

The gateway's backend queues work on Redis; a model service's backend runs the model
in-process. The servicer itself knows neither.
"""

from __future__ import annotations

from typing import Protocol

from services.grpc.handlers import InferCall
from services.repository import ModelSpec
from services.validation import ValidRequest


class Backend(Protocol):
    specs: dict[str, ModelSpec]

    async def server_ready(self) -> bool: ...

    async def model_ready(self, spec: ModelSpec) -> bool: ...

    async def infer(self, spec: ModelSpec, call: InferCall, valid: ValidRequest, deadline: float) -> bytes:
        """Run one validated request; `deadline` is absolute unix time. Returns the serialised
        ModelInferResponse (its `id` the request's). Raises TensorgateError."""
        ...

    async def statistics(self, spec: ModelSpec) -> dict[str, int]:
        """Counters behind ModelStatistics (see services.grpc.statistics)."""
        ...
