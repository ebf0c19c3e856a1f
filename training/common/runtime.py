"""Process-wide set-up every training job does first: seed, threads, device."""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch; return a CPU generator for the job's own
    shuffling and augmentation, so those do not depend on library calls."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def set_threads(threads: int) -> None:
    """Cap intra-op threads (0 keeps torch's default of one per core)."""
    if threads > 0:
        torch.set_num_threads(threads)


def pick_device(name: str) -> torch.device:
    """`cpu`, `cuda`, or `auto` (cuda when available, else cpu)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(name)


def add_mnist_run_args(p: argparse.ArgumentParser, device_note: str = "", threads_note: str = "") -> None:
    """The flags every MNIST job takes: --seed, --device, --threads, --data-dir, --synthetic."""
    p.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto",
                   help=f"where to train (default: auto = cuda if available){device_note}")
    p.add_argument("--threads", type=int, default=2,
                   help=f"torch intra-op threads{threads_note}, 0 = torch's default (default: 2)")
    p.add_argument("--data-dir", type=Path, default=Path("data/mnist"),
                   help="MNIST cache folder, fetched when missing (default: data/mnist)")
    p.add_argument("--synthetic", action="store_true",
                   help="use a tiny generated data set instead of MNIST (tests, no network)")
