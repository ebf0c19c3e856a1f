"""python -m services.demo (make demo): tensorgate as an application sees it.

Uses the stack on --url when one answers there, else starts one (`python -m services.stack`) and
stops it afterwards. Then: the example photos read by both classifiers side by side, German
sentences translated with TranslateStream (each printed the moment it is done), a PNG grid of
generated digits, and a per-model latency table (p50/p95/p99, requests) from the gateway's own
/metrics histograms.
"""

from __future__ import annotations

import argparse
import math
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

import tensorgate
from services import grid

ROOT = Path(__file__).resolve().parent.parent
SENTENCES = ["Ich habe keine Zeit.", "Der Hund kam unter dem Tisch hervor.", "Wo ist der Bahnhof?",
             "Das Wetter ist heute schön.", "Wir fahren morgen nach Berlin."]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
LATENCY = "tensorgate_request_duration_seconds"


def serving(url: str) -> bool:
    with grpc.insecure_channel(url) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1.0)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


@contextmanager
def stack_on(url: str, timeout_s: float = 180.0) -> Iterator[None]:
    """The stack answering on `url`: the one already up, or one started here and stopped after."""
    if serving(url):
        yield
        return
    print(f"no stack answers on {url}: starting one (python -m services.stack) ...", flush=True)
    process = subprocess.Popen([sys.executable, "-m", "services.stack"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    lines, deadline = [], time.monotonic() + timeout_s
    for line in process.stdout:  # its own demo runs first; it is up once it says how to stop it
        lines.append(line)
        if "Ctrl-C drains" in line or time.monotonic() > deadline:
            break
    try:
        if process.poll() is not None or not serving(url):
            raise RuntimeError("the stack did not come up:\n" + "".join(lines[-30:]))
        yield
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)


def photos() -> list[Path]:
    """The example photos (examples/), or MNIST's own samples until there are some."""
    for folder in (ROOT / "examples", ROOT / "samples" / "mnist"):
        files = sorted(f for f in folder.glob("*") if f.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        if files:
            return files
    return []


def side_by_side(client: tensorgate.Client, files: list[Path]) -> None:
    print(f"\nthe example photos, read by both networks (Classify, images prepared on the server):")
    print(f"  {'file':<28} {'mnist_mlp':>14} {'mnist_cnn':>14}")
    results = {model: client.classify(files, model) for model in ("mnist_mlp", "mnist_cnn")}
    for i, f in enumerate(files):
        cells = [f"{r.labels[i]} (p={r.probabilities[i, r.labels[i]]:.2f})" for r in results.values()]
        print(f"  {f.name:<28} {cells[0]:>14} {cells[1]:>14}")


def translate_streamed(client: tensorgate.Client) -> None:
    print("\nGerman to English with TranslateStream (each sentence printed when it is done):")
    started = time.perf_counter()
    for index, translation in client.translate_stream(SENTENCES):
        elapsed = (time.perf_counter() - started) * 1000
        print(f"  [{index}] {elapsed:6.0f} ms  {SENTENCES[index]}  ->  {translation.text}", flush=True)


def draw_digits(client: tensorgate.Client, out: Path, per_digit: int = 8) -> None:
    rows = [client.generate(digit, count=per_digit, seed=7).images[:, 0] for digit in range(10)]  # (8, 28, 28) each
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(grid.png(np.concatenate(rows), columns=per_digit))
    print(f"\ndigit_gan drew {per_digit} of each digit (Generate): {out}")


def quantile(q: float, buckets: Mapping[float, float]) -> float:
    """Prometheus' histogram_quantile: cumulative counts by upper bound -> the q-quantile, linear
    inside the bucket it falls in (the highest finite bound when it falls in +Inf)."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total == 0:
        return math.nan
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * ((rank - below) / (count - below) if count > below else 0.0)
        lower, below = bound, count
    return lower


def latency_table(metrics_text: str) -> list[tuple[str, int, float, float, float]]:
    """(model, requests, p50, p95, p99 in seconds) from the gateway's request duration histogram."""
    buckets: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != LATENCY:
            continue
        for sample in family.samples:
            if sample.name == f"{LATENCY}_bucket":
                model = buckets.setdefault(sample.labels["model"], {})  # versions of a model added up
                le = float(sample.labels["le"])
                model[le] = model.get(le, 0.0) + sample.value
    return [(model, int(b[math.inf]), quantile(0.5, b), quantile(0.95, b), quantile(0.99, b))
            for model, b in sorted(buckets.items())]


def print_latency(metrics_url: str) -> None:
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    print(f"\nlatency at the gateway ({metrics_url}, {LATENCY}, since it started):")
    print(f"  {'model':<18} {'requests':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    for model, count, p50, p95, p99 in latency_table(text):
        print(f"  {model:<18} {count:>9} {p50 * 1000:>8.1f} {p95 * 1000:>8.1f} {p99 * 1000:>8.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="127.0.0.1:8001", help="gateway gRPC address (a stack is started there if none answers)")
    parser.add_argument("--metrics-url", default="http://127.0.0.1:8002/metrics", help="the gateway's /metrics")
    parser.add_argument("--out", type=Path, default=Path(".stack") / "demo-digits.png", help="PNG grid of generated digits")
    args = parser.parse_args(argv)
    try:
        with stack_on(args.url), tensorgate.Client(args.url, timeout_s=60) as client:
            ready = {m.name for m in client.models() if m.state == "READY"}
            files = photos()
            if {"mnist_mlp", "mnist_cnn"} <= ready and files:
                side_by_side(client, files)
            if "translator_de_en" in ready:
                translate_streamed(client)
            if "digit_gan" in ready:
                draw_digits(client, args.out)
            print_latency(args.metrics_url)
    except (RuntimeError, tensorgate.InferenceError, OSError) as err:
        print(f"demo failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
