"""python -m bench.floor: the CPU a Python gRPC server spends per unary call with nothing behind it.

The floor under the gateway's front end on this machine. A server process answers every call
with its own request bytes (an echo of an MNIST request's size), once on grpc.aio, as the
gateway runs, and once on grpc's thread-pool server; a grpc.aio client in this process holds
`--concurrency` calls in flight for `--seconds`, in alternating rounds. Per call it reports the
server's CPU (utime + stime from /proc), which is what any Python unary front end pays before
validating or queueing anything; the gateway's own figure is `make bench`'s per-process table.
The client shares the machine, so the rate it reaches is printed beside the CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from bench.procstat import sample

SERVICE, METHOD = "tensorgate.bench.Floor", "Echo"
KINDS = ("grpc.aio", "grpc thread pool")
PAYLOAD = b"\0" * 3200  # 784 FP32 pixels and the request's names and shape, about
SYNC_WORKERS = 16
START_TIMEOUT_S = 30.0
ROOT = Path(__file__).resolve().parents[1]
OPTIONS = [("grpc.so_reuseport", 0)]  # a port still held by another server is an error, not shared


def _handlers(handler: object) -> grpc.GenericRpcHandler:
    rpc = grpc.unary_unary_rpc_method_handler(handler)  # no (de)serializers: bytes in, bytes out
    return grpc.method_handlers_generic_handler(SERVICE, {METHOD: rpc})


def _exit_with_parent() -> None:
    """End this process when its parent closes our stdin (it exited, or was killed)."""
    def watch() -> None:
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def serve(kind: str) -> None:
    """Run one echo server on a free port until the parent goes; prints the port once it listens."""
    _exit_with_parent()
    if kind == "grpc.aio":
        async def echo(request: bytes, context: object) -> bytes:
            return request

        async def run_aio() -> None:
            server = grpc.aio.server(options=OPTIONS)
            server.add_generic_rpc_handlers([_handlers(echo)])
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            print(port, flush=True)
            await server.wait_for_termination()

        asyncio.run(run_aio())
    else:
        server = grpc.server(ThreadPoolExecutor(SYNC_WORKERS), options=OPTIONS)
        server.add_generic_rpc_handlers([_handlers(lambda request, context: request)])
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        print(port, flush=True)
        server.wait_for_termination()


async def load(port: int, pid: int, concurrency: int, seconds: float, warmup: int = 300) -> tuple[float, float]:
    """(calls per second, server CPU µs per call) over `seconds` with `concurrency` calls in flight."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(f"/{SERVICE}/{METHOD}")
        for _ in range(warmup):
            await call(PAYLOAD)
        done = 0

        async def client(until: float) -> None:
            nonlocal done
            while time.perf_counter() < until:
                await call(PAYLOAD)
                done += 1

        cpu0, wall0 = sample([pid])[pid].cpu_s, time.perf_counter()
        await asyncio.gather(*(client(wall0 + seconds) for _ in range(concurrency)))
        cpu1, wall1 = sample([pid])[pid].cpu_s, time.perf_counter()
    return done / (wall1 - wall0), (cpu1 - cpu0) / max(done, 1) * 1e6


def one_round(kind: str, concurrency: int, seconds: float) -> tuple[float, float]:
    with subprocess.Popen([sys.executable, "-m", "bench.floor", "--serve", kind], cwd=ROOT,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as server:  # closes the pipes, waits
        try:
            assert server.stdout is not None
            ready, _, _ = select.select([server.stdout], [], [], START_TIMEOUT_S)
            line = server.stdout.readline().strip() if ready else ""
            if not line.isdigit():
                raise SystemExit(f"the {kind} echo server did not start (exit {server.poll()})")
            return asyncio.run(load(int(line), server.pid, concurrency, seconds))
        finally:
            server.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight")
    parser.add_argument("--seconds", type=float, default=6.0, help="measured span of each round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per server (medians are printed)")
    parser.add_argument("--serve", choices=KINDS, help=argparse.SUPPRESS)  # the server process itself
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    if args.rounds < 1 or args.concurrency < 1 or args.seconds <= 0:
        parser.error("--rounds and --concurrency must be at least 1, --seconds above 0")
    results: dict[str, list[tuple[float, float]]] = {kind: [] for kind in KINDS}
    for i in range(args.rounds):
        for kind in KINDS if i % 2 == 0 else KINDS[::-1]:
            results[kind].append(one_round(kind, args.concurrency, args.seconds))
    print(f"`python -m bench.floor --concurrency {args.concurrency} --seconds {args.seconds:g} --rounds "
          f"{args.rounds}` (grpcio {grpc.__version__}), medians:\n")
    print("| server | calls/s | server CPU µs per call | rounds (µs) |")
    print("|---|---:|---:|---|")
    for kind, rows in results.items():
        rate, cpu = (statistics.median(column) for column in zip(*rows))
        print(f"| {kind} | {rate:,.0f} | {cpu:.0f} | {', '.join(f'{c:.0f}' for _, c in rows)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
