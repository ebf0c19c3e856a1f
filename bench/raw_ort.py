"""Raw ONNX Runtime in-process: the limit the serving paths are measured against.

The session is set up like the model service's: its intra-op and inter-op thread counts (from
`ModelServiceSettings`, 0 resolved the way the service resolves it) and no spin-waiting pool threads.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bench.results import OrtRow
from bench.stack import log

if TYPE_CHECKING:
    import onnxruntime


def service_threads() -> tuple[int, int]:
    """(intra-op, inter-op) threads of a model service started with this environment."""
    from services.settings import ModelServiceSettings

    settings = ModelServiceSettings()
    intra = settings.intra_op_threads
    if intra == 0:
        try:  # the service's own rule for 0, where it has one
            from services.modelservice.runners.base import default_intra_op_threads
            intra = default_intra_op_threads()
        except ImportError:  # an older service: ONNX Runtime decides (one thread per core)
            intra = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return intra, settings.inter_op_threads


def session_options(intra: int, inter: int) -> onnxruntime.SessionOptions:
    """The model service's options: its thread counts, and no spin-waiting pool threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra
    options.inter_op_num_threads = inter
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def session(model_file: Path, intra: int, inter: int,
            providers: Sequence[str] = ("CPUExecutionProvider",)) -> onnxruntime.InferenceSession:
    import onnxruntime as ort

    return ort.InferenceSession(str(model_file), sess_options=session_options(intra, inter), providers=list(providers))


def run_ort(model: str, model_file: Path, input_name: str, item_shape: Sequence[int], batches: Sequence[int],
            seconds: float, warmup: int, threads: tuple[int, int],
            providers: Sequence[str] = ("CPUExecutionProvider",)) -> list[OrtRow]:
    """Back-to-back calls at each batch size for `seconds`: rows/s and per-call latency."""
    sess = session(model_file, *threads, providers=providers)
    rng = np.random.default_rng(0)
    rows = []
    for batch in batches:
        feed = {input_name: rng.random((batch, *item_shape), dtype=np.float32)}
        for _ in range(warmup):
            sess.run(None, feed)
        latencies = []
        started = time.perf_counter()
        deadline = started + seconds
        while True:
            t0 = time.perf_counter_ns()
            sess.run(None, feed)
            latencies.append(time.perf_counter_ns() - t0)
            if time.perf_counter() >= deadline:
                break
        total = time.perf_counter() - started
        ms = np.asarray(latencies, dtype=np.float64) / 1e6
        rows.append(OrtRow(batch, len(latencies), batch * len(latencies) / total, float(np.percentile(ms, 50)),
                           float(np.percentile(ms, 99)), float(ms.mean()), model))
        log(f"ORT {model} batch {batch}: {rows[-1].rows_per_s:,.0f} rows/s, p50 {rows[-1].p50_ms:.3f} ms")
    return rows


def best(rows: Sequence[OrtRow]) -> OrtRow | None:
    return max(rows, key=lambda r: r.rows_per_s, default=None)
