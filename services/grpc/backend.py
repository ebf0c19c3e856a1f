"""What a KServe servicer needs from the process behind it.

The gateway's backend queues work on Redis and serves the live catalogue its replicas announce;
a model service's backend runs the versions it loaded in-process. The servicer itself knows
neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from services.grpc.handlers import InferCall
from tensorgate.repository import ModelSpec
from services.validation import ValidRequest


@dataclass(frozen=True)
class IndexEntry:
    """One model version in RepositoryIndex: READY, LOADING or UNAVAILABLE, and why."""

    name: str
    version: str
    state: str
    reason: str = ""


class Backend(Protocol):
    # The newest served version of each model, by name. Updated in place as models come and go,
    # so holders of the mapping (the typed API) see the live set.
    specs: dict[str, ModelSpec]

    def version_spec(self, name: str, version: str) -> ModelSpec:
        """The spec of a version a request names; raises ModelNotFound, or Unavailable when it
        exists but cannot be served now."""
        ...

    def versions(self, name: str) -> list[str]:
        """Versions of a model to report (statistics), lowest first."""
        ...

    async def server_ready(self) -> bool: ...

    async def model_ready(self, spec: ModelSpec) -> bool: ...

    async def infer(self, spec: ModelSpec, call: InferCall, valid: ValidRequest, deadline: float) -> bytes:
        """Run one validated request; `deadline` is absolute unix time. Returns the serialised
        ModelInferResponse (its `id` the request's). Raises TensorgateError."""
        ...

    async def statistics(self, name: str, version: str) -> dict[str, int]:
        """Counters behind ModelStatistics of one version (see services.grpc.statistics)."""
        ...

    async def index(self) -> list[IndexEntry]:
        """Every model version known, with its state."""
        ...

    async def load(self, name: str) -> None:
        """RepositoryModelLoad: serve what the repository says now. Raises TensorgateError."""
        ...

    async def unload(self, name: str) -> None:
        """RepositoryModelUnload. Raises TensorgateError."""
        ...
