"""What the page says about the machine and the software a run used."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path


def cpu_model(cpuinfo: str | None = None) -> str:
    """The first CPU's model name, with its family / model / stepping (a virtual machine may say
    only "AMD EPYC", and two generations of it differ ×2 in what one core computes)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return platform.processor() or "unknown"
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if fields:
                break  # the first processor's block only
            continue
        fields.setdefault(key.strip().lower(), value.strip())
    name = fields.get("model name") or platform.processor() or "unknown"
    if not {"cpu family", "model"} <= fields.keys():
        return name
    try:
        family, model = int(fields["cpu family"]), int(fields["model"])
    except ValueError:  # not the usual decimal fields: the name alone
        return name
    core = amd_core(family, model) if "amd" in (fields.get("vendor_id", "") + name).lower() else ""
    return (f"{name} (family {family} model {model}" + (f" stepping {fields['stepping']}" if "stepping" in fields else "")
            + (f", {core}" if core else "") + ")")


def amd_core(family: int, model: int) -> str:
    """AMD's core generation from the CPUID family and model, where it is unambiguous."""
    if family == 23:
        return "Zen 2" if model >= 0x30 else "Zen / Zen+"
    if family == 25:
        return "Zen 3" if model < 0x10 or 0x20 <= model < 0x60 else "Zen 4"
    if family == 26:
        return "Zen 5"
    return ""


MATMUL_PROBE = """
import time, numpy as np
a = np.random.default_rng(0).random((512, 512), dtype=np.float32)
a @ a
n, t = 0, time.perf_counter()
while time.perf_counter() - t < {seconds}:
    a @ a
    n += 1
print(n * 2 * 512 ** 3 / (time.perf_counter() - t) / 1e9)
"""


def matmul_gflops(seconds: float = 1.0) -> float:
    """fp32 GFLOP/s of one core on numpy's 512x512 matmul, in a child process whose BLAS has
    one thread: what this machine computes, to set pages from different hosts side by side. 0
    when it cannot be measured."""
    env = {**os.environ, **{k: "1" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}}
    try:
        out = subprocess.run([sys.executable, "-c", MATMUL_PROBE.format(seconds=seconds)], env=env,
                             capture_output=True, text=True, timeout=60 + seconds)
        return float(out.stdout.strip())
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return 0.0


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
    gflops = matmul_gflops()
    return (f"{nproc()} CPUs (nproc), {cpu_model()}, {memory_gib():.0f} GiB RAM, {platform.system()} "
            f"{platform.release()}; one core's fp32 matmul (numpy 512x512, 1 BLAS thread): "
            f"{f'{gflops:.0f} GFLOP/s' if gflops else 'not measured'}; load average at start "
            f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min)")


def versions_line() -> str:
    return (f"Python {platform.python_version()}, onnxruntime {version('onnxruntime')}"
            + (f" (onnxruntime-gpu {version('onnxruntime-gpu')})" if version("onnxruntime-gpu") != "not installed" else "")
            + f", numpy {version('numpy')}, grpcio {version('grpcio')}, perf_analyzer from tritonclient "
            f"{version('tritonclient')}, redis-server {redis_version()}, sacrebleu {version('sacrebleu')}")


def short_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
