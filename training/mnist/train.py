"""The training job both MNIST classifiers share (`training.mnist_mlp`, `training.mnist_cnn`).

Each model module supplies a `ClassifierJob`: its network, its repository
config and its defaults. The job itself is the same: seed, load the 50k / 10k /
10k split, train with Adam over shuffled mini-batches (random-shift
and real-life augmentation (training.common.augment), label smoothing, cosine
schedule), checkpoint every epoch, pick
the epoch with the best validation accuracy, test that epoch once, export to
ONNX with the softmax inside, check parity, plot, and write the model card and
repository entry.

Run alone or under `torchrun --nproc_per_node N` (DistributedDataParallel with
a DistributedSampler, gloo on the CPU, nccl on CUDA): `--batch-size` is the
global batch, split evenly over the ranks, and rank 0 alone writes files.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from training.common.augment import Augmentation
from training.common.card import command_line, plain_config, write_card
from training.common.checkpoint import build_model, load_checkpoint, save_checkpoint
from training.common.distributed import Dist, setup, unwrap
from training.common.export import DEFAULT_OPSET, WithSoftmax, export_and_verify
from training.common.plots import plot_curves
from training.common.repository import DynamicBatching, ModelConfig, TensorConfig, write_entry
from training.common.runtime import add_mnist_run_args, seed_everything, set_threads
from training.data.mnist import MnistSplits, load_mnist
from training.data.synthetic import synthetic_mnist

PARITY_IMAGES, PARITY_BATCH, PARITY_TOLERANCE = 1000, 250, 1e-5


def classifier_config(name: str) -> ModelConfig:
    """The served contract both classifiers share: `image` FP32 [-1,1,28,28] -> `probabilities` [-1,10],
    or instead of `image`, `image_bytes`: one encoded image file (PNG, JPEG, BMP, GIF, WebP) per
    row, which the `classifier` runner prepares the way MNIST was made (tensorgate.digits)."""
    return ModelConfig(
        name=name,
        max_batch_size=64,
        inputs=(TensorConfig("image", "TYPE_FP32", (1, 28, 28), optional=True),
                TensorConfig("image_bytes", "TYPE_STRING", (1,), reshape=(), optional=True)),
        outputs=(TensorConfig("probabilities", "TYPE_FP32", (10,)),),
        batching=DynamicBatching(
            preferred_batch_sizes=(16, 32, 64),
            max_queue_delay_microseconds=2000,
            max_queue_size=1024,
            default_timeout_microseconds=5_000_000,
        ),
        parameters={"runner": "classifier"},
    )


@dataclass(frozen=True)
class ClassifierJob:
    """What differs between the MNIST classifiers; everything else is shared."""

    name: str
    description: str  # one line for the card
    doc: str  # the model module's docstring, shown by --help
    config: ModelConfig
    net_class: type[nn.Module]
    add_model_args: Callable[[argparse.ArgumentParser], None]
    make_net: Callable[[argparse.Namespace], nn.Module]
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def module(self) -> str:
        return f"training.{self.name}"

    def parse_args(self, argv: Sequence[str] | None = None) -> argparse.Namespace:
        return parse_args(self, argv)

    def main(self, argv: Sequence[str] | None = None) -> dict[str, Any]:
        return main(self, argv)


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


def augmentation_from(args: argparse.Namespace) -> Augmentation:
    return Augmentation(prob=args.augment, rotate=args.rotate, scale=args.scale, shear=args.shear,
                        translate=args.translate, elastic=args.elastic, thickness=args.thickness,
                        blur=args.blur)


def train(args: argparse.Namespace, model: nn.Module, dist: Dist, sampler: DistributedSampler,
          images: torch.Tensor, labels: torch.Tensor, optimizer: torch.optim.Optimizer,
          scheduler: torch.optim.lr_scheduler.LRScheduler, generator: torch.Generator,
          epoch: int) -> tuple[float, float]:
    """One epoch over this rank's shard in shuffled mini-batches; returns this
    rank's (mean loss, accuracy) on the augmented training images."""
    model.train()
    augmentation = augmentation_from(args)
    sampler.set_epoch(epoch)  # same permutation on every rank, a different one each epoch
    order = torch.tensor(list(sampler), device=dist.device)
    per_rank_batch = max(1, args.batch_size // dist.world_size)
    total_loss, correct = 0.0, 0
    batches = range(0, len(order), per_rank_batch)
    for start in tqdm(batches, desc=f"epoch {epoch}", unit="batch", leave=False,
                      disable=not dist.is_main or args.quiet):
        index = order[start:start + per_rank_batch]
        x = random_shift(to_input(images[index]), args.shift, generator)  # (B, 1, 28, 28)
        x = augmentation(x, generator)
        y = labels[index]  # (B,)
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)  # (B, 10)
        loss = F.cross_entropy(logits, y, label_smoothing=args.label_smoothing)
        loss.backward()  # under DDP this also all-reduces the gradients
        optimizer.step()
        scheduler.step()  # the schedule is per step, so it is smooth within an epoch
        total_loss += loss.item() * len(index)
        correct += int((logits.argmax(dim=1) == y).sum())
    return total_loss / len(order), correct / len(order)


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


