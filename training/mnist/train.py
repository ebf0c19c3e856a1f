"""The training job both MNIST classifiers share (`python -m training.mnist mlp`, `... cnn`).

Each network module (training.mnist.mlp, training.mnist.cnn) supplies a `ClassifierJob`
(training.mnist.job): its network, its repository config and its defaults. The job itself is
the same: seed, load the 50k / 10k / 10k split, train with Adam over shuffled mini-batches
(random-shift and real-life augmentation (training.mnist.inputs, training.common.augment),
label smoothing, cosine schedule; training.mnist.loop), checkpoint every epoch, pick the epoch
with the best validation accuracy, test that epoch once, export to ONNX with the softmax
inside, check parity, plot, and write the model card and repository entry
(training.mnist.publish).

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
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import DistributedSampler

from training.common.card import command_line, plain_config
from training.common.checkpoint import save_checkpoint
from training.common.distributed import Dist, setup, unwrap
from training.common.runtime import seed_everything, set_threads
from training.data.mnist import MnistSplits, load_mnist
from training.data.synthetic import synthetic_mnist
from training.mnist.args import parse_args
from training.mnist.job import PACKAGE, ClassifierJob
from training.mnist.loop import test, train
from training.mnist.publish import PARITY_IMAGES, publish


def load_data(args: argparse.Namespace) -> MnistSplits:
    data = synthetic_mnist(seed=args.seed) if args.synthetic else load_mnist(args.data_dir)
    if args.dry_run:  # keep enough test images for the parity check
        data = MnistSplits(data.train_x[:512], data.train_y[:512], data.val_x[:256],
                           data.val_y[:256], data.test_x[:PARITY_IMAGES],
                           data.test_y[:PARITY_IMAGES], data.source + " (dry-run subset)")
    return data


def main(job: ClassifierJob, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the job; returns the model card it wrote (rank 0; other ranks return {})."""
    args = parse_args(job, argv)
    if args.dry_run:
        args.epochs = 1
        if args.out_dir is None or args.run_dir is None:
            scratch = Path(tempfile.mkdtemp(prefix=f"{job.name}-dry-run-"))
            args.out_dir = args.out_dir or scratch / "models"
            args.run_dir = args.run_dir or scratch / "run"
    args.out_dir = args.out_dir or Path("models")
    args.run_dir = args.run_dir or Path("runs") / job.name
    config = plain_config(args)
    command = command_line(PACKAGE, [job.network, *(argv if argv is not None else sys.argv[1:])])

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

