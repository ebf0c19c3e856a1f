"""The conditional DCGAN's networks (the served generator and the training-only
discriminator) and the tensors they are fed: classifier input and random seeds."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from training.common.seeded_noise import gaussian_noise


class Generator(nn.Module):
    """(digit, seed) -> image in 0..1.

    z = noise(seed) (B, Z) ++ embed(digit) (B, E) -> Linear -> (B, 2W, 7, 7)
    -> ConvTranspose (B, W, 14, 14) -> ConvTranspose (B, 1, 28, 28) -> tanh
    -> (x + 1) / 2 clipped to 0..1. Digits outside 0..9 are clamped into range."""

    def __init__(self, z_dim: int = 64, embed_dim: int = 32, width: int = 64) -> None:
        super().__init__()
        self.init_args = {"z_dim": z_dim, "embed_dim": embed_dim, "width": width}
        self.z_dim = z_dim
        self.embed = nn.Embedding(10, embed_dim)
        self.project = nn.Sequential(
            nn.Linear(z_dim + embed_dim, 2 * width * 7 * 7, bias=False),
            nn.BatchNorm1d(2 * width * 7 * 7), nn.ReLU())
        self.up = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False),  # 7 -> 14
            nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, 1, 4, 2, 1), nn.Tanh())  # 14 -> 28

    def forward(self, digit: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
        z = gaussian_noise(seed, self.z_dim)  # (B, Z)
        label = self.embed(torch.clamp(digit, 0, 9))  # (B, E)
        h = self.project(torch.cat([z, label], dim=1))  # (B, 2W * 49)
        x = self.up(h.unflatten(1, (-1, 7, 7)))  # (B, 2W, 7, 7) -> (B, 1, 28, 28) in -1..1
        # ONNX Runtime's tanh can overshoot -1 by an ulp (-6e-8 seen after
        # the shift); the clip keeps the served range exactly 0..1.
        return torch.clamp((x + 1.0) / 2.0, 0.0, 1.0)

    def describe(self) -> str:
        w = self.init_args["width"]
        return (f"noise(seed) {self.z_dim} ++ embed(digit) {self.init_args['embed_dim']} -> "
                f"Linear+BN+ReLU {2 * w}x7x7 -> ConvT+BN+ReLU {w}x14x14 -> ConvT 1x28x28 -> "
                "tanh -> (x+1)/2 -> clip 0..1")


class Discriminator(nn.Module):
    """image in 0..1 (B, 1, 28, 28), digit (B,) -> (real/fake logit (B,), class logits (B, 10)).

    Conv 64 (14x14) -> Conv 128 (7x7), LeakyReLU 0.2, optional spectral
    norm; the real/fake logit has a projection term <embed(digit), h>
    (Miyato & Koyama 2018) and an auxiliary head classifies the digit
    (AC-GAN). Not exported: only the generator is served."""

    def __init__(self, width: int = 64, spectral_norm: bool = False) -> None:
        super().__init__()
        self.init_args = {"width": width, "spectral_norm": spectral_norm}

        def sn(layer: nn.Module) -> nn.Module:
            return nn.utils.parametrizations.spectral_norm(layer) if spectral_norm else layer

        self.features = nn.Sequential(
            sn(nn.Conv2d(1, width, 4, 2, 1)), nn.LeakyReLU(0.2),  # 28 -> 14
            sn(nn.Conv2d(width, 2 * width, 4, 2, 1)), nn.LeakyReLU(0.2),  # 14 -> 7
            nn.Flatten())
        features = 2 * width * 7 * 7
        self.real = sn(nn.Linear(features, 1))
        embedding = nn.Embedding(10, features)
        nn.init.normal_(embedding.weight, std=0.02)  # N(0, 1) would swamp the logit at start
        self.project = sn(embedding)
        self.classify = nn.Linear(features, 10)

    def forward(self, image: torch.Tensor, digit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(image * 2.0 - 1.0)  # (B, 2W * 49)
        real = self.real(h).squeeze(1) + (self.project(digit) * h).sum(dim=1)  # (B,)
        return real, self.classify(h)

    def describe(self) -> str:
        w = self.init_args["width"]
        sn = "SN-" if self.init_args["spectral_norm"] else ""
        return (f"{sn}Conv+LeakyReLU {w}x14x14 -> {sn}Conv+LeakyReLU {2 * w}x7x7 -> h; "
                f"real/fake = {sn}Linear(h) + <{sn}embed(digit), h>; digit logits = Linear(h)")


def to_input(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 (B, 28, 28) -> float32 (B, 1, 28, 28) in 0..1, the classifiers' input."""
    images = torch.as_tensor(images)
    return images.unsqueeze(1).float().div_(255.0)


def random_seeds(n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(-(1 << 62), 1 << 62, (n,), generator=generator, dtype=torch.int64)
