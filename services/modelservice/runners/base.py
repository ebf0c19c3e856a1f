"""What every runner offers the model service, and the ONNX Runtime settings they share.

Two kinds of runner:
- `Model`: the worker forms a dynamic batch and calls `run` once for it, in an executor thread.
- `ContinuousModel`: the runner owns its running batch (continuous batching). The worker hands
  it requests one by one with `infer` as long as it has `room`, and each request is answered the
  moment it is done, whatever else is still running.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from typing import ClassVar

import numpy as np
import onnxruntime as ort

from services.settings import ModelServiceSettings

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def choose_providers(device: str, available: Sequence[str] | None = None) -> list[str]:
    """CUDA first when asked for or (auto) when ONNX Runtime offers it; CPU always as fallback."""
    available = list(available if available is not None else ort.get_available_providers())
    if device == "cuda":
        if CUDA not in available:
            raise RuntimeError(f"device=cuda but ONNX Runtime offers only {available} (install onnxruntime-gpu)")
        return [CUDA, CPU]
    if device == "auto" and CUDA in available:
        return [CUDA, CPU]
    return [CPU]


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup in cores (docker --cpus, Kubernetes limits), if any."""
    try:
        text = (root / "cpu.max").read_text().split()  # cgroup v2: "<quota> <period>" or "max <period>"
        quota, period = text[0], text[1]
    except (OSError, IndexError):
        try:  # cgroup v1
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    if quota in ("max", "-1") or float(period) <= 0:
        return None
    return float(quota) / float(period)


def usable_cores() -> int:
    """Cores this process may use: its CPU affinity (taskset, cpusets), narrowed by a cgroup quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return max(1, min(cores, int(limit))) if limit else cores


def default_intra_op_threads(cores: int | None = None) -> int:
    """Half the usable cores, 1 to 8: the gateway, Redis and the other model services share them,
    and a tiny model gains nothing from more threads than its batch can keep busy."""
    cores = usable_cores() if cores is None else cores
    return max(1, min(8, cores // 2))


# Triton's onnxruntime backend reads these from a model's config.pbtxt `parameters`.
THREAD_PARAMETERS = ("intra_op_thread_count", "inter_op_thread_count")


def model_threads(parameters: Mapping[str, str], default: tuple[int, int]) -> tuple[int, int]:
    """(intra-op, inter-op) threads for one model's sessions: its config's `intra_op_thread_count`
    and `inter_op_thread_count` parameters where it sets them (0: every core this process may
    use), else `default`. Raises ValueError for a value that is not a whole number >= 0."""
    counts = list(default)
    for i, key in enumerate(THREAD_PARAMETERS):
        if key not in parameters:
            continue
        value = parameters[key].strip()
        if not value.isdigit():
            raise ValueError(f"parameter {key} must be a whole number >= 0 (0: every core this process "
                             f"may use), not {parameters[key]!r}")
        counts[i] = int(value) or usable_cores()
    return counts[0], counts[1]


def session_options(settings: ModelServiceSettings, parameters: Mapping[str, str] | None = None
                    ) -> ort.SessionOptions:
    """ONNX Runtime options for a machine shared with other processes.

    Spinning is off: by default ORT's pool threads busy-wait for the next call, which on a
    2-core machine burned 0.6 of a core while the model service was otherwise idle between
    batches. Intra-op threads come from the settings (0: `default_intra_op_threads`), unless the
    model's config `parameters` set them (`model_threads`)."""
    options = ort.SessionOptions()
    intra, inter = model_threads(parameters or {}, (settings.intra_op_threads or default_intra_op_threads(),
                                                    settings.inter_op_threads))
    options.intra_op_num_threads, options.inter_op_num_threads = intra, inter
    spin = "1" if settings.ort_spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    options.add_session_config_entry("session.inter_op.allow_spinning", spin)
    return options


class Model:
    """A batch runner: the worker forms batches and calls `run` for each in an executor thread."""

    provider: str = CPU
    # The config `parameters` this runner reads (request validation's are added by
    # runners.unknown_parameters); a config that sets any other is refused at load, so a typo
    # is an error rather than a setting silently ignored.
    PARAMETERS: ClassVar[frozenset[str]] = frozenset({"runner", *THREAD_PARAMETERS})

    def prepare(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One request's validated inputs -> the inputs the graph takes (e.g. encoded images
        decoded into pixels). Runs in the executor, per request, before batching; raising a
        TensorgateError fails that request alone. The default passes the inputs through."""
        return inputs

    def run(self, inputs: dict[str, np.ndarray], outputs: Sequence[str],
            options: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
        """One batch: inputs by name (batch first) -> the named outputs. `options` are the
        request parameters the model takes (validation.INT_OPTIONS), equal for the whole batch."""
        raise NotImplementedError

    async def infer(self, inputs: dict[str, np.ndarray], outputs: Sequence[str], options: Mapping[str, int],
                    executor: Executor) -> dict[str, np.ndarray]:
        """One request on its own (the model service's direct gRPC path), off the event loop."""
        def prepared_run() -> dict[str, np.ndarray]:
            return self.run(self.prepare(inputs), list(outputs), dict(options))

        return await asyncio.get_running_loop().run_in_executor(executor, prepared_run)

    def warmup(self) -> None:
        """Run once before reporting ready, so the first request pays no lazy initialisation."""

    def close(self) -> None:
        """Release threads and sessions (after the last request)."""


class ContinuousModel(Model):
    """A runner that owns its running batch. Subclasses implement `infer` (resolve when this
    request is done), `room` and `wait_for_room`; the worker never calls `run` on them.

    `on_step`, when the worker sets it, is called from the runner's thread after every model
    step with the rows of the running batch (the batch size its metrics report)."""

    on_step: Callable[[int], None] | None = None

    def room(self) -> int:
        """How many more requests it would admit now (0: full)."""
        raise NotImplementedError

    async def wait_for_room(self) -> None:
        """Return once `room()` > 0."""
        raise NotImplementedError
