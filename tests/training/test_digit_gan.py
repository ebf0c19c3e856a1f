"""The conditional GAN job: seeded noise inside the graph, a dry run end to
end on generated data, and the shipped models/digit_gan entry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from training.gan import train as digit_gan
from training.common.card import REQUIRED_FIELDS
from training.common.checkpoint import build_model, load_checkpoint
from training.common.export import check_onnx

JUDGE = Path("models/mnist_mlp/1/model.onnx")  # committed; same contract as mnist_cnn
SHIPPED = Path("models/digit_gan")
PNG = b"\x89PNG\r\n\x1a\n"
EXTREME_SEEDS = [0, 1, -1, 7, -7, 2**31 - 1, 2**31, -(2**31), 2**62, 2**63 - 1, -(2**63)]


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# ------------------------------------------------------------ dry run


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    if not JUDGE.is_file():
        pytest.skip(f"{JUDGE} is not in this checkout")
    root = tmp_path_factory.mktemp("digit_gan")
    out_dir, run_dir = root / "models", root / "run"
    card = digit_gan.main(["--dry-run", "--synthetic", "--judge", str(JUDGE), "--out-dir",
                           str(out_dir), "--run-dir", str(run_dir), "--threads", "2",
                           "--device", "cpu", "--quiet"])
    return out_dir, run_dir, card


def test_dry_run_writes_the_repository_entry(dry_run: tuple[Path, Path, dict[str, Any]]) -> None:
    out_dir, run_dir, card = dry_run
    assert (out_dir / "digit_gan" / "config.pbtxt").read_text() == digit_gan.CONFIG.render()
    version_dir = out_dir / "digit_gan" / "1"
    assert sorted(p.name for p in version_dir.iterdir()) == [
        "card.json", "curves.png", "model.onnx", "samples.png"]
    for png in ("curves.png", "samples.png"):
        assert (version_dir / png).read_bytes()[:8] == PNG
    assert (run_dir / "samples" / "epoch_001.png").read_bytes()[:8] == PNG
    assert (version_dir / "model.onnx").stat().st_size < 10_000_000
    written = json.loads((version_dir / "card.json").read_text())
    assert written == card
    for field in REQUIRED_FIELDS:
        assert field in written
    metrics = written["metrics"]
    assert 0 <= metrics["test_agreement"] <= 1 and len(metrics["test_agreement_per_digit"]) == 10
    assert metrics["test_frechet"] > 0 and metrics["frechet_floor_real_train_vs_test"] >= 0
    assert metrics["test_images"] == 100 and metrics["test_epoch"] == 1
    assert written["selection"]["best_epoch"] == 1
    assert written["judge"]["onnx"] == str(JUDGE) and len(written["judge"]["sha256"]) == 64
    assert written["training"]["threads"] == 2 and written["training"]["seconds"] >= 0
    assert written["architecture"]["parameters"] > 0
    assert written["architecture"]["discriminator"]["parameters"] > 0
    assert len(written["data"]["sha256"]) == 64
    assert written["command"].startswith("python -m training.gan --dry-run --synthetic")
    assert 0 <= written["export"]["parity_max_abs_diff"] <= 1e-5


def test_checkpoint_rebuilds_the_generator(dry_run: tuple[Path, Path, dict[str, Any]]) -> None:
    _, run_dir, card = dry_run
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "epoch_001.pt")
    assert checkpoint.metrics["val_agreement"] == card["metrics"]["val_agreement_per_epoch"][0]
    generator = build_model(checkpoint)  # class found from the checkpoint alone
    assert isinstance(generator, digit_gan.Generator) and not generator.training
    assert (run_dir / "checkpoints" / "epoch_001.discriminator.pt").is_file()


def test_onnx_matches_the_generator(dry_run: tuple[Path, Path, dict[str, Any]]) -> None:
    out_dir, run_dir, _ = dry_run
    path = out_dir / "digit_gan" / "1" / "model.onnx"
    proto = check_onnx(path)
    assert [(i.name, i.type.tensor_type.elem_type) for i in proto.graph.input] == [
        ("digit", 7), ("seed", 7)]  # INT64
    (image,) = proto.graph.output
    dims = [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim]
    assert image.name == "image" and isinstance(dims[0], str) and dims[1:] == [1, 28, 28]
    generator = build_model(load_checkpoint(run_dir / "checkpoints" / "epoch_001.pt"))
    digits = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 3])
    seeds = torch.tensor(EXTREME_SEEDS)
    (got,) = session(path).run(None, {"digit": digits.numpy(), "seed": seeds.numpy()})
    with torch.inference_mode():
        want = generator(digits, seeds).numpy()
    assert got.shape == (11, 1, 28, 28) and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-5
    assert got.min() >= 0 and got.max() <= 1


# ------------------------------------------------------ shipped model


def test_shipped_model_is_deterministic_and_in_range() -> None:
    path = SHIPPED / "1" / "model.onnx"
    if not path.is_file():
        pytest.skip("models/digit_gan has not been trained yet")
    assert path.stat().st_size <= 10_000_000
    assert (SHIPPED / "config.pbtxt").read_text() == digit_gan.CONFIG.render()
    card = json.loads((SHIPPED / "1" / "card.json").read_text())
    assert card["name"] == "digit_gan" and card["training"]["dry_run"] is False
    run = session(path)
    digits = np.arange(10, dtype=np.int64).repeat(2)
    seeds = np.tile(np.array([42, -42], dtype=np.int64), 10)
    (images,) = run.run(None, {"digit": digits, "seed": seeds})
    (again,) = run.run(None, {"digit": digits[::-1].copy(), "seed": seeds[::-1].copy()})
    assert images.shape == (20, 1, 28, 28) and images.dtype == np.float32
    np.testing.assert_array_equal(images, again[::-1])  # same (digit, seed), same image
    assert images.min() >= 0 and images.max() <= 1
    assert np.abs(images[0::2] - images[1::2]).max() > 0.1  # the seed matters
    assert np.abs(images[0] - images[2]).max() > 0.1  # and so does the digit


def test_help_documents_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        digit_gan.parse_args(["--help"])
    out = capsys.readouterr().out
    for flag in ("--epochs", "--max-seconds", "--batch-size", "--lr", "--z-dim", "--seed",
                 "--device", "--threads", "--data-dir", "--synthetic", "--dry-run",
                 "--out-dir", "--run-dir", "--judge", "--spectral-norm", "--aux-weight"):
        assert flag in out
