"""Helpers shared by the tests: a tiny model repository, free ports, a real redis-server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
import random
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

TINY_CONFIG = """name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch_size}
input [
  {{ name: "image" data_type: TYPE_FP32 dims: [ 1, 28, 28 ] }}
]
output [
  {{ name: "probabilities" data_type: TYPE_FP32 dims: [ 10 ] }}
]
dynamic_batching {{
  preferred_batch_size: [ {max_batch_size} ]
  max_queue_delay_microseconds: {delay_us}
  default_queue_policy {{
    timeout_action: REJECT
    default_timeout_microseconds: 5000000
    allow_timeout_override: true
    max_queue_size: {max_queue_size}
  }}
}}
"""


def tiny_mnist_graph(seed: int = 0) -> onnx.ModelProto:
    """A linear softmax classifier with the MNIST models' interface: image [-1,1,28,28] -> probabilities [-1,10]."""
    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array(rng.normal(0, 0.1, (784, 10)).astype(np.float32), "W")
    bias = numpy_helper.from_array(rng.normal(0, 0.1, (10,)).astype(np.float32), "B")
    shape = numpy_helper.from_array(np.array([-1, 784], dtype=np.int64), "flat_shape")
    nodes = [
        helper.make_node("Reshape", ["image", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "W"], ["logits0"]),
        helper.make_node("Add", ["logits0", "B"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_mnist",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        initializer=[weight, bias, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def make_tiny_repository(root: Path, name: str = "mnist_mlp", max_batch_size: int = 64, delay_us: int = 5000,
                         max_queue_size: int = 1024) -> Path:
    model_dir = root / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    onnx.save(tiny_mnist_graph(), str(model_dir / "1" / "model.onnx"))
    (model_dir / "config.pbtxt").write_text(
        TINY_CONFIG.format(name=name, max_batch_size=max_batch_size, delay_us=delay_us, max_queue_size=max_queue_size)
    )
    return root


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, distinct from every port handed out before in this process, and below
    Linux's ephemeral range (32768+): a port the kernel picks for bind(0) can be taken a moment later as
    the local end of some client's outgoing connection, before the server that was meant to get it binds."""
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(20000, 32000)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free port in 20000-32000")


def wait_for_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout_s}s")


class RedisServer:
    """A real redis-server on a free port, data in a temporary folder."""

    def __init__(self, workdir: Path, password: str = "", appendonly: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (make deps installs it)")
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "",
             "--appendonly", "yes" if appendonly else "no", "--appendfsync", "everysec",
             *(["--requirepass", password] if password else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        self.url = f"redis://{f':{password}@' if password else ''}127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)

    def restart(self) -> None:
        """Stop (SIGTERM: an append-only file is flushed) and start again on the same port and folder."""
        self.stop()
        self.process = subprocess.Popen(self.process.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)


REPO_ROOT = Path(__file__).resolve().parent.parent


class ServiceProcess:
    """`python -m services.<module>` as a real process, with its log kept for failures."""

    def __init__(self, module: str, env: dict[str, str], log: Path, grpc_port: int, metrics_port: int) -> None:
        import os
        import sys

        self.log = log
        self.grpc_port = grpc_port
        self.metrics_port = metrics_port
        self._out = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", module], cwd=REPO_ROOT, env={**os.environ, **env},
            stdout=self._out, stderr=subprocess.STDOUT,
        )

    def wait_serving(self, timeout_s: float = 60.0) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout_s
        with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"process exited ({self.process.returncode}):\n{self.log.read_text()[-3000:]}")
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        raise TimeoutError(f"not serving after {timeout_s}s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._out.close()
        return int(self.process.returncode)


def start_model_service(repo: Path, name: str, redis_url: str, log_dir: Path, **env: str) -> ServiceProcess:
    port, metrics_port = free_port(), free_port()
    settings = {"TENSORGATE_MODEL_NAME": name, "TENSORGATE_MODEL_MODEL_REPOSITORY": str(repo),
                "TENSORGATE_MODEL_GRPC_PORT": str(port), "TENSORGATE_MODEL_METRICS_PORT": str(metrics_port),
                "TENSORGATE_MODEL_REDIS_URL": redis_url, "TENSORGATE_MODEL_HOST": "127.0.0.1",
                "TENSORGATE_MODEL_INTRA_OP_THREADS": "1", **{f"TENSORGATE_MODEL_{k.upper()}": v for k, v in env.items()}}
    return ServiceProcess("services.modelservice", settings, log_dir / f"{name}-{port}.log", port, metrics_port)


def start_gateway(repo: Path, redis_url: str, log_dir: Path, **env: str) -> ServiceProcess:
    port, metrics_port = free_port(), free_port()
    settings = {"TENSORGATE_GATEWAY_MODEL_REPOSITORY": str(repo), "TENSORGATE_GATEWAY_GRPC_PORT": str(port),
                "TENSORGATE_GATEWAY_METRICS_PORT": str(metrics_port), "TENSORGATE_GATEWAY_REDIS_URL": redis_url,
                "TENSORGATE_GATEWAY_HOST": "127.0.0.1",
                **{f"TENSORGATE_GATEWAY_{k.upper()}": v for k, v in env.items()}}
    return ServiceProcess("services.gateway", settings, log_dir / f"gateway-{port}.log", port, metrics_port)


def scrape(port: int) -> dict[str, float]:
    """Prometheus text from /metrics as {'name{labels}': value}."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


@dataclass
class SmallStack:
    """redis-server, one replica of a tiny `mnist_mlp` and a gateway: for tests that break them."""

    repo: Path
    redis: RedisServer
    service: ServiceProcess
    gateway: ServiceProcess


@contextmanager
def small_stack(tmp_path: Path, repo: Path | None = None, appendonly: bool = False,
                gateway_env: dict[str, str] | None = None) -> Iterator[SmallStack]:
    """`repo`: a repository with a `mnist_mlp` made by the test (default: the tiny one as it is)."""
    repo = repo or make_tiny_repository(tmp_path / "models", "mnist_mlp")
    redis = RedisServer(tmp_path / "redis", appendonly=appendonly)
    stack = SmallStack(repo, redis, start_model_service(repo, "mnist_mlp", redis.url, tmp_path),
                       start_gateway(repo, redis.url, tmp_path, **(gateway_env or {})))
    try:
        stack.service.wait_serving()
        stack.gateway.wait_serving()
        yield stack
    finally:
        stack.gateway.stop()
        stack.service.stop()
        redis.stop()


def start_stack(command: list[str], timeout_s: float = 180.0) -> tuple[subprocess.Popen[str], list[str]]:
    """Start `python -m services.stack ...` and read its output until it says it is up (or exited,
    or the time ran out); returns the process, still running on success, and the lines read."""
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    lines = []
    deadline = time.monotonic() + timeout_s
    for line in process.stdout:
        lines.append(line)
        if "Ctrl-C drains" in line or time.monotonic() > deadline:
            break
    return process, lines
