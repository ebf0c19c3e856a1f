"""Driving perf_analyzer (gRPC, batch 1 per request) and reading what it writes.

One perf_analyzer process per concurrency level. Around each, the server's ModelStatistics and the
CPU of its serving processes are read before it starts and after it exits, so the request count
and the CPU seconds cover the same span: the whole run, perf_analyzer's warm-up windows included.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from bench.counters import requests_between, settled_counters
from bench.procstat import ProcessGroup, usage
from bench.results import LevelFailure, LoadRow
from bench.stack import log

AVG_PARTS = ("Client Send", "Network+Server Send/Recv", "Client Recv")


# -- parsing -------------------------------------------------------------------------------
def _column(row: Mapping[str, str], *names: str) -> float:
    for name in names:
        if name in row and row[name].strip() != "":
            return float(row[name])
    raise KeyError(f"perf_analyzer CSV has none of the columns {names}; it has {sorted(row)}")


def parse_perf_csv(text: str) -> list[LoadRow]:
    """Rows of a perf_analyzer `-f` CSV (latencies in microseconds) as LoadRows in ms.

    perf_analyzer may append a blank line and a second block (server metrics with
    --verbose-csv); only the first block, the one with the Concurrency header, is read.
    """
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Concurrency,")), None)
    if start is None:
        raise ValueError("no 'Concurrency,' header in the perf_analyzer CSV")
    block = []
    for line in lines[start:]:
        if not line.strip():
            break
        block.append(line)
    rows = []
    us = 1e-3
    for rec in csv.DictReader(io.StringIO("\n".join(block))):
        compute = sum(_column(rec, f"Server Compute {part}") for part in ("Input", "Infer", "Output"))
        queue = _column(rec, "Server Queue")
        if rec.get("Avg latency", "").strip():  # only with --verbose-csv
            avg = _column(rec, "Avg latency")
        else:  # the breakdown columns add up to the average client latency
            avg = sum(_column(rec, c) for c in AVG_PARTS) + queue + compute
        rows.append(LoadRow(
            concurrency=int(float(rec["Concurrency"])),
            throughput=_column(rec, "Inferences/Second"),
            p50_ms=_column(rec, "p50 latency") * us,
            p95_ms=_column(rec, "p95 latency") * us,
            p99_ms=_column(rec, "p99 latency") * us,
            avg_ms=avg * us,
            queue_ms=queue * us,
            compute_ms=compute * us,
        ))
    return rows


def parse_server_latency(stdout: str) -> tuple[float, float] | None:
    """(avg request latency, overhead) in ms from the 'Server:' section of perf_analyzer's output."""
    match = re.search(r"Avg request latency:\s*(\d+) usec \(overhead (\d+) usec", stdout)
    if not match:
        return None
    return int(match.group(1)) / 1e3, int(match.group(2)) / 1e3


def parse_server_counts(stdout: str) -> tuple[int, int] | None:
    """(inference count, execution count) from the 'Server:' section of perf_analyzer's output."""
    inferences = re.search(r"Inference count:\s*(\d+)", stdout)
    executions = re.search(r"Execution count:\s*(\d+)", stdout)
    if not inferences or not executions:
        return None
    return int(inferences.group(1)), int(executions.group(1))


def export_latencies_ms(text: str) -> list[float]:
    """Each measured request's latency (first send to last response) from --profile-export-file JSON."""
    out = []
    for experiment in json.loads(text).get("experiments", []):
        for request in experiment.get("requests", []):
            responses = request.get("response_timestamps") or []
            if responses:
                out.append((responses[-1] - request["timestamp"]) / 1e6)
    return out


# -- running -------------------------------------------------------------------------------
def cuda_runtime_lib() -> str | None:
    """perf_analyzer links libcudart even on CPU: the lib folder of the nvidia-cuda-runtime wheel."""
    spec = importlib.util.find_spec("nvidia.cuda_runtime")
    for location in (spec.submodule_search_locations or []) if spec else []:
        lib = Path(location) / "lib"
        if lib.is_dir():
            return str(lib)
    return None


def perf_analyzer_env() -> dict[str, str]:
    env = dict(os.environ)
    lib = cuda_runtime_lib()
    if lib:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (lib, env.get("LD_LIBRARY_PATH", "")) if p)
    return env


def find_perf_analyzer(explicit: str | None = None) -> str:
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "perf_analyzer"
    if beside.exists():
        return str(beside)
    found = shutil.which("perf_analyzer")
    if not found:
        raise RuntimeError("perf_analyzer not found: install the dev extra (tritonclient[grpc]) or pass --perf-analyzer")
    return found


@dataclass
class Target:
    """One system as perf_analyzer reaches it, and the processes that serve it."""

    system: str
    url: str
    processes: ProcessGroup
    window_ms: int
    stability: float
    streaming: bool = False
    version: str = ""  # -x; a model service's own port needs it
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class PerfSettings:
    binary: str
    workdir: Path
    max_trials: int = 6
    level_timeout_s: float = 120.0
    stall_ms: float = 250.0
    verbose: bool = False
    input_data: dict[str, Path] = field(default_factory=dict)  # model -> perf_analyzer --input-data file


