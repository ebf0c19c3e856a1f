"""python -m bench.roundtrip: the CPU one Redis round trip costs, over loopback TCP and over a unix socket.

The stack's own processes reach its Redis over a unix socket (services/stack.py). This is the
measurement behind that choice: one redis-server listening on both, one `Wire` per transport
sending the same pipelined pair of commands back to back (an XADD of a 100-byte field and an
XLEN, the shape of an enqueue), in alternating rounds; per round trip it reports the client's
CPU (this process), redis-server's CPU (/proc) and the wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.procstat import sample
from services.queue import streams
from services.queue.wire import Wire

COMMANDS: list[list[str | bytes | int]] = [["XADD", "bench", "MAXLEN", "~", 1000, "*", "payload", b"x" * 100],
                                           ["XLEN", "bench"]]


def start_redis(folder: Path, port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH: run `make deps`")
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--unixsocket",
                                str(folder / "redis.sock"), "--save", "", "--appendonly", "no"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not (folder / "redis.sock").exists():
        if time.monotonic() > deadline or process.poll() is not None:
            raise SystemExit("redis-server did not start")
        time.sleep(0.02)
    return process


async def one_round(url: str, pid: int, calls: int) -> tuple[float, float, float]:
    """(client CPU, server CPU, wall) in µs per round trip."""
    client = streams.connect(url, 5.0)
    wire = Wire.like(client)
    await wire.execute(["PING"])
    server0, cpu0, wall0 = sample([pid])[pid].cpu_s, time.process_time(), time.perf_counter()
    for _ in range(calls):
        await wire.execute(*COMMANDS)
    server1, cpu1, wall1 = sample([pid])[pid].cpu_s, time.process_time(), time.perf_counter()
    await wire.aclose()
    await client.aclose()
    return ((cpu1 - cpu0) / calls * 1e6, (server1 - server0) / calls * 1e6, (wall1 - wall0) / calls * 1e6)


async def run(port: int, calls: int, rounds: int) -> dict[str, list[tuple[float, float, float]]]:
    with tempfile.TemporaryDirectory(prefix="tensorgate-rtt-") as tmp:
        redis = start_redis(Path(tmp), port)
        try:
            urls = {"loopback TCP": f"redis://127.0.0.1:{port}/0", "unix socket": f"unix://{tmp}/redis.sock?db=0"}
            results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in urls}
            for _ in range(rounds):
                for name, url in urls.items():
                    results[name].append(await one_round(url, redis.pid, calls))
            return results
        finally:
            redis.terminate()
            redis.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.roundtrip", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000, help="round trips per round and transport")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (medians are printed)")
    parser.add_argument("--port", type=int, default=47555, help="TCP port of the temporary redis-server")
    args = parser.parse_args(argv)
    results = asyncio.run(run(args.port, args.calls, args.rounds))
    print(f"`python -m bench.roundtrip --calls {args.calls} --rounds {args.rounds}`, medians per round trip:\n")
    print("| transport | client CPU µs | redis-server CPU µs | wall µs |")
    print("|---|---:|---:|---:|")
    for name, rows in results.items():
        client, server, wall = (statistics.median(column) for column in zip(*rows))
        print(f"| {name} | {client:.1f} | {server:.1f} | {wall:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
