"""The versions one replica serves: loaded, switched and retired while it keeps serving.

Which version folders are served is the config's `version_policy` (tensorgate.repository), or the
one version pinned in the settings. A new version (a folder dropped into the repository and seen
by the poll, or a RepositoryModelLoad) is loaded and warmed in the background while the old one
serves; then the set is swapped in one assignment, so every request that starts later sees the
new one, and the old version is closed only once the batches already running on it are done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tensorgate.errors import ModelNotFound, Unavailable
from services.modelservice.batching import BatchPolicy
from services.modelservice.runners import Model, load_model
from services.queue.catalog import LOADING, READY, UNAVAILABLE, Announcement, VersionState
from tensorgate.repository import CONFIG_FILE, ModelSpec, load_specs, select_versions, spec_from_config, versions_of
from services.settings import ModelServiceSettings

log = logging.getLogger(__name__)

RETIRE_POLL_S = 0.01
RETIRE_MAX_WAIT_S = 120.0


@dataclass(eq=False)
class LoadedVersion:
    """One version ready to run: its spec, its runner, and the threads its batches run on."""

    spec: ModelSpec
    model: Model
    executor: ThreadPoolExecutor
    running: int = 0  # requests admitted onto it and not yet answered (and direct calls in flight)
    config_bytes: bytes = field(default=b"", repr=False)
    policy: BatchPolicy = field(init=False)
    # Recent cost of a batch per row (run_batch's wall time / rows, smoothed; 0 until the first
    # batch): what says whether the next batch is cheap enough to run on the event loop.
    row_cost_ns: float = 0.0

    def __post_init__(self) -> None:
        self.policy = BatchPolicy.from_spec(self.spec)

    @property
    def version(self) -> str:
        return self.spec.version

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self.model.close()


def build(spec: ModelSpec, settings: ModelServiceSettings) -> LoadedVersion:
    """Load one version's runner (not yet warmed). One thread per model instance: ONNX Runtime
    parallelises inside a call, and up to `instance_count` batches run at once."""
    model = load_model(spec, settings)
    executor = ThreadPoolExecutor(max_workers=spec.instance_count, thread_name_prefix=f"ort-{spec.name}-v{spec.version}")
    return LoadedVersion(spec, model, executor, config_bytes=spec.config.SerializeToString())


def _disk_signature(model_dir: Path) -> tuple[object, ...]:
    """What the poll compares: the config's text and each version folder's files and mtimes."""
    try:
        config = (model_dir / CONFIG_FILE).read_bytes()
        folders = sorted(p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
        files = tuple((f.relative_to(model_dir).as_posix(), f.stat().st_mtime_ns, f.stat().st_size)
                      for d in folders for f in sorted(d.rglob("*")) if f.is_file())
    except OSError:
        return ()
    return config, files


class ModelVersions:
    def __init__(self, settings: ModelServiceSettings) -> None:
        self.settings = settings
        self.name = settings.name
        self.model_dir = Path(settings.model_repository) / settings.name
        self.current: dict[str, LoadedVersion] = {}  # swapped whole, never mutated
        self.states: dict[str, VersionState] = {}  # versions loading, or that failed to load
        self.accepting = True  # False while unloaded or unloading: the replica takes no new work
        self.available = asyncio.Event()  # set while some version is loaded
        self._lock = asyncio.Lock()
        self._signature: tuple[object, ...] = ()
        self._retiring: set[asyncio.Task[None]] = set()
        self.listeners: list[Callable[[], None]] = []  # called after every swap of the served set

    # -- what is served -------------------------------------------------------------
    @property
    def default(self) -> LoadedVersion | None:
        """The version a request that names none gets: the newest loaded."""
        current = self.current
        return current[max(current, key=int)] if current else None

    def get(self, version: str = "") -> LoadedVersion:
        current = self.current
        if not current:
            raise Unavailable(f"model '{self.name}' is not loaded on this replica")
        loaded = current.get(version) if version else self.default
        if loaded is None:
            state = self.states.get(version)
            if state is not None and state.state == LOADING:
                raise Unavailable(f"version {version} of model '{self.name}' is still loading on this replica")
            raise ModelNotFound(f"model '{self.name}' has no version {version} (serving {sorted(current, key=int)})")
        return loaded

    def announcement(self) -> Announcement:
        current = self.current
        state = VersionState(READY) if self.accepting else VersionState(UNAVAILABLE, "unloading")
        versions = {v: state for v in current}
        for v, other in self.states.items():
            if v in versions and other.state == UNAVAILABLE and state.state == READY:
                # It serves, on the config it loaded with: a reload of a new config failed.
                versions[v] = VersionState(READY, f"serving its previous config; the new one {other.reason}")
            versions.setdefault(v, other)
        return Announcement(versions, {v: lv.config_bytes for v, lv in current.items()})

    # -- loading ----------------------------------------------------------------------
    def load_initial(self) -> None:
        """At start, before serving: load (not warm) what the repository and policy say; raises
        when that fails, so a replica that cannot serve exits instead of pretending."""
        self._signature = _disk_signature(self.model_dir)
        specs = load_specs(self.model_dir, self.settings.version)
        self.current = {v: build(spec, self.settings) for v, spec in specs.items()}
        self.available.set()

    def warmup(self) -> None:
        for lv in self.current.values():
            lv.model.warmup()

    async def sync(self) -> list[str]:
        """Serve what the repository says now: load and warm new or changed versions in the
        background, swap, retire the versions dropped or replaced. Returns the versions loaded.
        Raises the error of a version that failed to load, after serving what the policy selects
        without it (what it would have replaced keeps serving)."""
        async with self._lock:
            self._signature = _disk_signature(self.model_dir)
            try:
                wanted = load_specs(self.model_dir, self.settings.version)
            except (ModelNotFound, OSError, ValueError) as err:
                log.error("model %s: repository unusable (%s); serving what is loaded", self.name, err)
                raise
            current = self.current
            changed = {v: spec for v, spec in wanted.items()
                       if v not in current or current[v].spec.config != spec.config}
            loaded: dict[str, LoadedVersion] = {}
            failures: list[Exception] = []
            await self._load_into(loaded, changed, failures)
            serve = list(wanted)
            failed = [v for v in changed if v not in loaded and v not in current]
            if failed and not self.settings.version:
                # The policy chooses again as if the versions that failed to load were not there:
                # under latest 1 a broken version 2 leaves version 1, which it would have
                # replaced, serving (loaded now if it is not, e.g. after an unload); a version
                # deleted or outside the policy is not kept.
                config = next(iter(wanted.values())).config
                serve = select_versions(config, [v for v in versions_of(self.model_dir) if v not in failed])
                await self._load_into(loaded, {v: spec_from_config(config, v, self.model_dir / v) for v in serve
                                               if v not in loaded and v not in current}, failures)
            new = {v: loaded.get(v) or current[v] for v in serve if v in loaded or v in current}
            for v in list(self.states):
                if (v not in wanted and v not in serve) or (v not in changed and v in current):
                    self.states.pop(v)  # gone, or its config is the loaded one again (a reverted edit)
            self._swap(new)
            if failures:
                raise failures[0]
            if loaded or set(new) != set(current):
                log.info("model %s: serving versions %s (loaded %s)", self.name, sorted(new, key=int), sorted(loaded, key=int))
            return sorted(loaded, key=int)

    async def _load_into(self, loaded: dict[str, LoadedVersion], specs: dict[str, ModelSpec],
                         failures: list[Exception]) -> None:
        """Load and warm each version in the background, lowest first; a failure is recorded in
        its state and in `failures`, and the others still load."""
        for version, spec in sorted(specs.items(), key=lambda item: int(item[0])):
            self.states[version] = VersionState(LOADING, "loading")
            try:
                loaded[version] = await asyncio.to_thread(self._build_warm, spec)
                self.states.pop(version, None)
            except Exception as err:  # a broken graph: keep serving the old set
                log.exception("model %s: version %s failed to load", self.name, version)
                self.states[version] = VersionState(UNAVAILABLE, f"failed to load: {type(err).__name__}: {err}")
                failures.append(err)

    def _build_warm(self, spec: ModelSpec) -> LoadedVersion:
        lv = build(spec, self.settings)
        try:
            lv.model.warmup()
        except Exception:
            lv.close()
            raise
        return lv

    def _swap(self, new: dict[str, LoadedVersion]) -> None:
        old, self.current = self.current, new
        if new:
            self.available.set()
        else:
            self.available.clear()
        for listener in self.listeners:
            listener()
        keep = set(map(id, new.values()))
        for lv in old.values():
            if id(lv) not in keep:
                task = asyncio.create_task(self._retire(lv))
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)

    async def _retire(self, lv: LoadedVersion) -> None:
        """Close a version once the requests admitted onto it are answered (bounded: a count
        left behind by a failed Redis write must not keep a session open for ever)."""
        deadline = time.monotonic() + RETIRE_MAX_WAIT_S
        while lv.running and time.monotonic() < deadline:
            await asyncio.sleep(RETIRE_POLL_S)
        if lv.running:
            log.warning("model %s: version %s closed with %d request(s) still counted on it",
                        self.name, lv.version, lv.running)
        await asyncio.to_thread(lv.close)
        log.info("model %s: version %s retired", self.name, lv.version)

    async def load(self) -> list[str]:
        """RepositoryModelLoad: take work again (if unloaded) and serve what the repository says;
        a version that failed to load is the caller's error, and what did load serves."""
        try:
            return await self.sync()
        finally:
            if self.current:
                self.accepting = True

    async def unload(self, drain_s: float) -> None:
        """RepositoryModelUnload: stop taking new work (gateways see it with the next heartbeat),
        keep answering for `drain_s` (what they sent meanwhile), then retire every version."""
        async with self._lock:
            self.accepting = False
            await asyncio.sleep(drain_s)
            for v in self.current:
                self.states[v] = VersionState(UNAVAILABLE, "unloaded")
            self._swap({})

    async def poll(self, interval_s: float) -> None:
        """Triton's POLL mode: look at the repository every interval and sync when it changed."""
        while True:
            await asyncio.sleep(interval_s)
            if not self.accepting or self._lock.locked():
                continue
            if _disk_signature(self.model_dir) != self._signature:
                try:
                    await self.sync()
                except Exception as err:
                    log.warning("model %s: repository change not applied (%s)", self.name, err)

    async def close(self) -> None:
        """After the last request: retire everything and wait for it."""
        self._swap({})
        if self._retiring:
            await asyncio.wait(self._retiring)
