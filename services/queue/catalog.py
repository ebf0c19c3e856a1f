"""The live catalogue: what each replica serves, announced with its heartbeat, read by gateways.

A replica's heartbeat writes, in one pipeline (services.queue.streams.RequestConsumer.heartbeat):
- `models`: model name -> time (the set of models with a live replica),
- `serving:<model>`: its consumer name -> JSON of its versions and their states,
- `config:<model>`: version -> the serialized ModelConfig it loaded.
A gateway reads the catalogue every half second in one round trip (plus one per config it has
not seen), so a model service started after the gateway is served without a restart.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from services.queue import keys

READY = "READY"
LOADING = "LOADING"
UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True)
class VersionState:
    """One version on one replica: READY, LOADING or UNAVAILABLE, and why when not ready."""

    state: str
    reason: str = ""


@dataclass(frozen=True)
class Announcement:
    """What one replica serves. `configs` holds the serialized ModelConfig of each version it
    has (or is loading)."""

    versions: Mapping[str, VersionState]
    configs: Mapping[str, bytes] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({v: [s.state, s.reason] for v, s in self.versions.items()}, sort_keys=True)

    @staticmethod
    def versions_from_json(text: bytes | str) -> dict[str, VersionState]:
        try:
            raw = json.loads(text)
            return {str(v): VersionState(str(s[0]), str(s[1])) for v, s in raw.items()}
        except (ValueError, TypeError, IndexError, AttributeError):
            return {}


@dataclass(frozen=True)
class ReplicaView:
    consumer: str
    ready: bool  # takes new work (in replicas:<model>), not draining
    versions: Mapping[str, VersionState]


@dataclass(frozen=True)
class ModelView:
    """One model as the gateways see it: its live replicas and what each serves."""

    name: str
    replicas: tuple[ReplicaView, ...]

    def versions(self) -> list[str]:
        """Every version any live replica announces, lowest first."""
        return sorted({v for r in self.replicas for v in r.versions}, key=version_key)

    def ready_on(self, version: str) -> tuple[int, int]:
        """(ready replicas serving `version` READY, ready replicas in all)."""
        ready = [r for r in self.replicas if r.ready]
        serving = [r for r in ready if r.versions.get(version, VersionState(UNAVAILABLE)).state == READY]
        return len(serving), len(ready)

    def state(self, version: str) -> VersionState:
        """The version's state across replicas: READY if a ready replica serves it, else LOADING if
        one is loading it, else UNAVAILABLE with the replicas' reason."""
        states = [r.versions[version] for r in self.replicas if version in r.versions]
        serving = [r.versions[version] for r in self.replicas
                   if r.ready and version in r.versions and r.versions[version].state == READY]
        if serving:  # a reason here says what a replica kept (its previous config, a reload having failed)
            return VersionState(READY, "; ".join(sorted({s.reason for s in serving if s.reason})))
        if any(s.state == LOADING for s in states):
            return VersionState(LOADING, "loading on a replica")
        if any(s.state == READY for s in states):
            return VersionState(UNAVAILABLE, "its replicas are draining")
        reasons = sorted({s.reason for s in states if s.reason})
        return VersionState(UNAVAILABLE, "; ".join(reasons) or "no replica is serving this version")


def version_key(version: str) -> tuple[int, str]:
    """Versions in number order (a name that is not a number, which Triton's layout never has, first)."""
    return (int(version), "") if version.isdigit() else (0, version)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def read_catalog(redis: aioredis.Redis, ttl_s: float) -> dict[str, ModelView]:
    """Every model with a replica that heartbeat within ttl_s: two round trips."""
    since = time.time() - ttl_s
    names = [_text(n) for n in await redis.zrangebyscore(keys.MODELS, since, "+inf")]
    if not names:
        return {}
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(keys.serving(name))
        pipe.zrangebyscore(keys.alive(name), since, "+inf")
        pipe.zrangebyscore(keys.replicas(name), since, "+inf")
    results: list[Any] = await pipe.execute()
    views: dict[str, ModelView] = {}
    for i, name in enumerate(names):
        serving, alive, ready = results[3 * i], results[3 * i + 1], results[3 * i + 2]
        alive_names = {_text(n) for n in alive}
        ready_names = {_text(n) for n in ready}
        replicas = tuple(
            ReplicaView(_text(consumer), _text(consumer) in ready_names, Announcement.versions_from_json(text))
            for consumer, text in sorted(serving.items()) if _text(consumer) in alive_names
        )
        if replicas:
            views[name] = ModelView(name, replicas)
    return views


async def read_configs(redis: aioredis.Redis, model: str, versions: list[str]) -> dict[str, bytes]:
    """The announced ModelConfig of each version (absent ones left out)."""
    values: list[Any] = await redis.hmget(keys.configs(model), versions)
    return {v: raw for v, raw in zip(versions, values) if raw}
