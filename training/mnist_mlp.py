"""Train the MNIST multi-layer perceptron and publish it to the model repository.

    python -m training.mnist_mlp                         # full run
    python -m training.mnist_mlp --dry-run --synthetic   # seconds, no download

Every epoch is checkpointed under --run-dir; the epoch with the best
validation accuracy is reloaded, evaluated once on the test set, exported to
ONNX (softmax inside the graph), checked for parity with PyTorch and written
to --out-dir/mnist_mlp/ with its config.pbtxt, model card and curves.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from training.common.card import command_line, write_card
from training.common.checkpoint import build_model, load_checkpoint, save_checkpoint
from training.common.export import DEFAULT_OPSET, WithSoftmax, export_and_verify
from training.common.plots import plot_curves
from training.common.repository import DynamicBatching, ModelConfig, TensorConfig, write_entry
from training.common.runtime import pick_device, seed_everything, set_threads
from training.data.mnist import MnistSplits, load_mnist
from training.data.synthetic import synthetic_mnist

NAME = "mnist_mlp"
CONFIG = ModelConfig(
    name=NAME,
    max_batch_size=64,
    inputs=(TensorConfig("image", "TYPE_FP32", (1, 28, 28)),),
    outputs=(TensorConfig("probabilities", "TYPE_FP32", (10,)),),
    batching=DynamicBatching(
        preferred_batch_sizes=(16, 32, 64),
        max_queue_delay_microseconds=2000,
        max_queue_size=1024,
        default_timeout_microseconds=5_000_000,
    ),
)
PARITY_IMAGES, PARITY_BATCH, PARITY_TOLERANCE = 1000, 250, 1e-5


class Net(nn.Module):
    """flatten -> [Linear -> ReLU -> Dropout] per hidden size -> Linear to logits."""

    def __init__(self, hidden_sizes: Sequence[int] = (1024, 512), dropout: float = 0.2,
                 in_features: int = 28 * 28, classes: int = 10) -> None:
        super().__init__()
        # Kept so a checkpoint can rebuild this exact network.
        self.init_args = {"hidden_sizes": list(hidden_sizes), "dropout": dropout,
                          "in_features": in_features, "classes": classes}
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)  # (B, 1, 28, 28) -> (B, 784) -> ... -> logits (B, 10)

    def describe(self) -> str:
        return " -> ".join(str(layer) for layer in self.layers) + " (softmax added at export)"


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 28, 28) -> float32 (B, 1, 28, 28) in 0..1, the served input."""
    return images.unsqueeze(1).float().div_(255.0)


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Move each image by its own random offset of up to max_shift px per axis,
    filling with black. x: (B, 1, H, W) -> (B, 1, H, W)."""
    if max_shift <= 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)  # (B, 1, H + 2s, W + 2s)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, b), generator=generator).to(x.device)
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded[batch, 0, rows[:, :, None], cols[:, None, :]].unsqueeze(1)


def train(args: argparse.Namespace, model: nn.Module, device: torch.device,
          images: torch.Tensor, labels: torch.Tensor, optimizer: torch.optim.Optimizer,
          scheduler: torch.optim.lr_scheduler.LRScheduler, generator: torch.Generator
          ) -> tuple[float, float]:
    """One epoch over shuffled mini-batches; returns (mean loss, accuracy)."""
    model.train()
    order = torch.randperm(len(images), generator=generator).to(device)
    total_loss, correct = 0.0, 0
    for start in range(0, len(images), args.batch_size):
        index = order[start:start + args.batch_size]
        x = random_shift(to_input(images[index]), args.shift, generator)  # (B, 1, 28, 28)
        y = labels[index]  # (B,)
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)  # (B, 10)
        loss = F.cross_entropy(logits, y, label_smoothing=args.label_smoothing)
        loss.backward()
        optimizer.step()
        scheduler.step()  # the schedule is per step, so it is smooth within an epoch
        total_loss += loss.item() * len(index)
        correct += int((logits.argmax(dim=1) == y).sum())
    return total_loss / len(images), correct / len(images)


def test(model: nn.Module, device: torch.device, images: torch.Tensor,
         labels: torch.Tensor, batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy and accuracy, dropout off."""
    model.eval()
    total_loss, correct = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            logits = model(to_input(images[start:start + batch_size].to(device)))
            y = labels[start:start + batch_size].to(device)
            total_loss += F.cross_entropy(logits, y, reduction="sum").item()
            correct += int((logits.argmax(dim=1) == y).sum())
    return total_loss / len(images), correct / len(images)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.mnist_mlp", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=30, help="training epochs (default: 30)")
    p.add_argument("--batch-size", type=int, default=128, help="mini-batch size (default: 128)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam's peak learning rate (default: 1e-3)")
    p.add_argument("--schedule", choices=("cosine", "constant"), default="cosine",
                   help="learning-rate schedule over all steps (default: cosine, to 0)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="Adam weight decay (default: 0)")
    p.add_argument("--hidden", type=int, nargs="+", default=[1024, 512],
                   help="hidden layer widths (default: 1024 512)")
    p.add_argument("--dropout", type=float, default=0.2,
                   help="dropout after each hidden layer (default: 0.2)")
    p.add_argument("--shift", type=int, default=2,
                   help="augmentation: random shift of up to this many px per axis, 0 = off (default: 2)")
    p.add_argument("--label-smoothing", type=float, default=0.0,
                   help="cross-entropy label smoothing (default: 0)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto",
                   help="where to train (default: auto = cuda if available)")
    p.add_argument("--threads", type=int, default=2,
                   help="torch intra-op threads, 0 = torch's default (default: 2)")
    p.add_argument("--data-dir", type=Path, default=Path("data/mnist"),
                   help="MNIST cache folder, fetched when missing (default: data/mnist)")
    p.add_argument("--synthetic", action="store_true",
                   help="use a tiny generated data set instead of MNIST (tests, no network)")
    p.add_argument("--dry-run", action="store_true",
                   help="tiny subset and 1 epoch; writes to temporary folders unless "
                        "--out-dir/--run-dir are given")
    p.add_argument("--out-dir", type=Path, default=None,
                   help="model repository root (default: models)")
    p.add_argument("--run-dir", type=Path, default=None,
                   help="checkpoints, history and curves (default: runs/mnist_mlp)")
    p.add_argument("--version", type=int, default=1, help="model version folder (default: 1)")
    return p.parse_args(argv)


def load_data(args: argparse.Namespace) -> MnistSplits:
    data = synthetic_mnist(seed=args.seed) if args.synthetic else load_mnist(args.data_dir)
    if args.dry_run:  # keep enough test images for the parity check
        data = MnistSplits(data.train_x[:512], data.train_y[:512], data.val_x[:256],
                           data.val_y[:256], data.test_x[:PARITY_IMAGES],
                           data.test_y[:PARITY_IMAGES], data.source + " (dry-run subset)")
    return data


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the job; returns the model card it wrote."""
    args = parse_args(argv)
    if args.dry_run:
        args.epochs = 1
        scratch = Path(tempfile.mkdtemp(prefix="mnist_mlp-dry-run-"))
        args.out_dir = args.out_dir or scratch / "models"
        args.run_dir = args.run_dir or scratch / "run"
    args.out_dir = args.out_dir or Path("models")
    args.run_dir = args.run_dir or Path("runs") / NAME
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    command = command_line("training.mnist_mlp", argv if argv is not None else sys.argv[1:])

    set_threads(args.threads)
    generator = seed_everything(args.seed)
    device = pick_device(args.device)
    data = load_data(args)
    train_x, train_y = torch.from_numpy(data.train_x).to(device), torch.from_numpy(data.train_y).to(device)
    val_x, val_y = torch.from_numpy(data.val_x), torch.from_numpy(data.val_y)

    model = Net(args.hidden, args.dropout).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps = args.epochs * -(-len(train_x) // args.batch_size)
    scheduler: torch.optim.lr_scheduler.LRScheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        if args.schedule == "cosine" else torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0))
    print(f"{NAME}: {sum(p.numel() for p in model.parameters()):,} parameters on {device}; "
          f"data {data.source}", flush=True)

    history: list[dict[str, float]] = []
    checkpoints = args.run_dir / "checkpoints"
    started = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        tick = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        train_loss, train_acc = train(args, model, device, train_x, train_y, optimizer, scheduler, generator)
        val_loss, val_acc = test(model, device, val_x, val_y)
        metrics = {"epoch": epoch, "lr": lr, "train_loss": train_loss, "train_accuracy": train_acc,
                   "val_loss": val_loss, "val_accuracy": val_acc,
                   "seconds": time.perf_counter() - tick}
        history.append(metrics)
        save_checkpoint(checkpoints / f"epoch_{epoch:03d}.pt", model, model.init_args,
                        config, metrics, epoch)
        (args.run_dir / "history.json").write_text(json.dumps(history, indent=1))
        print(f"epoch {epoch:3d}/{args.epochs} lr {lr:.2e} | train loss {train_loss:.4f} "
              f"acc {train_acc:.2%} | val loss {val_loss:.4f} acc {val_acc:.2%} "
              f"| {metrics['seconds']:.1f}s", flush=True)
    train_seconds = time.perf_counter() - started

    # Select on validation only (ties: lower validation loss); test that epoch once.
    best = max(history, key=lambda m: (m["val_accuracy"], -m["val_loss"]))
    best_epoch = int(best["epoch"])
    checkpoint = load_checkpoint(checkpoints / f"epoch_{best_epoch:03d}.pt")
    model = build_model(checkpoint, Net)
    test_loss, test_acc = test(model, torch.device("cpu"), torch.from_numpy(data.test_x),
                               torch.from_numpy(data.test_y))
    print(f"best epoch {best_epoch}: val acc {best['val_accuracy']:.2%}, "
          f"test acc {test_acc:.2%} (loss {test_loss:.4f})", flush=True)

    onnx_path = args.run_dir / "model.onnx"
    parity_images = to_input(torch.from_numpy(data.test_x[:PARITY_IMAGES]))  # (N, 1, 28, 28)
    parity_diff = export_and_verify(WithSoftmax(model), onnx_path, {"image": parity_images},
                                    ["probabilities"], batch_size=PARITY_BATCH,
                                    tolerance=PARITY_TOLERANCE)
    print(f"exported {onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB), "
          f"parity max |diff| {parity_diff:.2e} on {len(parity_images)} images", flush=True)

    curves = plot_curves(args.run_dir / "curves.png", {
        "loss": {"train": [m["train_loss"] for m in history],
                 "validation": [m["val_loss"] for m in history]},
        "accuracy": {"train": [m["train_accuracy"] for m in history],
                     "validation": [m["val_accuracy"] for m in history]},
    }, title=f"{NAME} (best epoch {best_epoch})")

    card = write_card(args.run_dir / "card.json", {
        "name": NAME,
        "version": args.version,
        "description": "MNIST digit classifier, multi-layer perceptron.",
        "inputs": [{"name": "image", "data_type": "FP32", "shape": [-1, 1, 28, 28],
                    "range": "0..1 (pixel / 255), white digit on black"}],
        "outputs": [{"name": "probabilities", "data_type": "FP32", "shape": [-1, 10],
                     "note": "softmax over digits 0-9, computed inside the graph"}],
        "architecture": {"summary": model.describe(), "class": checkpoint.model_class,
                         "model_args": checkpoint.model_args,
                         "parameters": sum(p.numel() for p in model.parameters())},
        "regularisation": {"dropout": args.dropout, "weight_decay": args.weight_decay,
                           "label_smoothing": args.label_smoothing,
                           "augmentation": (f"random shift of up to +-{args.shift} px per axis, "
                                            "per image, black fill") if args.shift else "none"},
        "data": {"name": "synthetic" if args.synthetic else "MNIST", "source": data.source,
                 "sha256": data.sha256(),
                 "sha256_of": "split arrays: name, dtype, shape, bytes (MnistSplits.sha256)",
                 "splits": {s: len(getattr(data, f"{s}_y")) for s in ("train", "val", "test")}},
        "training": {"optimizer": "Adam", "lr": args.lr, "schedule": args.schedule,
                     "schedule_unit": "step", "epochs": args.epochs, "batch_size": args.batch_size,
                     "seed": args.seed, "device": str(device), "threads": torch.get_num_threads(),
                     "seconds": round(train_seconds, 1), "dry_run": args.dry_run},
        "selection": {"criterion": "highest validation accuracy (ties: lower validation loss)",
                      "best_epoch": best_epoch},
        "metrics": {"test_accuracy": test_acc, "test_loss": test_loss, "test_epoch": best_epoch,
                    "val_accuracy": best["val_accuracy"],
                    "val_accuracy_per_epoch": [m["val_accuracy"] for m in history],
                    "per_epoch": history},
        "export": {"format": "onnx", "file": "model.onnx", "opset": DEFAULT_OPSET,
                   "bytes": onnx_path.stat().st_size, "dynamic_batch": True,
                   "parity_max_abs_diff": parity_diff, "parity_images": len(parity_images),
                   "parity_batch_size": PARITY_BATCH, "parity_tolerance": PARITY_TOLERANCE},
        "command": command,
    })
    version_dir = write_entry(args.out_dir, CONFIG, args.version, {
        "model.onnx": onnx_path, "card.json": args.run_dir / "card.json", "curves.png": curves})
    print(f"wrote {version_dir} and {args.out_dir / NAME / 'config.pbtxt'}", flush=True)
    return card


if __name__ == "__main__":
    main()
