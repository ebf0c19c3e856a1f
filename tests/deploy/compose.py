"""Driving docker-compose.yml for real from the tests: a project of its own, an env file, health.

One Compose is one project (`-p`), so its containers, network and volumes never touch another
stack on the machine, and `down -v` removes exactly what it made.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"


def docker_engine() -> str | None:
    """None when a Docker engine answers and docker-compose is there, else why not."""
    if shutil.which("docker") is None:
        return "no docker client (apt-get install docker.io)"
    if shutil.which("docker-compose") is None:
        return "no docker-compose (apt-get install docker-compose)"
    try:
        info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                              timeout=20)
    except subprocess.TimeoutExpired:
        return "docker info did not answer in 20 s"
    if info.returncode != 0:
        return "no Docker engine is running (start dockerd; .ci/run does)"
    return None


@dataclass
class Timings:
    """Seconds per step, printed at the end of the session."""

    steps: list[tuple[str, float]] = field(default_factory=list)

    def add(self, name: str, started: float) -> float:
        seconds = time.monotonic() - started
        self.steps.append((name, seconds))
        return seconds

    def lines(self) -> list[str]:
        return [f"  {name:<58} {seconds:7.1f} s" for name, seconds in self.steps]


class Compose:
    """docker-compose -p PROJECT --env-file ENV -f docker-compose.yml ..."""

    def __init__(self, project: str, env_file: Path) -> None:
        self.project = project
        self.env_file = env_file

    def run(self, *args: str, timeout_s: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = ["docker-compose", "-p", self.project, "--env-file", str(self.env_file), "-f", str(COMPOSE_FILE), *args]
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(cmd[5:])} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def containers(self, service: str | None = None, everything: bool = False) -> list[str]:
        """Container ids of the project (of one service), running ones unless everything."""
        filters = [f"label=com.docker.compose.project={self.project}"]
        if service:
            filters.append(f"label=com.docker.compose.service={service}")
        cmd = ["docker", "ps", "-q", *(["-a"] if everything else [])]
        for f in filters:
            cmd += ["--filter", f]
        return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=30).stdout.split()

    def inspect(self, container: str) -> dict:
        out = subprocess.run(["docker", "inspect", container], capture_output=True, text=True, check=True, timeout=30)
        return json.loads(out.stdout)[0]

    def health(self, container: str) -> str:
        state = self.inspect(container)["State"]
        if not state["Running"]:
            return "exited"
        return str(state.get("Health", {}).get("Status", "running"))

    def wait_healthy(self, services: Sequence[str], timeout_s: float, replicas: dict[str, int] | None = None) -> None:
        """Until every container of these services reports healthy (or runs, with no health check)."""
        deadline = time.monotonic() + timeout_s
        while True:
            states = {}
            for service in services:
                ids = self.containers(service)
                want = (replicas or {}).get(service, 1)
                states[service] = [self.health(c) for c in ids] if len(ids) >= want else ["missing"]
            if all(s and all(h in ("healthy", "running") for h in hs) for s, hs in states.items()):
                return
            if time.monotonic() > deadline:
                logs = self.run("logs", "--tail", "30", *services, check=False).stdout[-6000:]
                raise AssertionError(f"not healthy after {timeout_s:.0f} s: {states}\n{logs}")
            time.sleep(1)

    def exec_python(self, container: str, code: str, timeout_s: float = 30) -> str:
        out = subprocess.run(["docker", "exec", container, "python", "-c", code], capture_output=True, text=True,
                             timeout=timeout_s)
        if out.returncode != 0:
            raise AssertionError(f"python in {container} failed: {out.stderr}")
        return out.stdout

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, volumes and networks of the project that still exist."""
        label = f"label=com.docker.compose.project={self.project}"
        found = {"containers": self.containers(everything=True)}
        for kind in ("volume", "network"):
            out = subprocess.run(["docker", kind, "ls", "-q", "--filter", label], capture_output=True, text=True,
                                 check=True, timeout=30)
            found[kind + "s"] = out.stdout.split()
        return found
