"""Process-wide set-up every training job does first: seed, threads, device."""

from __future__ import annotations

import random

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
