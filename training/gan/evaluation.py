"""Judging the generator: fixed evaluation seeds, generation in eval mode,
judge agreement and Fréchet distance, and the samples grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.image import imsave
from torch import nn

from training.common.judge import GaussianStats, Judge, agreement, frechet_distance, gaussian_stats
from training.gan.networks import to_input

# Fixed evaluation seeds: validation and test never share one. Training
# seeds are drawn from the whole int64 range, so they hit these with
# probability ~1e-16 per draw.
VAL_SEEDS_START, TEST_SEEDS_START, GRID_SEEDS_START = 1_000_000, 2_000_000, 3_000_000
PER_DIGIT = 100  # evaluation images per digit (validation and test)


def eval_inputs(start: int, per_digit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """digits (10 * per_digit,) = 0,0,..,1,1,.. and seeds start, start + 1, ..."""
    digits = torch.arange(10, dtype=torch.int64).repeat_interleave(per_digit)
    return digits, torch.arange(start, start + len(digits), dtype=torch.int64)


@torch.inference_mode()
def generate(G: nn.Module, digits: torch.Tensor, seeds: torch.Tensor,
             batch_size: int = 500) -> np.ndarray:
    """The served computation (eval mode, CPU): float32 (N, 1, 28, 28) in 0..1."""
    G.eval()
    device = next(G.parameters()).device
    out = [G(digits[i:i + batch_size].to(device), seeds[i:i + batch_size].to(device)).cpu()
           for i in range(0, len(digits), batch_size)]
    return torch.cat(out).numpy()


def evaluate(G: nn.Module, judge: Judge, digits: torch.Tensor, seeds: torch.Tensor,
             reference: GaussianStats) -> dict[str, float]:
    """Judge agreement with the requested digits, and Fréchet distance of the
    judge's features against `reference` (mean, covariance) of real images."""
    probabilities, features = judge.run(generate(G, digits, seeds))
    return {"agreement": agreement(probabilities, digits.numpy()),
            "frechet": frechet_distance(features, reference)}


def save_grid(G: nn.Module, path: Path) -> Path:
    """10 x 10 samples: row = digit 0..9, column = one fixed seed each."""
    digits, seeds = eval_inputs(GRID_SEEDS_START, 10)
    seeds = seeds.view(10, 10)[0].repeat(10)  # the same 10 seeds in every row
    images = generate(G, digits, seeds)[:, 0]  # (100, 28, 28)
    pad = 2
    grid = np.ones((10 * (28 + pad) + pad,) * 2, dtype=np.float32) * 0.5
    for k, image in enumerate(images):
        r, c = divmod(k, 10)
        grid[pad + r * (28 + pad):pad + r * (28 + pad) + 28,
             pad + c * (28 + pad):pad + c * (28 + pad) + 28] = image
    path.parent.mkdir(parents=True, exist_ok=True)
    imsave(path, np.kron(grid, np.ones((2, 2), dtype=np.float32)), cmap="gray", vmin=0, vmax=1)
    return path


def real_stats(judge: Judge, images: np.ndarray) -> GaussianStats:
    """Gaussian (mean, covariance) of the judge's features of real uint8 (N, 28, 28) images."""
    return gaussian_stats(judge.features(to_input(images).numpy()))
