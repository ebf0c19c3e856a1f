"""The MLP training job end to end on a generated data set (no network)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from training.mnist import mlp as mnist_mlp
from training.common.card import REQUIRED_FIELDS
from training.common.checkpoint import build_model, load_checkpoint
from training.common.augment import Augmentation
from training.common.export import WithSoftmax, check_onnx
from training.mnist.inputs import augmentation_from, random_shift


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("mnist_mlp")
    out_dir, run_dir = root / "models", root / "run"
    card = mnist_mlp.main(["--dry-run", "--synthetic", "--out-dir", str(out_dir),
                           "--run-dir", str(run_dir), "--threads", "2", "--device", "cpu"])
    return out_dir, run_dir, card


def test_checkpoint_per_epoch_rebuilds_the_model(dry_run: tuple[Path, Path, dict[str, Any]]) -> None:
    _, run_dir, card = dry_run
    paths = sorted((run_dir / "checkpoints").glob("epoch_*.pt"))
    assert [p.name for p in paths] == ["epoch_001.pt"]
    checkpoint = load_checkpoint(paths[0])
    assert checkpoint.epoch == 1 and checkpoint.config["dry_run"] is True
    assert checkpoint.metrics["val_accuracy"] == card["metrics"]["val_accuracy_per_epoch"][0]
    model = build_model(checkpoint)  # class found from the checkpoint alone
    assert isinstance(model, mnist_mlp.Net) and not model.training
    assert model.init_args == checkpoint.model_args
    x = torch.rand(3, 1, 28, 28)
    assert model(x).shape == (3, 10)


def test_onnx_passes_checker_and_matches_torch(dry_run: tuple[Path, Path, dict[str, Any]]) -> None:
    out_dir, run_dir, card = dry_run
    onnx_path = out_dir / "mnist_mlp" / "1" / "model.onnx"
    proto = check_onnx(onnx_path)
    assert onnx_path.stat().st_size < 10_000_000
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (image,), (probabilities,) = proto.graph.input, proto.graph.output
    assert image.name == "image" and probabilities.name == "probabilities"
    dims = [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and dims[1:] == [1, 28, 28]
    assert 0 <= card["export"]["parity_max_abs_diff"] <= 1e-5

    # Independent re-check at a batch size the job did not use: batch 7.
    model = WithSoftmax(build_model(load_checkpoint(
        run_dir / "checkpoints" / f"epoch_{card['selection']['best_epoch']:03d}.pt")))
    x = torch.rand(7, 1, 28, 28)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"image": x.numpy()})
    with torch.inference_mode():
        want = model(x).numpy()
    assert got.shape == (7, 10) and got.dtype == np.float32
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(got - want).max() <= 1e-5


def test_repository_entry_and_card(dry_run: tuple[Path, Path, dict[str, Any]]) -> None:
    out_dir, _, card = dry_run
    assert (out_dir / "mnist_mlp" / "config.pbtxt").read_text() == mnist_mlp.CONFIG.render()
    version_dir = out_dir / "mnist_mlp" / "1"
    assert (version_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    written = json.loads((version_dir / "card.json").read_text())
    assert written == card
    for field in REQUIRED_FIELDS:
        assert field in written
    metrics = written["metrics"]
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["test_epoch"] == written["selection"]["best_epoch"] == 1
    assert len(metrics["val_accuracy_per_epoch"]) == 1
    assert len(written["data"]["sha256"]) == 64
    assert written["data"]["splits"] == {"train": 512, "val": 256, "test": 1000}
    assert written["architecture"]["parameters"] == 784 * 1024 + 1024 + 1024 * 512 + 512 + 512 * 10 + 10
    assert written["regularisation"]["dropout"] == 0.2
    augmentation = written["regularisation"]["real_life_augmentation"]
    assert augmentation["prob"] == 0.5 and augmentation["rotate"] > 0 and "elastic" in augmentation["summary"]
    assert written["command"].startswith("python -m training.mnist mlp --dry-run --synthetic")
    for package in ("torch", "onnx", "onnxruntime"):
        assert written["environment"][package] != "absent"
    assert written["training"]["seconds"] >= 0


def test_best_epoch_is_chosen_on_validation(tmp_path: Path) -> None:
    card = mnist_mlp.main(["--synthetic", "--epochs", "2", "--lr", "3e-3", "--out-dir",
                           str(tmp_path / "models"), "--run-dir", str(tmp_path / "run"),
                           "--device", "cpu"])
    per_epoch = card["metrics"]["per_epoch"]
    assert len(list((tmp_path / "run" / "checkpoints").glob("epoch_*.pt"))) == 2
    best = max(per_epoch, key=lambda m: (m["val_accuracy"], -m["val_loss"]))
    assert card["selection"]["best_epoch"] == best["epoch"]
    assert card["metrics"]["val_accuracy"] == best["val_accuracy"]


def test_random_shift_moves_content_within_bounds() -> None:
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 13, 13] = 1.0  # one bright pixel in the middle
    shifted = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert shifted.shape == x.shape
    assert torch.all(shifted.sum(dim=(1, 2, 3)) == 1.0)  # nothing lost or added
    rows, cols = shifted[:, 0].nonzero()[:, 1], shifted[:, 0].nonzero()[:, 2]
    assert rows.min() >= 11 and rows.max() <= 15 and cols.min() >= 11 and cols.max() <= 15
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 5  # offsets differ per image


def test_real_life_augmentation_transforms_each_image_its_own_way() -> None:
    x = torch.zeros(32, 1, 28, 28)
    x[:, :, 6:22, 12:16] = 1.0  # a bar, like a 1
    augment = Augmentation(prob=1.0)
    y = augment(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert 0.0 <= float(y.min()) and float(y.max()) <= 1.0
    assert torch.allclose(y.amax(dim=(1, 2, 3)), torch.ones(32), atol=1e-5)  # ink as bright as before
    changed = (y - x).abs().sum(dim=(1, 2, 3))
    assert bool((changed > 1.0).all())  # every image transformed
    assert len({round(float(c), 3) for c in changed}) == 32  # each its own way
    # Mass stays near the centre (small translation), the bar is still there.
    ys = torch.arange(28.0).view(1, 1, 28, 1)
    centre = (y * ys).sum(dim=(1, 2, 3)) / y.sum(dim=(1, 2, 3))
    assert bool(((centre - 13.5).abs() < 3).all())
    again = augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(y, again)  # the seed decides
    assert torch.equal(Augmentation(prob=0.0)(x, torch.Generator()), x)
    half = Augmentation(prob=0.5)(x, torch.Generator().manual_seed(1))
    untouched = int(((half - x).abs().sum(dim=(1, 2, 3)) == 0).sum())
    assert 4 <= untouched <= 28  # about half left as they are


def test_augmentation_flags_reach_the_job() -> None:
    args = mnist_mlp.parse_args(["--augment", "0.25", "--rotate", "5", "--elastic", "0", "--blur", "0.5"])
    augmentation = augmentation_from(args)
    assert (augmentation.prob, augmentation.rotate, augmentation.elastic, augmentation.blur) == (0.25, 5.0, 0.0, 0.5)
    assert augmentation_from(mnist_mlp.parse_args(["--augment", "0"])).describe() == "none"


def test_help_documents_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        mnist_mlp.parse_args(["--help"])
    out = capsys.readouterr().out
    for flag in ("--seed", "--epochs", "--batch-size", "--lr", "--device", "--dry-run",
                 "--out-dir", "--run-dir", "--synthetic", "--augment", "--rotate", "--scale", "--shear",
                 "--translate", "--elastic", "--thickness", "--blur"):
        assert flag in out