def parse_args(job: ClassifierJob, argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m {job.module}", description=job.doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = {"epochs": 30, "batch_size": 128, "lr": 1e-3, "shift": 2, "label_smoothing": 0.0,
         "weight_decay": 0.0, "augment": 0.5, **job.defaults}
    p.add_argument("--epochs", type=int, default=d["epochs"], help=f"training epochs (default: {d['epochs']})")
    p.add_argument("--batch-size", type=int, default=d["batch_size"],
                   help=f"global mini-batch size, split over torchrun ranks (default: {d['batch_size']})")
    p.add_argument("--lr", type=float, default=d["lr"], help=f"Adam's peak learning rate (default: {d['lr']})")
    p.add_argument("--schedule", choices=("cosine", "constant"), default="cosine",
                   help="learning-rate schedule over all steps (default: cosine, to 0)")
    p.add_argument("--weight-decay", type=float, default=d["weight_decay"],
                   help=f"Adam weight decay (default: {d['weight_decay']})")
    job.add_model_args(p)
    p.add_argument("--shift", type=int, default=d["shift"],
                   help=f"augmentation: random shift of up to this many px per axis, 0 = off (default: {d['shift']})")
    aug = Augmentation()
    p.add_argument("--augment", type=float, default=d["augment"],
                   help="augmentation: share of training images given a random real-life transform "
                        "(the flags below), 0 = off (default: %(default)s)")
    p.add_argument("--rotate", type=float, default=aug.rotate,
                   help="augmentation: rotation, degrees either way (default: %(default)s)")
    p.add_argument("--scale", type=float, default=aug.scale,
                   help="augmentation: scale in 1 +- this (default: %(default)s)")
    p.add_argument("--shear", type=float, default=aug.shear,
                   help="augmentation: horizontal shear, degrees either way (default: %(default)s)")
    p.add_argument("--translate", type=float, default=aug.translate,
                   help="augmentation: sub-pixel translation, px either way per axis (default: %(default)s)")
    p.add_argument("--elastic", type=float, default=aug.elastic,
                   help="augmentation: largest elastic displacement, px (default: %(default)s)")
    p.add_argument("--thickness", type=float, default=aug.thickness,
                   help="augmentation: stroke weight, blend towards a 3x3 dilation or erosion "
                        "of up to this (default: %(default)s)")
    p.add_argument("--blur", type=float, default=aug.blur,
                   help="augmentation: largest Gaussian blur sigma, px, on half of the transformed "
                        "images (default: %(default)s)")
    p.add_argument("--label-smoothing", type=float, default=d["label_smoothing"],
                   help=f"cross-entropy label smoothing (default: {d['label_smoothing']})")
    add_mnist_run_args(p, device_note="; under torchrun each rank takes the GPU of its LOCAL_RANK",
                       threads_note=" per process")
    p.add_argument("--dry-run", action="store_true",
                   help="tiny subset and 1 epoch; writes to temporary folders unless "
                        "--out-dir/--run-dir are given")
    p.add_argument("--out-dir", type=Path, default=None,
                   help="model repository root (default: models)")
    p.add_argument("--run-dir", type=Path, default=None,
                   help=f"checkpoints, history and curves (default: runs/{job.name})")
    p.add_argument("--version", type=int, default=1, help="model version folder (default: 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (one line per epoch still)")
    return p.parse_args(argv)


