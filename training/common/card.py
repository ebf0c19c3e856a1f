"""Model cards: one JSON file per model version, beside model.onnx.

A card says what the model is, what it was trained on (with the data's
checksum), how, how well it did, and how to reproduce it (the exact command
and library versions).
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

# Every card has these; each job adds its own fields beside them.
REQUIRED_FIELDS = (
    "name", "version", "inputs", "outputs", "architecture", "data",
    "training", "metrics", "export", "command",
)
_PACKAGES = ("torch", "onnx", "onnxruntime", "onnxscript", "numpy")


def plain_config(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed flags with paths (also inside lists) as strings: a job's `config`, kept in
    its card and its checkpoints, which torch.load(weights_only=True) reads back."""
    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return str(value) if isinstance(value, Path) else value

    return {k: plain(v) for k, v in vars(args).items()}


def command_line(module: str, argv: Sequence[str]) -> str:
    """The command that reruns a job started as `python -m module argv...`."""
    return shlex.join(["python", "-m", module, *argv])


def environment() -> dict[str, str]:
    """Python, platform and the versions of the libraries that shape the result."""
    versions: dict[str, str] = {"python": platform.python_version(),
                                "platform": platform.platform()}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "absent"
    return versions


def write_card(path: Path, card: Mapping[str, Any]) -> dict[str, Any]:
    """Add `environment` and `created_utc`, check the required fields, write
    pretty JSON; returns what was written."""
    missing = [field for field in REQUIRED_FIELDS if field not in card]
    if missing:
        raise ValueError(f"model card lacks {missing}")
    full = {
        **card,
        "environment": environment(),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(full, indent=2, allow_nan=False) + "\n")
    return full


def read_card(path: Path) -> dict[str, Any]:
    card: dict[str, Any] = json.loads(path.read_text())
    return card
