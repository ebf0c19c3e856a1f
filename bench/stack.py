"""The tensorgate stack (`python -m services.stack`) as a child process on free ports.

Started, waited for ("Ctrl-C drains and stops everything."), asked where each process listens
(the lines the stack prints), and stopped with SIGINT so it drains in order. Its serving processes
(redis-server, the model services, the gateway) are its children, found through /proc.
"""

from __future__ import annotations

import os
import random
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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.procstat import ProcessGroup

ROOT = Path(__file__).resolve().parent.parent
READY_LINE = "tensorgate is up"
WAITING_LINE = "Ctrl-C drains and stops everything."
# "  mnist_mlp        gRPC 127.0.0.1:8101   metrics http://127.0.0.1:9101/metrics"
ENDPOINT = re.compile(r"^\s*(\S+)\s+gRPC\s+(\S+:\d+)\s+metrics\s+(\S+)")


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def ports_free(ports: Sequence[int]) -> bool:
    socks = []
    try:
        for port in ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


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


def free_block(width: int, tries: int = 200) -> int:
    """A base port with base .. base+width-1 all free (the stack numbers model ports from a base)."""
    for _ in range(tries):
        base = random.randrange(20000, 60000 - width)
        if ports_free(range(base, base + width)):
            return base
    raise RuntimeError(f"no {width} consecutive free ports found")


def parse_endpoints(lines: Sequence[str]) -> dict[str, tuple[str, str]]:
    """{process name: (gRPC host:port, metrics URL)} from the stack's start-up lines."""
    out = {}
    for line in lines:
        match = ENDPOINT.match(line)
        if match:
            out[match.group(1)] = (match.group(2), match.group(3))
    return out


