"""Triton's own client library, used unchanged against the gateway."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).with_name("triton_client_check.py")


def test_tritonclient_grpc_gets_correct_results(stack: Stack) -> None:
    onnx_path = stack.repo / "mnist_mlp" / "1" / "model.onnx"
    out = subprocess.run(
        [sys.executable, str(SCRIPT), f"127.0.0.1:{stack.gateway.grpc_port}", "mnist_mlp", str(onnx_path)],
        capture_output=True, text=True, timeout=60, check=True,
    )
    seen = json.loads(out.stdout)
    assert seen["live"] is True and seen["model_ready"] is True
    assert seen["ready"] is False  # the repository's `orphan` model has no replica, so the server is not fully ready
    assert "statistics" in seen["server"]["extensions"]
    assert seen["inputs"] == [{"name": "image", "datatype": "FP32", "shape": ["-1", "1", "28", "28"]}]
    assert seen["max_batch_size"] == 64
    assert seen["id"] == "t-1" and seen["shape"] == [5, 10]
    assert seen["max_abs_diff"] <= 1e-6
    assert seen["error"].startswith("StatusCode.INVALID_ARGUMENT") and "expected shape" in seen["error"]
    assert seen["success_count"] >= 1
