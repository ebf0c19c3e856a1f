"""Train a conditional DCGAN on MNIST and publish it as `digit_gan`.

    python -m training.gan                         # full run (make train-gan)
    python -m training.gan --dry-run --synthetic   # seconds, no download

The served graph takes `digit` INT64 (B,) and `seed` INT64 (B,) and returns
`image` FP32 (B, 1, 28, 28) in 0..1: the noise is drawn from the seed inside
the graph by a counter-based generator in int64 arithmetic (see
`gaussian_noise`), the same function the generator is trained with, so one
seed always gives one image. Quality is judged by a shipped classifier
(`--judge`, default the mnist_cnn): agreement of its prediction with the
requested digit, and the Fréchet distance of its penultimate features
against real images. Every epoch is checkpointed and judged on validation
seeds against the validation split; the best epoch is judged once on other
seeds against the test split, exported, parity-checked, and written to
--out-dir/digit_gan/ with its config.pbtxt, card, curves and samples grid.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from training.common.card import command_line, plain_config, write_card
from training.common.checkpoint import build_model, load_checkpoint, save_checkpoint
from training.common.export import export_and_verify
from training.common.judge import Judge, agreement, frechet_distance
from training.common.plots import plot_curves
from training.common.repository import DynamicBatching, ModelConfig, TensorConfig, write_entry
from training.common.runtime import add_mnist_run_args, pick_device, seed_everything, set_threads
from training.data.mnist import MnistSplits, load_mnist
from training.data.synthetic import synthetic_mnist
from training.gan.card import model_card
from training.gan.evaluation import (PER_DIGIT, TEST_SEEDS_START, VAL_SEEDS_START, eval_inputs,
                                     evaluate, generate, real_stats, save_grid)
from training.gan.networks import Discriminator, Generator, random_seeds, to_input

NAME = "digit_gan"
# dims [1] per request element (Triton's usual shape for a scalar with
# max_batch_size > 0); the graph itself takes rank-1 (B,) tensors.
CONFIG = ModelConfig(
    name=NAME,
    max_batch_size=64,
    # One scalar per row: Triton's dims [1] reshaped to the graph's [] (clients send [N] or [N, 1]).
    inputs=(TensorConfig("digit", "TYPE_INT64", (1,), reshape=()),
            TensorConfig("seed", "TYPE_INT64", (1,), reshape=())),
    outputs=(TensorConfig("image", "TYPE_FP32", (1, 28, 28)),),
    batching=DynamicBatching(
        preferred_batch_sizes=(16, 32, 64),
        max_queue_delay_microseconds=2000,
        max_queue_size=1024,
        default_timeout_microseconds=5_000_000,
    ),
    # The services refuse other digits with INVALID_ARGUMENT (the graph would clamp them).
    parameters={"digit_range": "0..9"},
)
PARITY_BATCH, PARITY_TOLERANCE = 64, 1e-5
FLOOR_TRAIN_IMAGES = 10_000


def train(args: argparse.Namespace, G: Generator, D: Discriminator, device: torch.device,
          images: torch.Tensor, labels: torch.Tensor, opt_g: torch.optim.Optimizer,
          opt_d: torch.optim.Optimizer, generator: torch.Generator, deadline: float,
          desc: str) -> dict[str, float]:
    """One epoch (or until `deadline`, time.perf_counter()); returns mean losses.

    The non-saturating GAN loss (binary cross-entropy) with one-sided label smoothing
    (real target 0.9), plus the auxiliary classification loss on real
    images (for D) and on fakes of the requested digit (for G)."""
    G.train()
    D.train()
    order = torch.randperm(len(images), generator=generator)
    sums = {"d_loss": 0.0, "g_loss": 0.0, "d_real_class_acc": 0.0}
    steps = 0
    batches = range(0, len(images) - args.batch_size + 1, args.batch_size)  # full batches only
    for start in tqdm(batches, desc=desc, leave=False, mininterval=5.0, disable=args.quiet):
        if time.perf_counter() > deadline:
            break
        index = order[start:start + args.batch_size]
        real = to_input(images[index]).to(device)  # (B, 1, 28, 28)
        digit = labels[index].to(device)  # (B,)
        seeds = random_seeds(len(index), generator).to(device)
        fake_digit = torch.randint(0, 10, (len(index),), generator=generator).to(device)

        fake = G(fake_digit, seeds)  # (B, 1, 28, 28)
        real_logit, real_class = D(real, digit)
        fake_logit, fake_class = D(fake.detach(), fake_digit)
        d_loss = (F.binary_cross_entropy_with_logits(real_logit, torch.full_like(real_logit, 0.9))
                  + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit))
                  + args.aux_weight * F.cross_entropy(real_class, digit))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()

        fake_logit, fake_class = D(fake, fake_digit)
        g_loss = (F.binary_cross_entropy_with_logits(fake_logit, torch.ones_like(fake_logit))
                  + args.aux_weight * F.cross_entropy(fake_class, fake_digit))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()

        sums["d_loss"] += d_loss.item()
        sums["g_loss"] += g_loss.item()
        sums["d_real_class_acc"] += float((real_class.argmax(1) == digit).float().mean())
        steps += 1
    return {k: v / max(steps, 1) for k, v in sums.items()} | {"steps": steps}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.gan", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=20, help="training epochs (default: 20)")
    p.add_argument("--max-seconds", type=float, default=0.0,
                   help="training time budget in seconds; the epoch running when it ends is "
                        "cut short, judged and checkpointed, then training stops (default: 0 = none)")
    p.add_argument("--batch-size", type=int, default=64, help="mini-batch size (default: 64)")
    p.add_argument("--lr", type=float, default=2e-4,
                   help="Adam learning rate of both networks, betas (0.5, 0.999) (default: 2e-4)")
    p.add_argument("--z-dim", type=int, default=64, help="noise dimensions (default: 64)")
    p.add_argument("--width", type=int, default=64,
                   help="channels of the generator's 14x14 layer (7x7 has twice) (default: 64)")
    p.add_argument("--d-width", type=int, default=64,
                   help="channels of the discriminator's first conv (second has twice) (default: 64)")
    p.add_argument("--spectral-norm", action="store_true",
                   help="spectral norm on the discriminator's layers (default: off)")
    p.add_argument("--aux-weight", type=float, default=1.0,
                   help="weight of the auxiliary digit-classification loss (default: 1)")
    add_mnist_run_args(p, threads_note=" (also the judge's)")
    p.add_argument("--judge", type=Path, default=Path("models/mnist_cnn/1/model.onnx"),
                   help="ONNX digit classifier that judges the samples "
                        "(default: models/mnist_cnn/1/model.onnx)")
    p.add_argument("--dry-run", action="store_true",
                   help="tiny subset, 1 epoch, 10 validation and test images per digit; writes to "
                        "temporary folders unless --out-dir/--run-dir are given")
    p.add_argument("--out-dir", type=Path, default=None,
                   help="model repository root (default: models)")
    p.add_argument("--run-dir", type=Path, default=None,
                   help="checkpoints, history, curves and sample grids (default: runs/digit_gan)")
    p.add_argument("--version", type=int, default=1, help="model version folder (default: 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def load_data(args: argparse.Namespace) -> MnistSplits:
    data = synthetic_mnist(seed=args.seed) if args.synthetic else load_mnist(args.data_dir)
    if args.dry_run:
        data = MnistSplits(data.train_x[:256], data.train_y[:256], data.val_x[:256],
                           data.val_y[:256], data.test_x[:500], data.test_y[:500],
                           data.source + " (dry-run subset)")
    return data


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the job; returns the model card it wrote."""
    args = parse_args(argv)
    if args.dry_run:
        args.epochs = 1
        scratch = Path(tempfile.mkdtemp(prefix="digit_gan-dry-run-"))
        args.out_dir = args.out_dir or scratch / "models"
        args.run_dir = args.run_dir or scratch / "run"
    args.out_dir = args.out_dir or Path("models")
    args.run_dir = args.run_dir or Path("runs") / NAME
    config = plain_config(args)
    command = command_line("training.gan", argv if argv is not None else sys.argv[1:])

    set_threads(args.threads)
    generator = seed_everything(args.seed)
    device = pick_device(args.device)
    data = load_data(args)
    judge = Judge(args.judge, threads=max(args.threads, 1))
    val_reference = real_stats(judge, data.val_x)
    test_reference = real_stats(judge, data.test_x)
    floor_rows = np.random.default_rng(args.seed).permutation(len(data.train_x))[:FLOOR_TRAIN_IMAGES]
    floor = frechet_distance(real_stats(judge, data.train_x[np.sort(floor_rows)]), test_reference)
    train_x, train_y = torch.from_numpy(data.train_x), torch.from_numpy(data.train_y)
    per_digit = 10 if args.dry_run else PER_DIGIT
    val_digits, val_seeds = eval_inputs(VAL_SEEDS_START, per_digit)

    G = Generator(args.z_dim, width=args.width).to(device)
    D = Discriminator(args.d_width, args.spectral_norm).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=args.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=args.lr, betas=(0.5, 0.999))
    g_params = sum(p.numel() for p in G.parameters())
    d_params = sum(p.numel() for p in D.parameters())
    print(f"{NAME}: G {g_params:,} / D {d_params:,} parameters on {device}, "
          f"{torch.get_num_threads()} threads; data {data.source}; judge {args.judge} "
          f"(real train vs test Fréchet floor {floor:.3f})", flush=True)

    history: list[dict[str, float]] = []
    checkpoints, samples = args.run_dir / "checkpoints", args.run_dir / "samples"
    started = time.perf_counter()
    deadline = started + args.max_seconds if args.max_seconds > 0 else math.inf
    for epoch in range(1, args.epochs + 1):
        tick = time.perf_counter()
        losses = train(args, G, D, device, train_x, train_y, opt_g, opt_d, generator, deadline,
                       f"epoch {epoch}/{args.epochs}")
        val = evaluate(G, judge, val_digits, val_seeds, val_reference)
        metrics = {"epoch": epoch, **losses, "val_agreement": val["agreement"],
                   "val_frechet": val["frechet"], "seconds": time.perf_counter() - tick}
        history.append(metrics)
        save_grid(G, samples / f"epoch_{epoch:03d}.png")
        save_checkpoint(checkpoints / f"epoch_{epoch:03d}.pt", G, G.init_args, config, metrics, epoch)
        save_checkpoint(checkpoints / f"epoch_{epoch:03d}.discriminator.pt", D, D.init_args,
                        config, metrics, epoch)
        (args.run_dir / "history.json").write_text(json.dumps(history, indent=1))
        print(f"epoch {epoch:3d}/{args.epochs} ({losses['steps']} steps) | D {losses['d_loss']:.3f} "
              f"G {losses['g_loss']:.3f} | val agreement {val['agreement']:.2%} "
              f"Fréchet {val['frechet']:.3f} | {metrics['seconds']:.0f}s", flush=True)
        if time.perf_counter() > deadline:
            print(f"time budget of {args.max_seconds:.0f}s spent after epoch {epoch}", flush=True)
            break
    train_seconds = time.perf_counter() - started

    # Select on validation only (ties: lower validation Fréchet); test that epoch once.
    best = max(history, key=lambda m: (m["val_agreement"], -m["val_frechet"]))
    best_epoch = int(best["epoch"])
    checkpoint = load_checkpoint(checkpoints / f"epoch_{best_epoch:03d}.pt")
    best_g = build_model(checkpoint, Generator)
    test_digits, test_seeds = eval_inputs(TEST_SEEDS_START, per_digit)
    test_probabilities, test_features = judge.run(generate(best_g, test_digits, test_seeds))
    test_agreement = agreement(test_probabilities, test_digits.numpy())
    test_frechet = frechet_distance(test_features, test_reference)
    test_per_digit = (test_probabilities.argmax(1) == test_digits.numpy()).reshape(10, -1).mean(1)
    print(f"best epoch {best_epoch}: val agreement {best['val_agreement']:.2%}; test agreement "
          f"{test_agreement:.2%}, Fréchet {test_frechet:.3f} (real floor {floor:.3f})", flush=True)

    # Parity on the test inputs, half of the seeds swapped for arbitrary int64
    # ones (negative and huge included).
    onnx_path = args.run_dir / "model.onnx"
    parity_seeds = test_seeds.clone()
    parity_seeds[1::2] = random_seeds(len(parity_seeds) // 2, torch.Generator().manual_seed(0)) * 2
    parity_diff = export_and_verify(best_g, onnx_path, {"digit": test_digits, "seed": parity_seeds},
                                    ["image"], batch_size=PARITY_BATCH, tolerance=PARITY_TOLERANCE)
    print(f"exported {onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB), "
          f"parity max |diff| {parity_diff:.2e} on {len(parity_seeds)} images", flush=True)

    curves = plot_curves(args.run_dir / "curves.png", {
        "loss": {"discriminator": [m["d_loss"] for m in history],
                 "generator": [m["g_loss"] for m in history]},
        "judge agreement": {"validation": [m["val_agreement"] for m in history]},
        "Fréchet distance": {"validation": [m["val_frechet"] for m in history]},
    }, title=f"{NAME} (best epoch {best_epoch})")
    grid = shutil.copyfile(samples / f"epoch_{best_epoch:03d}.png", args.run_dir / "samples.png")

    card = write_card(args.run_dir / "card.json", model_card(
        name=NAME, args=args, command=command, G=G, D=D, checkpoint=checkpoint,
        g_params=g_params, d_params=d_params, data=data, device=device,
        train_seconds=train_seconds, history=history, best=best, val_seeds=val_seeds,
        judge=judge, feature_dim=int(test_features.shape[1]), test_agreement=test_agreement,
        test_per_digit=test_per_digit, test_frechet=test_frechet, test_seeds=test_seeds,
        floor=floor, floor_train_images=min(FLOOR_TRAIN_IMAGES, len(data.train_x)),
        onnx_path=onnx_path, parity_diff=parity_diff, parity_images=len(parity_seeds),
        parity_batch=PARITY_BATCH, parity_tolerance=PARITY_TOLERANCE))
    version_dir = write_entry(args.out_dir, CONFIG, args.version, {
        "model.onnx": onnx_path, "card.json": args.run_dir / "card.json", "curves.png": curves,
        "samples.png": grid})
    print(f"wrote {version_dir} and {args.out_dir / NAME / 'config.pbtxt'}", flush=True)
    return card
