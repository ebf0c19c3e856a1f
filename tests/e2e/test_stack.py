"""The local stack as a user starts it (`python -m services.stack`, what `make up` runs), on
the shipped model repository: it comes up, answers, and Ctrl-C drains and stops everything."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO_ROOT, free_port, start_stack

pytestmark = pytest.mark.integration


def stack_command(state: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "services.stack", "--port", str(free_port()), "--metrics-port", str(free_port()),
            "--model-base-port", str(free_port()), "--model-metrics-base-port", str(free_port()),
            "--redis-port", str(free_port()), "--prometheus-port", str(free_port()), "--state-dir", str(state),
            "--models", "mnist_mlp", *extra]


def test_stack_comes_up_classifies_the_samples_and_stops(tmp_path: Path) -> None:
    out = subprocess.run(stack_command(tmp_path, "--exit-after-demo"), cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "tensorgate is up" in out.stdout and "stopped." in out.stdout
    predictions = re.findall(r"test\d+_label(\d)\.png\s+->\s+(\d)", out.stdout)
    assert len(predictions) == 10
    assert all(label == predicted for label, predicted in predictions), out.stdout


def test_ctrl_c_drains_and_stops_every_process(tmp_path: Path) -> None:
    process, lines = start_stack(stack_command(tmp_path))
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=60)
    assert process.returncode == 0, "".join(lines) + rest
    assert "stopped." in rest
    # nothing is left listening: redis and the services are gone
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert leftovers.stdout.strip() == ""
