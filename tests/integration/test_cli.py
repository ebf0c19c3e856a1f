"""The `tensorgate` console script against the real gateway: exit status 0 (success), 1 (the
server refused, message on stderr), 2 (usage), --help on every command. Commands that need the
shipped models answering (classify, translate, generate) succeed in tests/e2e/test_typed_api.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tensorgate.cli import main
from tests.integration.conftest import Stack
from tests.support import start_gateway

pytestmark = pytest.mark.integration

COMMANDS = ("classify", "translate", "generate", "models", "stats")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse: --help (0) and usage errors (2)
        code = int(exit_.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_console_script_is_installed_and_helps() -> None:
    script = Path(sys.executable).parent / "tensorgate"
    for argv in ([], *([c] for c in COMMANDS)):
        out = subprocess.run([str(script), *argv, "--help"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "usage: tensorgate" in out.stdout
        if argv:
            assert "--url" in out.stdout and "--api-key" in out.stdout


def test_models_and_stats(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"127.0.0.1:{stack.gateway.grpc_port}"
    code, out, _ = run(capsys, "models", "--url", url)
    assert code == 0
    assert any(line.split() == ["mnist_mlp", "1", "READY"] for line in out.splitlines())
    # Not ready, and why (the gateway's RepositoryIndex reason).
    assert "orphan                     1  UNAVAILABLE  (no replica is serving this model)" in out.splitlines()
    code, out, _ = run(capsys, "stats", "mnist_mlp", "--url", url)
    assert code == 0 and out.splitlines()[1].split()[0] == "mnist_mlp"
    code, out, _ = run(capsys, "stats", "--url", url)
    assert code == 0 and {"mnist_mlp", "orphan"} <= {line.split()[0] for line in out.splitlines()[1:]}


def test_refusals_exit_1_with_the_message_on_stderr(stack: Stack, capsys: pytest.CaptureFixture[str],
                                                    tmp_path: Path) -> None:
    url = f"127.0.0.1:{stack.gateway.grpc_port}"
    photo = tmp_path / "seven.png"
    Image.fromarray(np.full((40, 30), 255, np.uint8)).save(photo)
    for argv, message in [
        (("stats", "nope"), "NOT_FOUND: unknown model 'nope'"),
        # The tiny classifiers take raw pixels only: the gateway names the input it does not know.
        (("classify", "--model", "mnist_mlp", str(photo)), "INVALID_ARGUMENT: images[0]: unexpected input 'image_bytes'"),
        (("translate", "Ja."), "NOT_FOUND: unknown model 'translator_de_en'"),
        (("generate", "3", "-o", str(tmp_path / "grid.png")), "NOT_FOUND: unknown model 'digit_gan'"),
    ]:
        code, out, err = run(capsys, *argv, "--url", url)
        assert code == 1 and out == "", err
        assert message in err
    assert not (tmp_path / "grid.png").exists()
    code, _, err = run(capsys, "models", "--url", "127.0.0.1:1", "--timeout", "2")  # nothing listens
    assert code == 1 and "UNAVAILABLE" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for argv in (["frobnicate"], ["classify"], ["classify", "--bogus", "x.png"], ["generate"], ["generate", "seven"],
                 ["translate", "--beam-size", "wide", "Ja."], []):
        code, _, err = run(capsys, *argv)
        assert code == 2, argv
        assert "usage: tensorgate" in err
    code, _, err = run(capsys, "classify", str(tmp_path / "missing.png"), "--url", "127.0.0.1:1")
    assert code == 2 and "cannot read" in err and "missing.png" in err
    code, _, err = run(capsys, "translate", "ab\udcffcd", "--url", "127.0.0.1:1")  # undecodable bytes in argv
    assert code == 2 and "not valid UTF-8" in err


def test_api_key_flag(stack: Stack, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    gateway = start_gateway(stack.repo, stack.redis.url, tmp_path, api_keys='["k3y"]')
    try:
        gateway.wait_serving()
        url = f"127.0.0.1:{gateway.grpc_port}"
        code, _, err = run(capsys, "models", "--url", url)
        assert code == 1 and "UNAUTHENTICATED" in err
        code, out, _ = run(capsys, "models", "--url", url, "--api-key", "k3y")
        assert code == 0 and "mnist_mlp" in out
    finally:
        gateway.stop()