def load_data(args: argparse.Namespace) -> MnistSplits:
    data = synthetic_mnist(seed=args.seed) if args.synthetic else load_mnist(args.data_dir)
    if args.dry_run:  # keep enough test images for the parity check
        data = MnistSplits(data.train_x[:512], data.train_y[:512], data.val_x[:256],
                           data.val_y[:256], data.test_x[:PARITY_IMAGES],
                           data.test_y[:PARITY_IMAGES], data.source + " (dry-run subset)")
    return data


def main(job: ClassifierJob, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the job; returns the model card it wrote (rank 0; other ranks return {})."""
    args = job.parse_args(argv)
    if args.dry_run:
        args.epochs = 1
        if args.out_dir is None or args.run_dir is None:
            scratch = Path(tempfile.mkdtemp(prefix=f"{job.name}-dry-run-"))
            args.out_dir = args.out_dir or scratch / "models"
            args.run_dir = args.run_dir or scratch / "run"
    args.out_dir = args.out_dir or Path("models")
    args.run_dir = args.run_dir or Path("runs") / job.name
    config = plain_config(args)
    command = command_line(job.module, argv if argv is not None else sys.argv[1:])

    set_threads(args.threads)
    dist = setup(args.device)
    try:
        return run(job, args, dist, config, command)
    finally:
        dist.close()


def run(job: ClassifierJob, args: argparse.Namespace, dist: Dist, config: dict[str, Any],
        command: str) -> dict[str, Any]:
    # Same seed on every rank: identical initial weights (DDP also broadcasts
    # rank 0's), identical shuffles; the augmentation generator differs per rank.
    seed_everything(args.seed)
    generator = torch.Generator().manual_seed(args.seed * 1000 + dist.rank)
    device = dist.device
    data = load_data(args)
    train_x, train_y = torch.from_numpy(data.train_x).to(device), torch.from_numpy(data.train_y).to(device)
    val_x, val_y = torch.from_numpy(data.val_x), torch.from_numpy(data.val_y)
    sampler: DistributedSampler = DistributedSampler(
        range(len(train_x)), num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=args.seed)

    net = job.make_net(args).to(device)
    model = dist.wrap(net)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps = args.epochs * -(-len(sampler) // max(1, args.batch_size // dist.world_size))
    scheduler: torch.optim.lr_scheduler.LRScheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        if args.schedule == "cosine" else torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0))
    if dist.is_main:
        print(f"{job.name}: {sum(p.numel() for p in net.parameters()):,} parameters on {device}"
              f"{f' x {dist.world_size} ranks (DDP)' if dist.enabled else ''}; data {data.source}", flush=True)

    history: list[dict[str, float]] = []
    checkpoints = args.run_dir / "checkpoints"
    started = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        tick = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        train_loss, train_acc = train(args, model, dist, sampler, train_x, train_y, optimizer, scheduler,
                                      generator, epoch)
        # Every rank holds the same weights, so rank 0's validation speaks for all.
        if dist.is_main:
            val_loss, val_acc = test(net, device, val_x, val_y)
            metrics = {"epoch": epoch, "lr": lr, "train_loss": train_loss, "train_accuracy": train_acc,
                       "val_loss": val_loss, "val_accuracy": val_acc, "seconds": time.perf_counter() - tick}
            history.append(metrics)
            save_checkpoint(checkpoints / f"epoch_{epoch:03d}.pt", net, net.init_args, config, metrics, epoch)
            (args.run_dir / "history.json").write_text(json.dumps(history, indent=1))
            print(f"epoch {epoch:3d}/{args.epochs} lr {lr:.2e} | train loss {train_loss:.4f} "
                  f"acc {train_acc:.2%} | val loss {val_loss:.4f} acc {val_acc:.2%} "
                  f"| {metrics['seconds']:.1f}s", flush=True)
    train_seconds = time.perf_counter() - started
    if dist.enabled:  # lets a test (or a sceptic) check that the ranks never drifted apart
        args.run_dir.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
                   args.run_dir / f"final_rank{dist.rank}.pt")
    dist.barrier()
    if not dist.is_main:
        return {}
    return publish(job, args, data, history, train_seconds, str(device), dist.world_size, command)


def publish(job: ClassifierJob, args: argparse.Namespace, data: MnistSplits, history: list[dict[str, float]],
            train_seconds: float, device: str, world_size: int, command: str) -> dict[str, Any]:
    """Select on validation, test once, export, plot, write card and repository entry."""
    best = max(history, key=lambda m: (m["val_accuracy"], -m["val_loss"]))  # ties: lower val loss
    best_epoch = int(best["epoch"])
    checkpoint = load_checkpoint(args.run_dir / "checkpoints" / f"epoch_{best_epoch:03d}.pt")
    model = build_model(checkpoint, job.net_class)
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
    }, title=f"{job.name} (best epoch {best_epoch})")

    describe = getattr(model, "describe", None)
    card = write_card(args.run_dir / "card.json", {
        "name": job.name,
        "version": args.version,
        "description": job.description,
        "inputs": [{"name": "image", "data_type": "FP32", "shape": [-1, 1, 28, 28],
                    "range": "0..1 (pixel / 255), white digit on black"}],
        "outputs": [{"name": "probabilities", "data_type": "FP32", "shape": [-1, 10],
                     "note": "softmax over digits 0-9, computed inside the graph"}],
        "architecture": {"summary": describe() if describe else str(model), "class": checkpoint.model_class,
                         "model_args": checkpoint.model_args,
                         "parameters": sum(p.numel() for p in model.parameters())},
        "regularisation": {"dropout": args.dropout, "weight_decay": args.weight_decay,
                           "label_smoothing": args.label_smoothing,
                           "augmentation": (f"random shift of up to +-{args.shift} px per axis, "
                                            "per image, black fill") if args.shift else "none",
                           "real_life_augmentation": {"summary": augmentation_from(args).describe(),
                                                      **augmentation_from(args).as_dict()}},
        "data": {"name": "synthetic" if args.synthetic else "MNIST", "source": data.source,
                 "sha256": data.sha256(),
                 "sha256_of": "split arrays: name, dtype, shape, bytes (MnistSplits.sha256)",
                 "splits": {s: len(getattr(data, f"{s}_y")) for s in ("train", "val", "test")}},
        "training": {"optimizer": "Adam", "lr": args.lr, "schedule": args.schedule,
                     "schedule_unit": "step", "epochs": args.epochs, "batch_size": args.batch_size,
                     "processes": world_size, "seed": args.seed, "device": device,
                     "threads": torch.get_num_threads(), "seconds": round(train_seconds, 1),
                     "dry_run": args.dry_run},
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
    version_dir = write_entry(args.out_dir, job.config, args.version, {
        "model.onnx": onnx_path, "card.json": args.run_dir / "card.json", "curves.png": curves})
    print(f"wrote {version_dir} and {args.out_dir / job.name / 'config.pbtxt'}", flush=True)
    return card