class Stack:
    """`python -m services.stack --models ...` as a child process: started, waited for, SIGINT-ed."""

    def __init__(self, models: Sequence[str], model_repository: Path, state_dir: Path, ready_timeout_s: float,
                 env: dict[str, str] | None = None, root: Path = ROOT, python: str = sys.executable) -> None:
        from tensorgate.repository import load_repository

        width = len(load_repository(model_repository)) + 4  # one slot per model of the repository
        gw, gw_metrics, redis_port, prom = free_ports(4)
        base, metrics_base = free_block(width), free_block(width)
        self.state_dir = state_dir
        self.ready_timeout_s = ready_timeout_s
        self.env = env
        self.root = root  # the checkout whose services run (bench.ab runs another commit's)
        self.argv = [python, "-m", "services.stack", "--no-prometheus", "--models", *models,
                     "--model-repository", str(model_repository), "--state-dir", str(state_dir),
                     "--port", str(gw), "--metrics-port", str(gw_metrics), "--model-base-port", str(base),
                     "--model-metrics-base-port", str(metrics_base), "--redis-port", str(redis_port),
                     "--prometheus-port", str(prom), "--ready-timeout", str(ready_timeout_s)]
        self.output: list[str] = []
        self.endpoints: dict[str, tuple[str, str]] = {}
        self._waiting = threading.Event()
        self._process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return self.endpoints["gateway"][0]

    def direct_url(self, model: str) -> str:
        return self.endpoints[model][0]

    def metrics_url(self, name: str) -> str:
        return self.endpoints[name][1]

    def processes(self) -> ProcessGroup:
        """redis-server, the model services and the gateway: the stack's children, not the stack itself
        (it only supervises, waking twice a second)."""
        assert self._process is not None
        return ProcessGroup(self._process.pid, include_root=False)

    def _pump(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            self.output.append(line.rstrip("\n"))
            if WAITING_LINE in line:
                self._waiting.set()

    def start(self) -> None:
        # Own session: a Ctrl-C on our terminal reaches us, and we stop the stack in order.
        self._process = subprocess.Popen(self.argv, cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         text=True, start_new_session=True, env=self.env)
        threading.Thread(target=self._pump, daemon=True).start()
        deadline = time.monotonic() + self.ready_timeout_s + 30
        while not self._waiting.wait(0.2):
            if self._process.poll() is not None or time.monotonic() > deadline:
                time.sleep(0.3)  # let the pump catch the last lines
                raise RuntimeError("the stack did not come up:\n  " + "\n  ".join(self.output[-30:]))
        if not any(READY_LINE in line for line in self.output):
            raise RuntimeError("the stack printed no ready line:\n  " + "\n  ".join(self.output[-30:]))
        self.endpoints = parse_endpoints(self.output)
        if "gateway" not in self.endpoints:
            raise RuntimeError("the stack did not say where the gateway listens:\n  " + "\n  ".join(self.output))

    def stop(self, timeout_s: float = 90.0) -> int | None:
        return interrupt(self._process, timeout_s)


def interrupt(p: subprocess.Popen[Any] | None, timeout_s: float) -> int | None:
    """SIGINT a process started in its own session and wait; past the timeout, SIGKILL the whole
    session (its children go with it). Returns the exit code (None if it never started)."""
    if p is None or p.poll() is not None:
        return None if p is None else p.returncode
    p.send_signal(signal.SIGINT)
    try:
        return p.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        return p.wait()


def linked_copy(model_dir: Path, dst: Path) -> tuple[Path, Any]:
    """`dst`/<model>: every file and version folder of `model_dir` linked but its config, which
    comes back parsed (a ModelConfig) for the caller to edit and write there."""
    from google.protobuf import text_format

    from tensorgate.proto import model_config_pb2 as mc
    from tensorgate.repository import CONFIG_FILE

    out = dst / model_dir.name
    out.mkdir(parents=True, exist_ok=True)
    for item in model_dir.iterdir():
        if item.name != CONFIG_FILE:
            (out / item.name).symlink_to(item.resolve())
    return out, text_format.Parse((model_dir / CONFIG_FILE).read_text(), mc.ModelConfig())


def perf_repository(src: Path, dst: Path) -> Path:
    """A copy of the model repository for perf_analyzer: configs keep only the inputs their ONNX
    graph takes. perf_analyzer 2.41 fills every input a model declares and knows nothing of
    optional ones, so the classifiers' optional `image_bytes` (encoded files, decoded by their
    runner) would make it send both inputs, which the runner refuses. Version folders are linked,
    not copied; the runner and every other setting stay the same."""
    import onnx
    from google.protobuf import text_format

    from tensorgate.repository import CONFIG_FILE, load_spec

    for model_dir in sorted(p for p in src.iterdir() if (p / CONFIG_FILE).is_file()):
        out, config = linked_copy(model_dir, dst)
        graph = load_spec(model_dir).model_file
        if graph.is_file():
            names = {i.name for i in onnx.load(str(graph), load_external_data=False).graph.input}
            kept = [t for t in config.input if t.name in names]
            del config.input[:]
            for t in kept:
                t.optional = False
                config.input.add().CopyFrom(t)
        (out / CONFIG_FILE).write_text(text_format.MessageToString(config))
    return dst


def with_parameters(model_dir: Path, dst: Path, parameters: dict[str, str]) -> Path:
    """A copy of one model's folder under `dst` whose config.pbtxt sets these `parameters` (string
    values) over its own, to measure a setting without editing the shipped config. Version
    folders and other files are linked, not copied. Returns the copy's folder."""
    from google.protobuf import text_format

    from tensorgate.repository import CONFIG_FILE

    out, config = linked_copy(model_dir, dst)
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    (out / CONFIG_FILE).write_text(text_format.MessageToString(config))
    return out


@contextmanager
def running_stack(models: Sequence[str], model_repository: Path, ready_timeout_s: float,
                  env: dict[str, str] | None = None, root: Path = ROOT, python: str = sys.executable) -> Iterator[Stack]:
    """A started stack; always stopped afterwards, error or not. Logs are kept only after a failure."""
    state = Path(tempfile.mkdtemp(prefix="tensorgate-bench-"))
    stack = Stack(models, model_repository.resolve(), state, ready_timeout_s, env, root, python)
    ok = False
    try:
        log(f"starting the stack: {shlex.join(stack.argv[1:])}")
        stack.start()
        log(f"stack is up; gateway at {stack.url}")
        yield stack
        ok = True
    finally:
        code = stack.stop()
        log(f"stack stopped (exit {code})")
        if ok:
            shutil.rmtree(state, ignore_errors=True)
        else:
            log(f"stack logs kept in {state / 'logs'}")
