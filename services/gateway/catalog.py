"""The models this gateway serves: every model a live replica announces (services.queue.catalog),
read every half second, plus, when the gateway has a model repository on disk, the models in it
(unavailable until a replica serves them).

A model is known (requests are validated against its newest version's config) as long as a
replica announces it; a version a request names is served only when every ready replica serves
it, so a request never reaches a replica that has not loaded it yet.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tensorgate.errors import ModelNotFound, Unavailable
from services.grpc.backend import IndexEntry
from tensorgate.proto import model_config_pb2 as mc
from services.queue import catalog, keys
from services.queue.catalog import ModelView
from tensorgate.repository import ModelSpec, load_repository, spec_from_config

log = logging.getLogger(__name__)

REFRESH_S = 0.5  # how stale the gateway's view of the replicas may be


class Catalog:
    def __init__(self, redis: aioredis.Redis, ttl_s: float, disk: dict[str, ModelSpec] | None = None) -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        self._disk = dict(disk or {})
        self.specs: dict[str, ModelSpec] = dict(self._disk)  # name -> newest version; mutated in place
        self.views: dict[str, ModelView] = {}
        self._versions: dict[str, dict[str, ModelSpec]] = {}  # announced: name -> version -> spec
        self._parsed: dict[tuple[str, str], tuple[bytes, ModelSpec]] = {}
        self.refreshed = 0.0  # monotonic time of the last successful refresh
        self.error = ""
        self._attempted = 0.0
        self._refreshing: asyncio.Task[None] | None = None

    @classmethod
    def with_repository(cls, redis: aioredis.Redis, ttl_s: float, root: Path | None) -> Catalog:
        """A catalogue that also knows the models of a repository on disk (optional)."""
        disk: dict[str, ModelSpec] = {}
        if root is not None and str(root) and root.is_dir():
            disk = load_repository(root)
        elif root is not None and str(root):
            log.info("no model repository at %s: serving the models replicas announce", root)
        return cls(redis, ttl_s, disk)

    # -- reading the announcements ---------------------------------------------------
    async def refresh_on_miss(self) -> None:
        """Return once a read of the catalogue that began after this call has ended: a replica
        that came up since the last read is served at once, not half a second later. Requests
        that miss together share one read, and at most one such read runs at a time."""
        asked = time.monotonic()
        while True:
            running = self._refreshing
            if running is not None and not running.done():
                began_after = self._attempted >= asked
            elif self._attempted >= asked:
                return  # a read (the periodic one) began since, and has ended
            else:
                running = self._refreshing = asyncio.create_task(self.refresh())
                began_after = True
            try:
                await asyncio.shield(running)
            except (RedisError, TimeoutError):
                return
            if began_after:
                return

    async def refresh(self) -> None:
        """Read what the replicas announce (two or three round trips) and update the specs."""
        self._attempted = time.monotonic()
        try:
            views = await catalog.read_catalog(self._redis, self._ttl_s)
            pipe = self._redis.pipeline(transaction=False)
            for name, view in views.items():
                pipe.hmget(keys.configs(name), view.versions())
            configs: list[Any] = await pipe.execute() if views else []
        except (RedisError, TimeoutError) as err:
            self.error = str(err)
            raise
        versions: dict[str, dict[str, ModelSpec]] = {}
        for (name, view), raws in zip(views.items(), configs):
            for version, raw in zip(view.versions(), raws):
                spec = self._spec(name, version, raw)
                if spec is not None:
                    versions.setdefault(name, {})[version] = spec
        self.views = {name: view for name, view in views.items() if name in versions}
        self._versions = versions
        self._update_specs()
        self.refreshed = time.monotonic()
        self.error = ""

    def _spec(self, name: str, version: str, raw: bytes | None) -> ModelSpec | None:
        if not raw:
            return None
        cached = self._parsed.get((name, version))
        if cached is not None and cached[0] == raw:
            return cached[1]
        try:
            config = mc.ModelConfig.FromString(raw)
        except Exception:
            log.warning("model %s version %s: unreadable announced config; ignored", name, version)
            return None
        spec = spec_from_config(config, version, Path(name) / version)
        self._parsed[name, version] = (raw, spec)
        return spec

    def _update_specs(self) -> None:
        for name, versions in self._versions.items():
            view = self.views[name]
            ready = [v for v in versions if view.state(v).state == catalog.READY]
            newest = versions[max(ready or versions, key=catalog.version_key)]
            if self.specs.get(name) is not newest:
                if name not in self.specs:
                    log.info("model %s is served (versions %s)", name, sorted(versions))
                self.specs[name] = newest
        for name in [n for n in self.specs if n not in self._versions]:
            if name in self._disk:
                self.specs[name] = self._disk[name]
            else:
                log.info("model %s has no live replica any more", name)
                del self.specs[name]

    # -- questions --------------------------------------------------------------------
    def check_fresh(self, name: str) -> None:
        """Unavailable when the catalogue could not be read for longer than a heartbeat lives."""
        if self.error and time.monotonic() - self.refreshed > self._ttl_s:
            raise Unavailable(f"the queue of model '{name}' cannot be reached")

    def ready(self, name: str, version: str = "") -> bool:
        """A ready replica serves the model (the version, when one is named)."""
        view = self.views.get(name)
        if view is None:
            return False
        if version:
            return view.state(version).state == catalog.READY
        return any(r.ready for r in view.replicas)

    def version_spec(self, name: str, version: str) -> ModelSpec:
        spec = self._versions.get(name, {}).get(version)
        if spec is None:
            disk = self._disk.get(name)
            if disk is not None and disk.version == version:
                return disk
            known = sorted(self._versions.get(name, {})) or ([disk.version] if disk else [])
            raise ModelNotFound(f"model '{name}' has no version {version} (has {', '.join(known) or 'none'})")
        serving, ready = self.views[name].ready_on(version)
        if ready and serving < ready:
            raise Unavailable(f"version {version} of model '{name}' is served by {serving} of its {ready} "
                              "ready replicas; retry when it is loaded on all")
        return spec

    def versions(self, name: str) -> list[str]:
        versions = self._versions.get(name)
        if versions:
            return sorted(versions, key=catalog.version_key)
        spec = self.specs.get(name)
        return [spec.version] if spec else []

    def index(self) -> list[IndexEntry]:
        entries: list[IndexEntry] = []
        for name in sorted(set(self._versions) | set(self._disk)):
            view = self.views.get(name)
            if view is None:
                disk = self._disk[name]
                entries.append(IndexEntry(name, disk.version, catalog.UNAVAILABLE, "no replica is serving this model"))
                continue
            # Every announced version, those that failed to load (no config) too, with why.
            for version in view.versions():
                state = view.state(version)
                entries.append(IndexEntry(name, version, state.state, state.reason))
        return entries
