"""What the page says about the machine and the software a run used."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path


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


def memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return 0.0


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


def machine_line() -> str:
    load = os.getloadavg()
    return (f"{nproc()} CPUs (nproc), {cpu_model()}, {memory_gib():.0f} GiB RAM, {platform.system()} "
            f"{platform.release()}; load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min)")


def versions_line() -> str:
    return (f"Python {platform.python_version()}, onnxruntime {version('onnxruntime')}"
            + (f" (onnxruntime-gpu {version('onnxruntime-gpu')})" if version("onnxruntime-gpu") != "not installed" else "")
            + f", numpy {version('numpy')}, grpcio {version('grpcio')}, perf_analyzer from tritonclient "
            f"{version('tritonclient')}, redis-server {redis_version()}, sacrebleu {version('sacrebleu')}")


def short_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
