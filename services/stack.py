"""python -m services.stack: the whole topology as local processes, no Docker.

redis-server (own port, data under .stack/), one model service per model of the repository,
the gateway, and Prometheus when it is installed. Prints where each listens once all are
ready, shows a request going through, and on Ctrl-C drains and stops them in order:
gateway first (no new work), then the model services (finish what they hold), then the rest.

`--join --models NAME...` adds model services to a stack that is already up (its Redis): the
gateway serves them as soon as they announce themselves, without a restart.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tensorgate.repository import load_repository

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "mnist"
RULES = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "rules"
# The models of the contract, in its order: the order fixes each model service's port pair, 8101/9101
# for the first, 8102/9102 for the second, ... (docker-compose.yml and Prometheus use the same table).
CONTRACT_MODELS = ("mnist_mlp", "mnist_cnn", "translator_de_en", "digit_gan")
UNIX_PATH_MAX = 100  # sun_path holds 108 bytes; a longer state dir gets TCP


def model_ports(models: Iterable[str], base: int, metrics_base: int) -> dict[str, tuple[int, int]]:
    """(gRPC port, metrics port) of each model's service: base + its slot, metrics_base + its slot.

    A contract model's slot is its place in CONTRACT_MODELS whether or not the others are there, so
    serving a subset (``--models mnist_cnn``) keeps every model on its contract ports; any other
    model follows the contract ones, alphabetically. Pass every model of the repository, then pick.
    """
    names = set(models)
    others = sorted(names - set(CONTRACT_MODELS))
    slots = {name: i for i, name in enumerate(CONTRACT_MODELS)}
    slots |= {name: len(CONTRACT_MODELS) + i for i, name in enumerate(others)}
    ordered = sorted(names, key=slots.__getitem__)
    return {name: (base + slots[name], metrics_base + slots[name]) for name in ordered}


@dataclass
class Child:
    name: str
    argv: list[str]
    log: Path
    grpc_port: int = 0  # health-checked when set
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = self.log.open("ab")
        self.process = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **self.env},
                                        start_new_session=True)  # Ctrl-C reaches us only; we stop children in order

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def serving(self) -> bool:
        if not self.grpc_port:
            return self.alive()
        with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1.0)
            except grpc.RpcError:
                return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def stop(self, timeout_s: float) -> None:
        if not self.alive():
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def answers(sock: Path) -> bool:
    """A server listens on this unix socket (not a stale file of a Redis that was killed)."""
    if not sock.is_socket():
        return False
    with socket.socket(socket.AF_UNIX) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(sock))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def build(args: argparse.Namespace) -> tuple[list[Child], list[str]]:
    """The children in start order and the lines describing where each listens."""
    state = Path(args.state_dir).resolve()
    logs = state / "logs"
    redis_url = f"redis://127.0.0.1:{args.redis_port}/0"
    # The stack's own processes reach Redis over a unix socket beside its data (no loopback TCP
    # stack per command; see docs/profiles.md); others, redis-cli included, over the TCP port.
    sock = state / "redis" / "redis.sock"
    use_socket = not args.redis_tcp and len(os.fsencode(sock)) < UNIX_PATH_MAX and (not args.join or answers(sock))
    service_url = f"unix://{quote(str(sock))}?db=0" if use_socket else redis_url
    py = sys.executable
    children: list[Child] = []
    lines: list[str] = []
    if not args.join:
        redis_bin = shutil.which("redis-server")
        if redis_bin is None:
            sys.exit("redis-server is not on PATH: run `make deps` (installs it with apt-get)")
        (state / "redis").mkdir(parents=True, exist_ok=True)
        socket_args = ["--unixsocket", str(sock), "--unixsocketperm", "700"] if use_socket else []
        children.append(Child("redis", [redis_bin, "--port", str(args.redis_port), "--bind", "127.0.0.1", *socket_args,
                                        "--dir", str(state / "redis"), "--save", "", "--appendonly", "yes",
                                        "--appendfsync", "everysec"],
                              logs / "redis.log"))  # queued requests survive a Redis restart
        lines.append(f"redis            {redis_url}" + (f" (the stack's processes: {service_url})" if use_socket else ""))
    ports = model_ports(load_repository(Path(args.model_repository)), args.model_base_port,
                        args.model_metrics_base_port)
    if args.join and not args.models:
        sys.exit("--join needs --models: the models to add to the running stack")
    if args.models:
        unknown = set(args.models) - set(ports)
        if unknown:
            sys.exit(f"not in {args.model_repository}: {', '.join(sorted(unknown))}")
        ports = {m: p for m, p in ports.items() if m in args.models}
    if args.join:  # the running stack's services hold their ports; a newcomer takes free ones where needed
        ports = {m: (p if port_free(p) else free_port(), mp if port_free(mp) else free_port())
                 for m, (p, mp) in ports.items()}
    scrape = []
    for name, (port, mport) in ports.items():
        children.append(Child(name, [py, "-m", "services.modelservice", "--name", name, "--port", str(port),
                                     "--metrics-port", str(mport), "--redis-url", service_url,
                                     "--model-repository", args.model_repository], logs / f"{name}.log", port))
        lines.append(f"{name:<16} gRPC 127.0.0.1:{port}   metrics http://127.0.0.1:{mport}/metrics")
        scrape.append(f"127.0.0.1:{mport}")
    if args.join:
        return children, lines
    children.append(Child("gateway", [py, "-m", "services.gateway", "--port", str(args.port), "--metrics-port",
                                      str(args.metrics_port), "--redis-url", service_url, "--model-repository",
                                      args.model_repository], logs / "gateway.log", args.port))
    lines.append(f"{'gateway':<16} gRPC 127.0.0.1:{args.port}   metrics http://127.0.0.1:{args.metrics_port}/metrics")
    prometheus = shutil.which("prometheus")
    if prometheus and not args.no_prometheus:
        config = state / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 5s}\n"
            f"rule_files: ['{RULES}/*.yml']\n"  # the recording and alert rules compose loads too
            "scrape_configs:\n"
            f"  - job_name: gateway\n    static_configs: [{{targets: ['127.0.0.1:{args.metrics_port}']}}]\n"
            f"  - job_name: model_services\n    static_configs: [{{targets: {scrape}}}]\n"
        )
        children.append(Child("prometheus", [prometheus, f"--config.file={config}",
                                             f"--storage.tsdb.path={state / 'prometheus'}",
                                             f"--web.listen-address=127.0.0.1:{args.prometheus_port}"],
                              logs / "prometheus.log"))
        lines.append(f"{'prometheus':<16} http://127.0.0.1:{args.prometheus_port}")
    return children, lines


def wait_ready(children: list[Child], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    pending = list(children)
    while pending:
        for child in list(pending):
            if not child.alive():
                raise RuntimeError(f"{child.name} exited during start-up; its log ({child.log}):\n{child.tail()}")
            if child.serving():
                pending.remove(child)
        if time.monotonic() > deadline:
            raise RuntimeError(f"not ready after {timeout_s:.0f}s: {', '.join(c.name for c in pending)}")
        time.sleep(0.2)


def demo(port: int) -> None:
    """Show real requests through the gateway's typed API: classify the shipped sample digits with
    each classifier (the files' bytes, prepared on the server), and, when they are served,
    translate two sentences and draw digits."""
    import tensorgate

    files = sorted(SAMPLES.glob("*.png"))
    shown = SAMPLES.relative_to(Path.cwd()) if SAMPLES.is_relative_to(Path.cwd()) else SAMPLES
    with tensorgate.Client(f"127.0.0.1:{port}") as client:
        ready = {m.name for m in client.models() if m.state == "READY"}
        for name in sorted(m for m in ready if m.startswith("mnist_")):
            if not files:
                break
            try:
                labels, probs = client.classify(files, name)
            except tensorgate.InferenceError as err:
                if "image_bytes" not in err.message:
                    raise
                # A repository whose classifiers take pixels only (the benchmark's): prepare them here.
                labels, probs = client.classify([tensorgate.load_digit(f) for f in files], name)
            print(f"\n{name} through the gateway, on {shown}:")
            for f, label, p in zip(files, labels, probs):
                print(f"  {f.name:<12} -> {label}  (p={p[label]:.3f})")
        if "translator_de_en" in ready:
            print("\ntranslator_de_en through the gateway (beam 5):")
            for sentence, (english, score) in zip(DEMO_SENTENCES, client.translate(DEMO_SENTENCES)):
                print(f"  {sentence}  ->  {english}  (score {score:.2f})")
        if "digit_gan" in ready:
            drawn = [client.generate(digit, seed=7).images[0, 0] for digit in range(10)]  # (28, 28) each
            print("\ndigit_gan through the gateway, digits 0-9 (seed 7):")
            print(ascii_row(drawn))
    print(next_steps(port, ready))


def next_steps(port: int, ready: set[str]) -> str:
    """What a new user can type next, against this stack: only commands for the models it serves."""
    url = "" if port == 8001 else f" --url 127.0.0.1:{port}"
    examples = SAMPLES.parent.parent / "examples"
    kinds = sorted({f.suffix.lower() for f in examples.glob("*") if f.suffix.lower() in (".png", ".jpg", ".jpeg")})
    photos = " ".join(f"examples/*{kind}" for kind in kinds) or "samples/mnist/*.png"
    client = f"tensorgate.Client(\"127.0.0.1:{port}\")"
    lines = ["\nwhat to try next (in another shell; `pip install .` or .venv/bin puts `tensorgate` on PATH):"]
    if "mnist_cnn" in ready:  # the CLI's default classifier
        lines.append(f"  tensorgate classify --json {photos}{url}   # image files, prepared on the server as MNIST was made")
    if "mnist_mlp" in ready:
        lines.append(f"  tensorgate classify --model mnist_mlp {photos}{url}")
    if "translator_de_en" in ready:
        lines.append(f"  tensorgate translate --stream \"Ich habe keine Zeit.\" \"Wo ist der Bahnhof?\"{url}")
    if "digit_gan" in ready:
        lines.append(f"  tensorgate generate 7 --count 16 -o sevens.png{url}")
    classifier: str | None = next((m for m in ("mnist_cnn", "mnist_mlp") if m in ready), None)
    shown: str = classifier or min(ready, default="")
    lines.append(f"  tensorgate models{url}" + (f"   /   tensorgate stats {shown}{url}" if shown else ""))
    if {"mnist_mlp", "mnist_cnn"} <= ready:
        lines.append("  make demo                   # both networks side by side, streaming, a digit grid, latency table")
    if classifier:
        lines.append(f"  python: {client}.classify([\"seven.jpg\"], \"{classifier}\")   (README: Calling it)")
    elif "translator_de_en" in ready:
        lines.append(f"  python: {client}.translate([\"Guten Morgen.\"])   (README: Calling it)")
    return "\n".join(lines)


DEMO_SENTENCES = ["Der Hund kam unter dem Tisch hervor.", "Ich habe keine Zeit."]


def ascii_row(images: Any, shades: str = " .:-=+*#%@") -> str:
    """Images [N, 28, 28] in 0..1 side by side as text, two pixel rows per line."""
    rows = []
    for y in range(0, 28, 2):
        line = "  ".join("".join(shades[min(len(shades) - 1, int(img[y, x] * len(shades)))] for x in range(0, 28, 2))
                         for img in images)
        rows.append("  " + line)
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.stack", description=__doc__.splitlines()[0])
    parser.add_argument("--model-repository", default="models", help="Triton-layout model repository")
    parser.add_argument("--models", nargs="*", help="serve only these models (default: every model in the repository)")
    parser.add_argument("--port", type=int, default=8001, help="gateway gRPC port")
    parser.add_argument("--metrics-port", type=int, default=8002, help="gateway metrics port")
    parser.add_argument("--model-base-port", type=int, default=8101,
                        help="gRPC port of mnist_mlp; mnist_cnn gets base+1, translator_de_en base+2, digit_gan base+3, "
                        "other models the next ones (alphabetically); --models does not renumber")
    parser.add_argument("--model-metrics-base-port", type=int, default=9101,
                        help="metrics port of mnist_mlp; the others as for --model-base-port")
    parser.add_argument("--redis-port", type=int, default=6390, help="port of the stack's own redis-server")
    parser.add_argument("--redis-tcp", action="store_true",
                        help="the stack's processes reach Redis over TCP on --redis-port, not over the unix socket "
                        "in the state dir")
    parser.add_argument("--prometheus-port", type=int, default=9090, help="Prometheus port (when installed)")
    parser.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus even if installed")
    parser.add_argument("--state-dir", default=".stack", help="logs, Redis and Prometheus data")
    parser.add_argument("--ready-timeout", type=float, default=120.0, help="seconds to wait for every process")
    parser.add_argument("--exit-after-demo", action="store_true", help="stop once the stack answered (smoke test)")
    parser.add_argument("--join", action="store_true",
                        help="add the --models to a stack already up (its Redis on --redis-port): start only their "
                        "model services; the running gateway serves them without a restart")
    args = parser.parse_args(argv)

    children, lines = build(args)
    stop_requested = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    code = 0
    try:
        for child in children:
            child.start()
        wait_ready(children, args.ready_timeout)
        print(("joined the stack:\n  " if args.join else "tensorgate is up:\n  ") + "\n  ".join(lines), flush=True)
        print(f"  logs             {Path(args.state_dir) / 'logs'}", flush=True)
        if not args.join:
            demo(args.port)
        print("\nCtrl-C drains and stops everything.", flush=True)
        while not stop_requested and not args.exit_after_demo:
            dead = [c for c in children if not c.alive()]
            if dead:
                print(f"{dead[0].name} stopped unexpectedly; its log:\n{dead[0].tail()}", file=sys.stderr)
                code = 1
                break
            time.sleep(0.5)
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        code = 1
    finally:
        print("stopping: gateway, model services, then the rest ...", flush=True)
        order = [c for c in children if c.name == "gateway"] + [c for c in children if c.grpc_port and c.name != "gateway"]
        order += [c for c in reversed(children) if c not in order]
        for child in order:
            child.stop(timeout_s=20.0)
        print("stopped.", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
