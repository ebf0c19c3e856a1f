"""The images' build: the Dockerfiles (multi-stage, locked requirements with hashes, non-root,
never torch), and the helpers they run work (requirements from pyproject, protobuf
generation, the gRPC health check); the lock files pin every requirement of pyproject."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.unit.deploy_files import DOCKERFILE, DOCKERFILE_GPU, DOCKERIGNORE, LOCKS, ROOT


def test_dockerfiles() -> None:
    cpu = DOCKERFILE.read_text()
    gpu = DOCKERFILE_GPU.read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", cpu, re.M)
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:\S+-cudnn-runtime-", gpu, re.M)
    for text, extra in ((cpu, "cpu"), (gpu, "gpu")):
        assert len(re.findall(r"^FROM ", text, re.M)) >= 2, "multi-stage build"
        # Exactly the locked files, and pip's CA bundle only as a build secret (never a layer).
        assert f"-r /build/requirements-{extra}.lock" in text and "-r /build/requirements-tools.lock" in text
        assert text.count("--require-hashes") == 2
        assert "--mount=type=secret,id=pip_cert" in text
        assert not re.search(r"^# syntax=", text, re.M), "no frontend pulled from Docker Hub"
        assert "protos/generate.sh" in text
        assert re.search(r"^USER (?!root|0\b)\S+", text, re.M), "runs as a non-root user"
        assert "/app/models" in text
        instructions = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        assert "torch" not in instructions and "train" not in instructions, "serving images never install torch"
    assert 'CMD ["python", "-m", "services.gateway"]' in cpu
    # Everything the Dockerfiles copy from the context passes .dockerignore's whitelist.
    allowed = {line[1:].rstrip("/") for line in DOCKERIGNORE.read_text().splitlines() if line.startswith("!")}
    for needed in ("protos", "services", "models", "deploy/docker"):
        assert needed in allowed


def _requirements(*args: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "docker" / "requirements.py"), str(ROOT / "pyproject.toml"), *args],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout
    return [re.split(r"[\s\[<>=~!;]", line, maxsplit=1)[0].lower() for line in out.splitlines() if line.strip()]


def test_image_requirements_come_from_pyproject() -> None:
    cpu = _requirements("cpu")
    gpu = _requirements("gpu")
    assert "onnxruntime" in cpu and "onnxruntime-gpu" not in cpu
    assert "onnxruntime-gpu" in gpu and "onnxruntime" not in gpu
    for reqs in (cpu, gpu):
        assert {"grpcio", "redis", "prometheus-client", "pydantic-settings"} <= set(reqs)
        assert "torch" not in reqs and "grpcio-tools" not in reqs
    assert _requirements("--only", "dev", "grpcio-tools") == ["grpcio-tools"]


def _lock(path: Path) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (pinned versions, hashes) of a lock file (one entry per marker line)."""
    pins: dict[str, tuple[list[str], list[str]]] = {}
    text = path.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", line)
        assert match, f"{path.name}: not pinned with ==: {line}"
        versions, hashes = pins.setdefault(match.group(1).lower(), ([], []))
        versions.append(match.group(2))
        found = re.findall(r"--hash=sha256:([0-9a-f]{64})", line)
        assert found, f"{path.name}: {match.group(1)} has no hash"
        hashes += found
    return pins


@pytest.mark.parametrize("name, spec", [("cpu", ["cpu"]), ("gpu", ["gpu"]), ("tools", ["--only", "dev", "grpcio-tools"])])
def test_lock_files_pin_every_requirement(name: str, spec: list[str]) -> None:
    """Each lock satisfies pyproject's ranges (else: `make lock`)."""
    packaging = pytest.importorskip("packaging.requirements")
    sys.path.insert(0, str(ROOT / "deploy" / "docker"))
    try:
        from requirements import requirement_lines
    finally:
        sys.path.pop(0)
    pins = _lock(LOCKS[name])
    for line in requirement_lines(ROOT / "pyproject.toml", spec):
        req = packaging.Requirement(line)
        key = req.name.lower().replace("_", "-")
        assert key in pins, f"{req.name} is not in {LOCKS[name].name}: run `make lock`"
        for version in pins[key][0]:
            assert req.specifier.contains(version, prereleases=True), (
                f"{LOCKS[name].name} pins {req.name}=={version}, pyproject wants {req.specifier}: run `make lock`")
    assert "torch" not in pins


def test_protos_generate_script(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (dev extra) is needed to generate protobuf code")
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    (tmp_path / "tensorgate" / "proto").mkdir(parents=True)
    subprocess.run(
        ["sh", str(ROOT / "protos" / "generate.sh")], cwd=tmp_path, check=True, timeout=60,
        env={**os.environ, "PYTHON": sys.executable}, capture_output=True,
    )
    out = tmp_path / "tensorgate" / "proto"
    for name in ("model_config_pb2.py", "grpc_service_pb2.py", "grpc_service_pb2.pyi", "grpc_service_pb2_grpc.py"):
        assert (out / name).is_file(), name
    assert "from . import model_config_pb2 as" in (out / "grpc_service_pb2.py").read_text()
    assert "from . import grpc_service_pb2 as" in (out / "grpc_service_pb2_grpc.py").read_text()
    assert not re.search(r"^import \w+_pb2 as", (out / "grpc_service_pb2_grpc.py").read_text(), re.M)


def test_healthcheck_script() -> None:
    grpc = pytest.importorskip("grpc")
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    script = ROOT / "deploy" / "docker" / "healthcheck.py"

    def check(port: int) -> int:
        return subprocess.run([sys.executable, str(script), str(port)], capture_output=True, timeout=30).returncode

    server = grpc.server(__import__("concurrent.futures").futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert check(port) == 0
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert check(port) == 1
    finally:
        server.stop(None).wait()
    assert check(port) == 1  # nothing listening

