"""python -m bench.serving: the gateway under perf_analyzer next to raw ONNX Runtime.

Starts the stack (redis-server, the model service, the gateway) on free ports, or uses a
running gateway (--url); drives it with perf_analyzer over gRPC at a few concurrency levels
(batch size 1 per request); then times the same model file in-process with ONNX Runtime at
matching batch sizes. Writes one markdown report (stdout and --out).

All numbers come from one run on one machine: compare them as ratios within the report.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import importlib.metadata
import importlib.util
import io
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
READY_LINE = "tensorgate is up"
WAITING_LINE = "Ctrl-C drains and stops everything."


# -- results -------------------------------------------------------------------------------
@dataclass
class GatewayRow:
    """One concurrency level of perf_analyzer against the gateway (times in ms)."""

    concurrency: int
    throughput: float  # inferences (= requests, batch 1) per second
    p50_ms: float
    p95_ms: float
    p99_ms: float
    avg_ms: float
    queue_ms: float  # server queue: gateway enqueue -> batch start in the model service
    compute_ms: float  # server compute input + infer + output
    avg_batch: float | None = None  # inference count / execution count on the server
    batch_sizes: dict[int, int] = field(default_factory=dict)  # executions per batch size
    server_ms: float | None = None  # the gateway's own average request latency (its handler's clock)
    overhead_ms: float | None = None  # server_ms minus queue and compute: the gateway's side of the round trip


@dataclass
class OrtRow:
    """Raw ONNX Runtime in-process at one batch size (times in ms)."""

    batch: int
    calls: int
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    gap_ms: float = 0.0  # idle time between calls; 0 = back to back (only then is rows_per_s a throughput)


@dataclass
class Report:
    gateway: list[GatewayRow]
    ort: list[OrtRow]
    meta: dict[str, str]  # label -> value, rendered as a list in this order
    max_queue_delay_ms: float = 0.0
    preferred_batch_sizes: tuple[int, ...] = ()


# -- perf_analyzer CSV ----------------------------------------------------------------------
def _column(row: Mapping[str, str], *names: str) -> float:
    for name in names:
        if name in row and row[name].strip() != "":
            return float(row[name])
    raise KeyError(f"perf_analyzer CSV has none of the columns {names}; it has {sorted(row)}")


AVG_PARTS = ("Client Send", "Network+Server Send/Recv", "Client Recv")


def parse_perf_csv(text: str) -> list[GatewayRow]:
    """Rows of a perf_analyzer `-f` CSV (latencies in microseconds) as GatewayRows in ms.

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
        compute = _column(rec, "Server Compute Input") + _column(rec, "Server Compute Infer") + _column(
            rec, "Server Compute Output")
        queue = _column(rec, "Server Queue")
        if rec.get("Avg latency", "").strip():  # only with --verbose-csv
            avg = _column(rec, "Avg latency")
        else:  # the breakdown columns add up to the average client latency
            avg = sum(_column(rec, c) for c in AVG_PARTS) + queue + compute
        rows.append(GatewayRow(
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


# -- markdown -------------------------------------------------------------------------------
def _f(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def ratios(gateway: Sequence[GatewayRow], ort: Sequence[OrtRow]) -> list[tuple[int, float, float, float]]:
    """(N, gateway infer/s at concurrency N, ORT rows/s at batch N, gateway / ORT) for each shared N."""
    by_batch = {r.batch: r for r in ort if not r.gap_ms}
    return [(g.concurrency, g.throughput, by_batch[g.concurrency].rows_per_s,
             g.throughput / by_batch[g.concurrency].rows_per_s)
            for g in gateway if g.concurrency in by_batch and by_batch[g.concurrency].rows_per_s > 0]


def gateway_table(rows: Sequence[GatewayRow]) -> str:
    out = ["| concurrency | throughput (infer/s) | p50 ms | p95 ms | p99 ms | avg ms "
           "| avg server queue ms | avg server compute ms | avg batch size |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r.concurrency} | {_f(r.throughput, 1)} | {_f(r.p50_ms)} | {_f(r.p95_ms)} | {_f(r.p99_ms)} "
                   f"| {_f(r.avg_ms)} | {_f(r.queue_ms)} | {_f(r.compute_ms, 3)} | {_f(r.avg_batch)} |")
    return "\n".join(out)


def ort_table(rows: Sequence[OrtRow]) -> str:
    out = ["| batch size | calls | throughput (rows/s) | p50 ms / call | p99 ms / call |",
           "|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.gap_ms:
            out.append(f"| {r.batch}, {r.gap_ms:g} ms idle between calls | {r.calls} | — "
                       f"| {_f(r.p50_ms, 3)} | {_f(r.p99_ms, 3)} |")
        else:
            out.append(f"| {r.batch} | {r.calls} | {_f(r.rows_per_s, 0)} | {_f(r.p50_ms, 3)} | {_f(r.p99_ms, 3)} |")
    return "\n".join(out)


def breakdown_table(rows: Sequence[GatewayRow]) -> str:
    """Average client latency split by whose clock sees it; empty when perf_analyzer gave no server latency."""
    rows = [r for r in rows if r.server_ms is not None and r.overhead_ms is not None]
    if not rows:
        return ""
    out = ["| concurrency | client avg ms | before/after the gateway handler ms | gateway handler, outside the model "
           "service ms | server queue ms | server compute ms |",
           "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        assert r.server_ms is not None
        out.append(f"| {r.concurrency} | {_f(r.avg_ms)} | {_f(r.avg_ms - r.server_ms)} | {_f(r.overhead_ms)} "
                   f"| {_f(r.queue_ms)} | {_f(r.compute_ms, 3)} |")
    return "\n".join(out)


def ratio_line(gateway: Sequence[GatewayRow], ort: Sequence[OrtRow]) -> str:
    parts = [f"concurrency {n} / batch {n}: {_f(g, 1)} / {_f(o, 0)} = **{r:.3f}**" for n, g, o, r in ratios(gateway, ort)]
    return "Gateway throughput ÷ raw ORT throughput: " + ("; ".join(parts) if parts else "no shared N") + "."


def batch_histogram(rows: Sequence[GatewayRow]) -> str:
    lines = []
    for r in rows:
        if r.batch_sizes:
            sizes = ", ".join(f"{size}×{count}" for size, count in sorted(r.batch_sizes.items()))
            lines.append(f"- concurrency {r.concurrency}: {sizes}")
    return "\n".join(lines)


def interpretation(report: Report) -> list[str]:
    """A few sentences computed from the numbers (so they stay true when the numbers change)."""
    notes = []
    gw = {r.concurrency: r for r in report.gateway}
    ort = {r.batch: r for r in report.ort if not r.gap_ms}
    paced = next((r for r in report.ort if r.gap_ms and r.batch == 1), None)
    if gw and ort:
        lo = gw[min(gw)]
        base = ort.get(1) or ort[min(ort)]
        if lo.server_ms is not None and lo.overhead_ms is not None:
            outside = (f"{lo.avg_ms - lo.server_ms:.2f} ms passes before the gateway's handler starts or after it "
                       f"ends (gRPC transport, the gateway's gRPC server and event loop, perf_analyzer itself) and "
                       f"{lo.overhead_ms:.2f} ms is the gateway handler's time outside the model service (the enqueue "
                       f"script, the reply-stream hop back through Redis)")
        else:
            outside = (f"the remaining {lo.avg_ms - lo.queue_ms - lo.compute_ms:.2f} ms is outside the model "
                       f"service's clock (gRPC, the gateway, the reply-stream hop back through Redis)")
        notes.append(
            f"**Where a request's time goes (concurrency {lo.concurrency}).** Client average {lo.avg_ms:.2f} ms, of "
            f"which the model service reports {lo.queue_ms:.2f} ms queue and {lo.compute_ms:.3f} ms compute; "
            f"{outside}. The server queue runs from the gateway's enqueue to the start of the batch, so it holds "
            f"the Redis request-stream hop and the dynamic-batching window (max_queue_delay "
            f"{report.max_queue_delay_ms:g} ms, preferred sizes {list(report.preferred_batch_sizes)}: a lone "
            f"request is not a preferred size and waits the window out). Raw ORT back to back takes "
            f"{base.p50_ms:.3f} ms (p50) at batch {base.batch}, about {100 * base.p50_ms / lo.avg_ms:.0f}% of the "
            f"end-to-end latency: the serving path, not the model, is the cost."
            + (f" The service's compute ({lo.compute_ms:.3f} ms) is well above that, most likely because at this "
               f"rate every call starts cold (caches, idle threads): raw ORT with {paced.gap_ms:g} ms idle between "
               f"calls takes {paced.p50_ms:.3f} ms (p50) too." if paced and paced.p50_ms > 2 * base.p50_ms else "")
        )
    if len(gw) >= 2:
        lo, hi = gw[min(gw)], gw[max(gw)]
        notes.append(
            f"**Batching.** From concurrency {lo.concurrency} to {hi.concurrency} the gateway's throughput goes "
            f"{lo.throughput:.0f} → {hi.throughput:.0f} infer/s (×{hi.throughput / lo.throughput:.1f}) and the "
            f"average executed batch {_f(lo.avg_batch)} → {_f(hi.avg_batch)} rows, while p50 latency goes "
            f"{lo.p50_ms:.2f} → {hi.p50_ms:.2f} ms."
            + (f" Raw ORT gains ×{ort[max(ort)].rows_per_s / ort[min(ort)].rows_per_s:.1f} in rows/s from batch "
               f"{min(ort)} to {max(ort)}. The gateway's gain comes as much from overlapping requests (one waits "
               f"on Redis while another is parsed) as from batching, and it never gets near the model's speed: "
               f"batching shares one model call among requests, but each request still pays its own gRPC call, "
               f"protobuf work and Redis round trips, and those costs, not the model, set the throughput."
               if len(ort) >= 2 else "")
        )
        if hi.avg_batch is not None and hi.avg_batch > 0:
            per_batch_ms = hi.compute_ms  # each request is charged its whole batch's compute
            busy = hi.throughput / hi.avg_batch * per_batch_ms / 1e3
            notes.append(
                f"**The ceiling at concurrency {hi.concurrency}.** {hi.throughput:.0f} infer/s in batches of "
                f"{hi.avg_batch:.1f} is {hi.throughput / hi.avg_batch:.0f} executions/s of {per_batch_ms:.3f} ms "
                f"compute each: ONNX Runtime is busy about {100 * busy:.0f}% of the time. Of the "
                f"{hi.avg_ms:.2f} ms average latency, {hi.queue_ms:.2f} ms is server queue and "
                f"{hi.avg_ms - hi.queue_ms - hi.compute_ms:.2f} ms is outside the model service"
                + (f" ({hi.avg_ms - hi.server_ms:.2f} ms of it before/after the gateway's handler)"
                   if hi.server_ms is not None else "")
                + (". The limit is the Python processes around the model (gateway, model service event loop), which "
                   "share the CPUs with perf_analyzer and redis-server on this machine, not the model."
                   if busy < 0.5 else
                   ". The model's own compute is a large share of the time here, so bigger batches would help.")
            )
    rs = ratios(report.gateway, report.ort)
    if rs:
        notes.append(
            "**Ratio.** Through the gateway a model that ORT runs at "
            + ", ".join(f"{o:,.0f} rows/s (batch {n})" for n, _, o, _ in rs)
            + " is served at "
            + ", ".join(f"{g:,.0f} infer/s (concurrency {n}, {100 * r:.1f}%)" for n, g, _, r in rs)
            + ". This MLP is tiny, so the fixed per-request cost of the serving path is the whole story; a model "
              "whose compute is tens of milliseconds would lose a far smaller share."
        )
    return notes


def render_markdown(report: Report) -> str:
    meta = "\n".join(f"- {label}: {value}" for label, value in report.meta.items())
    parts = [
        "# Serving benchmark: the gateway vs raw ONNX Runtime",
        "",
        "Written by `python -m bench.serving`; rerun it to refresh this page. One run on one machine, "
        "and the machine may be shared and noisy: compare the numbers as ratios within this page, "
        "not with other runs.",
        "",
        meta,
        "",
        "## Through the gateway (perf_analyzer, gRPC, batch size 1 per request)",
        "",
        gateway_table(report.gateway),
        "",
        "Client latencies are perf_analyzer's. Server queue and compute are the model's ModelStatistics as the "
        "gateway reports them (per request: queue = gateway enqueue → batch start in the model service; compute = "
        "concatenate + ONNX Runtime + split, each request charged its whole batch, as Triton does). Average batch "
        "size = inference count ÷ execution count over the measured windows.",
    ]
    breakdown = breakdown_table(report.gateway)
    if breakdown:
        parts += ["", "Average latency by whose clock sees it (perf_analyzer's server section: the gateway's request "
                  "latency and its 'overhead' beyond queue and compute):", "", breakdown]
    hist = batch_histogram(report.gateway)
    if hist:
        parts += ["", "Executions per batch size (size×count, ModelStatistics deltas over the whole perf_analyzer run):",
                  "", hist]
    parts += [
        "",
        "## Raw ONNX Runtime, in-process (same model file, CPU execution provider)",
        "",
        ort_table(report.ort),
        "",
        "Rows/s is batch size × calls ÷ wall time of back-to-back calls."
        + (" The row with idle time between calls shows the latency of a call that starts cold, as a model service "
           "sees it at low request rates." if any(r.gap_ms for r in report.ort) else ""),
        "",
        "## Ratio",
        "",
        ratio_line(report.gateway, report.ort),
        "",
        "## Interpretation",
        "",
    ]
    parts += [f"- {note}" for note in interpretation(report)] or ["- no numbers to interpret"]
    return "\n".join(parts) + "\n"


# -- the stack ------------------------------------------------------------------------------
def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports (held open together while choosing, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Stack:
    """`python -m services.stack` as a child process: started, waited for, SIGINT-ed."""

    def __init__(self, model: str, model_repository: Path, state_dir: Path, ready_timeout_s: float) -> None:
        from services.repository import load_repository
        from services.stack import model_ports

        gw, gw_metrics, model_port, model_metrics, redis_port, prom = free_ports(6)
        # The stack puts a model on base + its slot (mnist_cnn: base+1, ...): shift the bases so the
        # model lands on exactly the free ports picked here.
        slot = model_ports(load_repository(model_repository), 0, 0).get(model, (0, 0))[0]  # unknown: the stack says so
        model_port, model_metrics = model_port - slot, model_metrics - slot
        self.url = f"127.0.0.1:{gw}"
        self.state_dir = state_dir
        self.ready_timeout_s = ready_timeout_s
        self.argv = [sys.executable, "-m", "services.stack", "--no-prometheus", "--models", model,
                     "--model-repository", str(model_repository), "--state-dir", str(state_dir),
                     "--port", str(gw), "--metrics-port", str(gw_metrics), "--model-base-port", str(model_port),
                     "--model-metrics-base-port", str(model_metrics), "--redis-port", str(redis_port),
                     "--prometheus-port", str(prom), "--ready-timeout", str(ready_timeout_s)]
        self.output: list[str] = []
        self._waiting = threading.Event()
        self._process: subprocess.Popen[str] | None = None

    def _pump(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            self.output.append(line.rstrip("\n"))
            if WAITING_LINE in line:
                self._waiting.set()

    def start(self) -> None:
        # Own session: a Ctrl-C on our terminal reaches us, and we stop the stack in order.
        self._process = subprocess.Popen(self.argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         text=True, start_new_session=True)
        threading.Thread(target=self._pump, daemon=True).start()
        deadline = time.monotonic() + self.ready_timeout_s + 30
        while not self._waiting.wait(0.2):
            if self._process.poll() is not None or time.monotonic() > deadline:
                time.sleep(0.3)  # let the pump catch the last lines
                raise RuntimeError("the stack did not come up:\n  " + "\n  ".join(self.output[-30:]))
        if not any(READY_LINE in line for line in self.output):
            raise RuntimeError("the stack printed no ready line:\n  " + "\n  ".join(self.output[-30:]))

    def stop(self, timeout_s: float = 90.0) -> int | None:
        p = self._process
        if p is None or p.poll() is not None:
            return None if p is None else p.returncode
        p.send_signal(signal.SIGINT)
        try:
            return p.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            p.terminate()
            try:
                return p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                return p.wait()


@contextmanager
def running_stack(args: argparse.Namespace) -> Iterator[str]:
    """Yields the gateway's host:port; the stack is always stopped afterwards, error or not."""
    own_dir = args.state_dir is None
    state = Path(tempfile.mkdtemp(prefix="tensorgate-bench-")) if own_dir else Path(args.state_dir)
    stack = Stack(args.model, Path(args.model_repository).resolve(), state, args.ready_timeout)
    ok = False
    try:
        log(f"starting the stack: {shlex.join(stack.argv[1:])}")
        stack.start()
        log(f"stack is up; gateway at {stack.url}")
        yield stack.url
        ok = True
    finally:
        log("stopping the stack (SIGINT) ...")
        code = stack.stop()
        log(f"stack stopped (exit {code})")
        if own_dir and ok:
            shutil.rmtree(state, ignore_errors=True)
        elif own_dir:
            log(f"stack logs kept in {state / 'logs'}")


def _sigterm_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


# -- perf_analyzer --------------------------------------------------------------------------
def cuda_runtime_lib() -> str | None:
    """perf_analyzer links libcudart even on CPU: the lib folder of the nvidia-cuda-runtime wheel."""
    spec = importlib.util.find_spec("nvidia.cuda_runtime")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
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


def find_perf_analyzer(explicit: str | None) -> str:
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "perf_analyzer"
    if beside.exists():
        return str(beside)
    found = shutil.which("perf_analyzer")
    if not found:
        raise RuntimeError("perf_analyzer not found: install the dev extra (tritonclient[grpc]) or pass --perf-analyzer")
    return found


def perf_analyzer_argv(args: argparse.Namespace, binary: str, url: str, concurrency: int, csv_path: Path,
                       stability: float) -> list[str]:
    return [binary, "-m", args.model, "-u", url, "-i", "grpc", "-b", "1",
            "--concurrency-range", str(concurrency), "-f", str(csv_path),
            "--measurement-mode", "time_windows", "-p", str(args.window_ms),
            "-s", f"{stability:g}", "-r", str(args.max_trials), "--input-data", "random"]


def model_counters(url: str, model: str) -> tuple[int, int, dict[int, int]]:
    """(inference count, execution count, executions per batch size) from the gateway's ModelStatistics."""
    from services.client import Client

    with Client(url, timeout_s=10.0) as client:
        stats = [s for s in client.statistics(model).model_stats if s.name == model]
    if not stats:
        return 0, 0, {}
    s = stats[0]
    return s.inference_count, s.execution_count, {b.batch_size: b.compute_infer.count for b in s.batch_stats}


def run_perf_analyzer(args: argparse.Namespace, url: str, workdir: Path) -> list[GatewayRow]:
    binary = find_perf_analyzer(args.perf_analyzer)
    env = perf_analyzer_env()
    rows = []
    for concurrency in args.concurrency:
        csv_path = workdir / f"perf_c{concurrency}.csv"
        result = None
        before = model_counters(url, args.model)
        # On a noisy machine a level may not settle within --max-trials: retry once, looser.
        for stability in (args.stability, args.stability * 2):
            argv = perf_analyzer_argv(args, binary, url, concurrency, csv_path, stability)
            log(f"perf_analyzer at concurrency {concurrency}: {shlex.join(argv)}")
            started = time.monotonic()
            result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=args.level_timeout)
            log(f"  exit {result.returncode} after {time.monotonic() - started:.1f}s")
            if result.returncode == 0 and csv_path.exists():
                break
            log("  perf_analyzer failed; its output:\n" + (result.stdout + result.stderr)[-3000:])
        assert result is not None
        if result.returncode != 0 or not csv_path.exists():
            raise RuntimeError(f"perf_analyzer failed at concurrency {concurrency}")
        after = model_counters(url, args.model)
        if args.verbose:
            print(result.stdout, file=sys.stderr)
        parsed = parse_perf_csv(csv_path.read_text())
        if len(parsed) != 1:
            raise RuntimeError(f"expected one row in {csv_path}, got {len(parsed)}")
        row = parsed[0]
        latency = parse_server_latency(result.stdout)
        if latency:
            row.server_ms, row.overhead_ms = latency
        counts = parse_server_counts(result.stdout)
        delta_inf, delta_exec = after[0] - before[0], after[1] - before[1]
        if counts and counts[1] > 0:
            row.avg_batch = counts[0] / counts[1]
        elif delta_exec > 0:
            row.avg_batch = delta_inf / delta_exec
        row.batch_sizes = {size: n - before[2].get(size, 0) for size, n in after[2].items()
                           if n - before[2].get(size, 0) > 0}
        rows.append(row)
    return rows


# -- raw ONNX Runtime -------------------------------------------------------------------------
def ort_threads() -> tuple[int, int]:
    """The model service's default ONNX Runtime threads (intra, inter), honouring its env vars."""
    from services.settings import ModelServiceSettings

    settings = ModelServiceSettings()
    return settings.intra_op_threads, settings.inter_op_threads


def run_ort(model_file: Path, input_name: str, item_shape: Sequence[int], batches: Sequence[int],
            seconds: float, warmup: int, gap_ms: float = 0.0, gap_calls: int = 200) -> list[OrtRow]:
    import onnxruntime as ort

    intra, inter = ort_threads()
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra
    options.inter_op_num_threads = inter
    session = ort.InferenceSession(str(model_file), sess_options=options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    rows = []
    for batch in batches:
        feed = {input_name: rng.random((batch, *item_shape), dtype=np.float32)}
        for _ in range(warmup):
            session.run(None, feed)
        latencies = []
        started = time.perf_counter()
        deadline = started + seconds
        while True:
            t0 = time.perf_counter_ns()
            session.run(None, feed)
            latencies.append(time.perf_counter_ns() - t0)
            if time.perf_counter() >= deadline:
                break
        total = time.perf_counter() - started
        ms = np.asarray(latencies, dtype=np.float64) / 1e6
        rows.append(OrtRow(batch, len(latencies), batch * len(latencies) / total,
                           float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), float(ms.mean())))
        log(f"ORT batch {batch}: {rows[-1].rows_per_s:,.0f} rows/s, p50 {rows[-1].p50_ms:.3f} ms")
    if gap_ms > 0:
        feed = {input_name: rng.random((1, *item_shape), dtype=np.float32)}
        latencies = []
        for _ in range(gap_calls):
            time.sleep(gap_ms / 1e3)
            t0 = time.perf_counter_ns()
            session.run(None, feed)
            latencies.append(time.perf_counter_ns() - t0)
        ms = np.asarray(latencies, dtype=np.float64) / 1e6
        rows.append(OrtRow(1, gap_calls, 0.0, float(np.percentile(ms, 50)), float(np.percentile(ms, 99)),
                           float(ms.mean()), gap_ms))
        log(f"ORT batch 1 with {gap_ms:g} ms gaps: p50 {rows[-1].p50_ms:.3f} ms")
    return rows


# -- environment --------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def nproc() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 0


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def redis_version() -> str:
    binary = shutil.which("redis-server")
    if not binary:
        return "not found"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"v=(\S+)", out)
    return match.group(1) if match else out.strip()


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# -- main ---------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__.splitlines()[0])
    p.add_argument("--url", help="host:port of a running gateway; default: start the stack on free ports and stop it afterwards")
    p.add_argument("--model", default="mnist_mlp", help="model to benchmark (default: mnist_mlp)")
    p.add_argument("--model-repository", default=str(ROOT / "models"), help="model repository holding the model's ONNX file")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32],
                   help="perf_analyzer concurrency levels, one run each (default: 1 8 32)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                   help="raw ORT batch sizes (default: the concurrency levels)")
    p.add_argument("--window-ms", type=int, default=2000, help="perf_analyzer measurement window in ms (default: 2000)")
    p.add_argument("--stability", type=float, default=20.0,
                   help="perf_analyzer stability percentage; a level that fails is retried once at twice this (default: 20)")
    p.add_argument("--max-trials", type=int, default=6, help="perf_analyzer windows per level before giving up (default: 6)")
    p.add_argument("--level-timeout", type=float, default=120.0, help="seconds one perf_analyzer run may take (default: 120)")
    p.add_argument("--ort-seconds", type=float, default=3.0, help="seconds of raw ORT calls per batch size (default: 3)")
    p.add_argument("--ort-warmup", type=int, default=50, help="untimed raw ORT calls before each batch size (default: 50)")
    p.add_argument("--ort-gap-ms", type=float, default=5.0,
                   help="also time 200 raw ORT batch-1 calls with this idle time before each, as a model service "
                        "sees them at a low request rate; 0 skips it (default: 5)")
    p.add_argument("--perf-analyzer", help="perf_analyzer binary (default: the one beside this Python, else on PATH)")
    p.add_argument("--state-dir", help="the started stack's logs and Redis data (default: a temporary folder, "
                                       "removed after a clean run)")
    p.add_argument("--ready-timeout", type=float, default=120.0, help="seconds the stack may take to come up (default: 120)")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"),
                   help="markdown file to write (default: docs/benchmarks.md); '-' for stdout only")
    p.add_argument("--verbose", action="store_true", help="also print perf_analyzer's own output (to stderr)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.batch_sizes = args.batch_sizes or list(args.concurrency)
    from services.repository import load_spec

    spec = load_spec(Path(args.model_repository) / args.model)
    model_file = spec.model_file
    if len(spec.inputs) != 1:
        raise SystemExit(f"{args.model}: the raw ORT part handles one input, the model has {len(spec.inputs)}")
    if spec.max_batch_size <= 0:
        raise SystemExit(f"{args.model}: max_batch_size is 0, so it takes no batch dimension to vary")
    item_shape = [d if d > 0 else 1 for d in spec.inputs[0].shape[1:]]  # shape[0] is the batch dim (-1)
    intra, inter = ort_threads()
    load = os.getloadavg()
    started = dt.datetime.now(dt.timezone.utc)
    digest = hashlib.sha256(model_file.read_bytes()).hexdigest()[:12]
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        with tempfile.TemporaryDirectory(prefix="tensorgate-perf-") as workdir:
            if args.url:
                gateway_rows = run_perf_analyzer(args, args.url, Path(workdir))
            else:
                with running_stack(args) as url:
                    gateway_rows = run_perf_analyzer(args, url, Path(workdir))
        ort_rows = run_ort(model_file, spec.inputs[0].name, item_shape, args.batch_sizes, args.ort_seconds, args.ort_warmup,
                           args.ort_gap_ms)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    rel = model_file.relative_to(ROOT) if model_file.is_relative_to(ROOT) else model_file
    command = "python -m bench.serving " + shlex.join(argv if argv is not None else sys.argv[1:])
    report = Report(
        gateway=gateway_rows,
        ort=ort_rows,
        meta={
            "Command": f"`{command.strip()}`",
            "Date": started.strftime("%Y-%m-%d %H:%M UTC"),
            "Machine": f"{nproc()} CPUs (nproc), {cpu_model()}, {platform.system()} {platform.release()}; "
                       f"load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min)",
            "Versions": f"Python {platform.python_version()}, onnxruntime {version('onnxruntime')}, "
                        f"perf_analyzer from tritonclient {version('tritonclient')}, grpcio {version('grpcio')}, "
                        f"redis-server {redis_version()}",
            "Model": f"{spec.name} v{spec.version} (`{rel}`, sha256 {digest}…, {model_file.stat().st_size / 1e6:.1f} MB); "
                     f"max_batch_size {spec.max_batch_size}, preferred batch sizes {list(spec.preferred_batch_sizes)}, "
                     f"max_queue_delay {spec.max_queue_delay_s * 1e3:g} ms",
            "Gateway": f"{args.url} (already running)" if args.url else
                       "started by the benchmark: `python -m services.stack --no-prometheus --models "
                       f"{args.model}` on free ports (redis-server, one model service, the gateway, all on this machine)",
            "perf_analyzer": f"gRPC, batch size 1 per request, random input, concurrency {' '.join(map(str, args.concurrency))}, "
                             f"time windows of {args.window_ms} ms, stability {args.stability:g}% (retry at "
                             f"{2 * args.stability:g}%), at most {args.max_trials} windows per level",
            "Raw ORT": f"onnxruntime CPUExecutionProvider in this process, intra-op threads {intra} "
                       f"({'ONNX Runtime decides' if intra == 0 else 'as set'}; the model service's default), "
                       f"inter-op threads {inter}, random input, {args.ort_warmup} warm-up calls then "
                       f"{args.ort_seconds:g} s of back-to-back calls per batch size"
                       + (f"; then 200 batch-1 calls with {args.ort_gap_ms:g} ms idle before each" if args.ort_gap_ms else ""),
        },
        max_queue_delay_ms=spec.max_queue_delay_s * 1e3,
        preferred_batch_sizes=spec.preferred_batch_sizes,
    )
    text = render_markdown(report)
    print(text)
    if args.out != "-":
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