def input_data(model_dir: Path, out: Path, samples: int = 16, seed: int = 0) -> Path:
    """perf_analyzer input data: `samples` requests of one row each, floats uniform in [0, 1) as
    pixels are, integers 0. (perf_analyzer's own `random` fills FP32 tensors with random bits,
    NaN and infinities among them, which the gateway refuses.)"""
    from tensorgate.repository import load_spec
    from tensorgate.tensors import DTYPES

    spec = load_spec(model_dir)
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(samples):
        row = {}
        for t in spec.inputs:
            shape = [d if d > 0 else 1 for d in t.shape[1:]]  # without the batch dim
            dtype = DTYPES[t.datatype]
            values = rng.random(shape) if dtype.kind == "f" else np.zeros(shape)
            row[t.name] = {"content": values.astype(dtype).reshape(-1).tolist(), "shape": shape}
        rows.append(row)
    out.write_text(json.dumps({"data": rows}))
    return out


def perf_analyzer_argv(binary: str, target: Target, model: str, concurrency: int, csv_path: Path,
                       export_path: Path, stability: float, max_trials: int, data: Path | None = None) -> list[str]:
    argv = [binary, "-m", model, "-u", target.url, "-i", "grpc", "-b", "1", "--async",
            "--concurrency-range", str(concurrency), "-f", str(csv_path), "--profile-export-file", str(export_path),
            "--measurement-mode", "time_windows", "-p", str(target.window_ms),
            "-s", f"{stability:g}", "-r", str(max_trials), "--input-data", str(data) if data else "random"]
    if target.streaming:
        argv.append("--streaming")
    if target.version:
        argv += ["-x", target.version]
    for name, value in target.headers.items():
        argv += ["-H", f"{name}:{value}"]
    return argv


def run_measured(argv: Sequence[str], env: Mapping[str, str], timeout_s: float, log_path: Path) -> tuple[int, str, float]:
    """Run argv to completion: (exit code, its output, its own CPU seconds from wait4's rusage)."""
    with log_path.open("w+") as out:
        process = subprocess.Popen(list(argv), env=dict(env), stdout=out, stderr=subprocess.STDOUT)
        timer = threading.Timer(timeout_s, process.kill)
        timer.start()
        try:
            _, status, rusage = os.wait4(process.pid, 0)
        except BaseException:
            process.kill()
            process.wait()
            raise
        finally:
            timer.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        return process.returncode, out.read(), rusage.ru_utime + rusage.ru_stime


def measure_level(target: Target, model: str, concurrency: int, settings: PerfSettings) -> LoadRow | LevelFailure:
    """One concurrency level; a level that does not settle is retried once with windows twice as long and
    twice the stability percentage."""
    env = perf_analyzer_env()
    stem = f"{target.system.replace(' ', '_')}_{model}_c{concurrency}"
    csv_path, export_path = settings.workdir / f"{stem}.csv", settings.workdir / f"{stem}.json"
    reason = ""
    # perf_analyzer's own advice for a level that does not settle: longer windows; and looser stability.
    for attempt, stability in enumerate((target.stability, 2 * target.stability)):
        csv_path.unlink(missing_ok=True)
        export_path.unlink(missing_ok=True)
        this_try = replace(target, window_ms=target.window_ms * (1 + attempt))
        argv = perf_analyzer_argv(settings.binary, this_try, model, concurrency, csv_path, export_path, stability,
                                  settings.max_trials, settings.input_data.get(model))
        counters_before = settled_counters(target.url, model, target.headers)
        cpu_before = target.processes.sample()
        started = time.monotonic()
        code, output, client_cpu = run_measured(argv, env, settings.level_timeout_s, settings.workdir / f"{stem}.log")
        span = time.monotonic() - started
        cpu_after = target.processes.sample()
        counters_after = settled_counters(target.url, model, target.headers)
        if settings.verbose:
            print(output, file=sys.stderr)
        if code == 0 and csv_path.exists():
            break
        reason = output.strip().splitlines()[-1] if output.strip() else f"exit {code}"
        log(f"  {target.system} {model} c={concurrency}: perf_analyzer failed with {this_try.window_ms} ms windows at "
            f"stability {stability:g}% ({reason})")
    else:
        return LevelFailure(target.system, model, concurrency, reason)
    (row,) = parse_perf_csv(csv_path.read_text())
    row.system, row.model = target.system, model
    latency = parse_server_latency(output)
    if latency:
        row.server_ms, row.overhead_ms = latency
    row.requests, row.count_source = requests_between(counters_before, counters_after)
    row.span_s, row.client_cpu_s = span, client_cpu
    row.usage = usage(cpu_before, cpu_after)
    counts = parse_server_counts(output)
    executions = counters_after.executions - counters_before.executions
    if counts and counts[1] > 0:
        row.avg_batch = counts[0] / counts[1]
    elif executions > 0:
        row.avg_batch = (counters_after.inferences - counters_before.inferences) / executions
    row.batch_sizes = {size: n - counters_before.batches.get(size, 0) for size, n in counters_after.batches.items()
                       if n - counters_before.batches.get(size, 0) > 0}
    if export_path.exists():
        latencies = np.asarray(export_latencies_ms(export_path.read_text()))
        row.measured = int(latencies.size)
        row.max_ms = float(latencies.max()) if latencies.size else None
        row.stalls = int((latencies >= settings.stall_ms).sum())
        export_path.unlink()  # per-request timestamps: megabytes, read once
    log(f"  {target.system} {model} c={concurrency}: {row.throughput:,.0f} infer/s, p50 {row.p50_ms:.2f} ms, "
        f"p99 {row.p99_ms:.2f} ms, CPU/1k {row.cpu_per_1k or 0:.2f} s ({span:.0f} s)")
    return row


def measure(target: Target, model: str, levels: Sequence[int], settings: PerfSettings) -> list[LoadRow | LevelFailure]:
    return [measure_level(target, model, c, settings) for c in levels]
