"""The classifiers' input and its augmentation: the served scaling, random shifts, and the
real-life transforms (training.common.augment) configured from the job's flags."""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from training.common.augment import Augmentation


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
