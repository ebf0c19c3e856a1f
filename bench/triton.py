"""The PyTriton peer: Triton through nvidia-pytriton serving the same ONNX files, for comparison.

PyTriton's Python backend stub links the system libpython3.11, so it runs from a virtualenv made
with Debian's own python3.11 (package python3-venv), kept under .bench/ and built on first use:
nvidia-pytriton, the onnxruntime version of this virtualenv, numpy. The server script
(bench.pytriton_server) binds one function per model that runs the model's ONNX file with
ONNX Runtime, with the model's batching settings and the model service's thread settings.
Restricted endpoints (statistics, which perf_analyzer reads) want an access token header.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.counters import call
from bench.procstat import ProcessGroup
from bench.stack import ROOT, free_ports, interrupt, log

PYTRITON = "nvidia-pytriton==0.7.0"
TOKEN_HEADER = "triton-grpc-protocol-triton-access-token"
SERVER_MODULE = "bench.pytriton_server"
READY = "PYTRITON READY"  # what bench.pytriton_server prints once every model is loaded


def requirements(onnxruntime_version: str) -> list[str]:
    return [PYTRITON, f"onnxruntime=={onnxruntime_version}", "numpy<2"]


def apt_install(*packages: str) -> None:
    if shutil.which("apt-get") is None:
        raise RuntimeError(f"no apt-get to install {' '.join(packages)}; install them by hand")
    log(f"apt-get install {' '.join(packages)}")
    subprocess.run(["apt-get", "update", "-qq"], check=False)
    subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True)


def ensure_venv(venv: Path, base_python: Path, onnxruntime_version: str) -> Path:
    """The PyTriton virtualenv's python, created and filled when missing or stale."""
    wanted = "\n".join(requirements(onnxruntime_version)) + "\n"
    stamp, python = venv / ".installed", venv / "bin" / "python"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    if not base_python.exists():
        apt_install("python3.11", "python3.11-venv", "libpython3.11")
    if subprocess.run([str(base_python), "-c", "import ensurepip"], capture_output=True).returncode != 0:
        apt_install("python3-venv")
    log(f"creating the PyTriton virtualenv {venv} from {base_python} (once)")
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([str(base_python), "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *requirements(onnxruntime_version)], check=True)
    stamp.write_text(wanted)
    return python


def venv_version(python: Path, dist: str) -> str:
    out = subprocess.run([str(python), "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
                         capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def model_entry(model_repository: Path, name: str, threads: tuple[int, int]) -> dict[str, Any]:
    """What the server script needs of one model, read from its config.pbtxt; its ORT threads are
    `threads` (the model service's) unless the config's parameters set its own, as the service does."""
    from services.modelservice.runners.base import model_threads
    from tensorgate.repository import load_spec

    spec = load_spec(model_repository / name)
    if len(spec.inputs) != 1 or len(spec.outputs) != 1 or spec.inputs[0].datatype != "FP32":
        raise ValueError(f"{name}: the PyTriton peer serves one FP32 input and one output")
    return {"name": name, "file": str(spec.model_file), "input": spec.inputs[0].name,
            "input_shape": list(spec.inputs[0].shape[1:]), "output": spec.outputs[0].name,
            "output_shape": list(spec.outputs[0].shape[1:]), "max_batch_size": spec.max_batch_size,
            "preferred_batch_sizes": list(spec.preferred_batch_sizes),
            "max_queue_delay_us": round(spec.max_queue_delay_s * 1e6),
            "threads": list(model_threads(spec.parameters, threads))}


class PyTritonPeer:
    """bench.pytriton_server as a child process on free ports; its whole process tree serves."""

    def __init__(self, python: Path, models: Sequence[dict[str, Any]], threads: tuple[int, int], state: Path) -> None:
        self.grpc_port, self.http_port, self.metrics_port = free_ports(3)
        self.token = secrets.token_urlsafe(24)
        self.state = state
        self.log_path = state / "pytriton.log"
        self.argv = [str(python), "-m", SERVER_MODULE, "--grpc-port", str(self.grpc_port),
                     "--http-port", str(self.http_port), "--metrics-port", str(self.metrics_port),
                     "--intra-op-threads", str(threads[0]), "--inter-op-threads", str(threads[1]),
                     "--workspace", str(state / "workspace")]
        for model in models:
            self.argv += ["--model", json.dumps(model)]
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def headers(self) -> dict[str, str]:
        return {TOKEN_HEADER: self.token}

    def processes(self) -> ProcessGroup:
        """The script (it runs the bound functions), tritonserver and the Python backend stubs."""
        assert self._process is not None
        return ProcessGroup(self._process.pid, include_root=True)

    def start(self, timeout_s: float) -> None:
        env = {**os.environ, "BENCH_TRITON_TOKEN": self.token}
        with self.log_path.open("wb") as out:
            self._process = subprocess.Popen(self.argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env,
                                             start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while READY not in self.log_path.read_text(errors="replace"):
            if self._process.poll() is not None or time.monotonic() > deadline:
                tail = "\n  ".join(self.log_path.read_text(errors="replace").splitlines()[-30:])
                raise RuntimeError(f"PyTriton did not come up:\n  {tail}")
            time.sleep(0.3)

    def server_version(self) -> str:
        from tensorgate.proto import grpc_service_pb2 as pb

        return str(call(self.url, "ServerMetadata", pb.ServerMetadataRequest(), self.headers).version)

    def stop(self, timeout_s: float = 60.0) -> int | None:
        return interrupt(self._process, timeout_s)


@contextmanager
def running_pytriton(python: Path, models: Sequence[dict[str, Any]], threads: tuple[int, int],
                     ready_timeout_s: float) -> Iterator[PyTritonPeer]:
    state = Path(tempfile.mkdtemp(prefix="tensorgate-pytriton-"))
    peer = PyTritonPeer(python, models, threads, state)
    ok = False
    try:
        log(f"starting PyTriton on {peer.url} for {', '.join(m['name'] for m in models)}")
        peer.start(ready_timeout_s)
        yield peer
        ok = True
    finally:
        log(f"PyTriton stopped (exit {peer.stop()})")
        if ok:
            shutil.rmtree(state, ignore_errors=True)
        else:
            log(f"PyTriton log kept in {peer.log_path}")
