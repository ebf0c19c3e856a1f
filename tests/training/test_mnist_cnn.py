"""The CNN training job end to end on a generated data set (no network), and the shipped CNN."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from tests.support import REPO_ROOT
from training.mnist import cnn as mnist_cnn
from training.common.card import REQUIRED_FIELDS
from training.common.checkpoint import build_model, load_checkpoint
from training.common.export import WithSoftmax, check_onnx

SHIPPED = REPO_ROOT / "models" / "mnist_cnn"


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("mnist_cnn")
    out_dir, run_dir = root / "models", root / "run"
    card = mnist_cnn.main(["--dry-run", "--synthetic", "--out-dir", str(out_dir), "--run-dir", str(run_dir),
                           "--threads", "2", "--device", "cpu", "--quiet"])
    return out_dir, run_dir, card


def test_layers_are_conv32_pool_conv64_pool_dense_10() -> None:
    net = mnist_cnn.Net()
    kinds = [type(m) for m in (*net.features, *net.classifier)]
    assert kinds == [nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Conv2d, nn.ReLU, nn.MaxPool2d,
                     nn.Flatten, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 32), (32, 64)]
    assert net.classifier[1].in_features == 64 * 7 * 7 and net.classifier[-1].out_features == 10
    assert net(torch.rand(5, 1, 28, 28)).shape == (5, 10)


def test_onnx_passes_checker_and_matches_torch(dry_run: tuple[Path, Path, dict[str, Any]]) -> None:
    out_dir, run_dir, card = dry_run
    onnx_path = out_dir / "mnist_cnn" / "1" / "model.onnx"
    proto = check_onnx(onnx_path)
    (image,), (probabilities,) = proto.graph.input, proto.graph.output
    assert image.name == "image" and probabilities.name == "probabilities"
    assert 0 <= card["export"]["parity_max_abs_diff"] <= 1e-5
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "epoch_001.pt")
    model = WithSoftmax(build_model(checkpoint))
    x = torch.rand(7, 1, 28, 28)  # a batch size the job did not use
    (got,) = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})
    with torch.inference_mode():
        want = model(x).numpy()
    assert got.shape == (7, 10) and np.abs(got - want).max() <= 1e-5


def test_repository_entry_and_card(dry_run: tuple[Path, Path, dict[str, Any]]) -> None:
    out_dir, _, card = dry_run
    assert (out_dir / "mnist_cnn" / "config.pbtxt").read_text() == mnist_cnn.CONFIG.render()
    written = json.loads((out_dir / "mnist_cnn" / "1" / "card.json").read_text())
    assert written == card and all(field in written for field in REQUIRED_FIELDS)
    assert written["architecture"]["parameters"] == sum(p.numel() for p in mnist_cnn.Net().parameters())
    assert written["command"].startswith("python -m training.mnist cnn --dry-run --synthetic")
    assert written["training"]["processes"] == 1
    assert written["regularisation"]["real_life_augmentation"]["prob"] == 0.5


@pytest.mark.skipif(not SHIPPED.exists(), reason="models/mnist_cnn not trained yet (make train-cnn)")
def test_shipped_model_meets_the_bar_and_reads_the_samples() -> None:
    card = json.loads((SHIPPED / "1" / "card.json").read_text())
    assert card["metrics"]["test_accuracy"] >= 0.993
    assert card["data"]["splits"] == {"train": 50_000, "val": 10_000, "test": 10_000}
    per_epoch = card["metrics"]["per_epoch"]
    assert card["selection"]["best_epoch"] == max(per_epoch, key=lambda m: (m["val_accuracy"], -m["val_loss"]))["epoch"]
    assert (SHIPPED / "1" / "model.onnx").stat().st_size <= 10_000_000
    assert (SHIPPED / "config.pbtxt").read_text() == mnist_cnn.CONFIG.render()

    from services.client import load_digit

    samples = sorted((REPO_ROOT / "samples" / "mnist").glob("*.png"))
    images = np.stack([load_digit(p) for p in samples])  # (10, 1, 28, 28)
    labels = [int(re.search(r"label(\d)", p.name).group(1)) for p in samples]  # type: ignore[union-attr]
    session = ort.InferenceSession(str(SHIPPED / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(None, {"image": images.astype(np.float32)})
    assert probabilities.argmax(axis=1).tolist() == labels
