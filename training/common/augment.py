"""Augmentation that imitates real writing and photographed digits, on whole batches.

MNIST digits are clean, centred scans of one pen. Real input, even after the
server's MNIST-style preparation (tensorgate.digits), varies in slant,
proportions, wobble, stroke weight and focus. Each image of a batch, with
probability `prob`, gets its own random:

- stroke thickness: blended towards a 3x3 dilation (bolder pen) or erosion (finer);
- affine map: rotation, isotropic scale, horizontal shear, translation;
- elastic distortion: a smooth random displacement field (coarse noise
  upsampled bicubically), applied in the same resampling as the affine map;
- blur: a Gaussian of random sigma (out of focus, soft pencil);

then is rescaled so its brightest pixel is as bright as before (blur and
thinning dim the ink; the served preparation rescales ink the same way).
All of it is tensor code on the batch's device, driven by the job's
generator, so a seed gives the same augmented epoch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random transforms; prob = 0 turns them all off."""

    prob: float = 0.0  # share of images transformed (the rest are left as they are)
    rotate: float = 12.0  # degrees, uniform in +-rotate
    scale: float = 0.12  # uniform in 1 +- scale
    shear: float = 15.0  # degrees of horizontal shear, uniform in +-shear
    translate: float = 1.5  # px, uniform in +-translate per axis
    elastic: float = 1.5  # px, the largest displacement of the elastic field
    thickness: float = 0.7  # blend towards dilation (>0) or erosion (<0), uniform in +-thickness
    blur: float = 0.9  # Gaussian sigma in px, uniform in 0..blur, for half of the images

    @property
    def enabled(self) -> bool:
        return self.prob > 0

    def describe(self) -> str:
        if not self.enabled:
            return "none"
        return (f"{self.prob:.0%} of images: rotation +-{self.rotate:g} deg, scale 1+-{self.scale:g}, "
                f"shear +-{self.shear:g} deg, translation +-{self.translate:g} px, elastic up to "
                f"{self.elastic:g} px, stroke thickness +-{self.thickness:g} (dilate/erode blend), "
                f"Gaussian blur sigma 0..{self.blur:g} px on half of them")

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """x: (B, 1, H, W) in 0..1 -> (B, 1, H, W) in 0..1."""
        if not self.enabled:
            return x
        b = x.shape[0]
        chosen = _uniform(generator, (b,), 0.0, 1.0) < self.prob  # (B,) on the CPU
        if not bool(chosen.any()):
            return x
        index = chosen.nonzero().squeeze(1).to(x.device)
        out = x.clone()
        out[index] = self._transform(x[index], generator)
        return out

    def _transform(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape
        device = x.device
        peak = x.amax(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)

        # Stroke weight first, so the later resampling smooths the blocky 3x3 steps.
        t = _uniform(generator, (b, 1, 1, 1), -self.thickness, self.thickness).to(device)
        dilated = F.max_pool2d(x, 3, stride=1, padding=1)
        eroded = -F.max_pool2d(-x, 3, stride=1, padding=1)
        x = torch.where(t > 0, x + t * (dilated - x), x + (-t) * (eroded - x))

        # Affine map of the output grid onto the input (normalised coords, -1..1).
        angle = torch.deg2rad(_uniform(generator, (b,), -self.rotate, self.rotate))
        scale = _uniform(generator, (b,), 1 - self.scale, 1 + self.scale)
        shear = torch.tan(torch.deg2rad(_uniform(generator, (b,), -self.shear, self.shear)))
        shift = _uniform(generator, (b, 2), -self.translate, self.translate) * torch.tensor([2 / w, 2 / h])
        cos, sin = torch.cos(angle), torch.sin(angle)
        # Sampling grid = inverse of the forward map; scale > 1 means a bigger digit.
        a = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (B, 2, 2)
        s = torch.zeros(b, 2, 2)
        s[:, 0, 0], s[:, 0, 1], s[:, 1, 1] = 1.0, shear, 1.0
        linear = (a @ s) / scale[:, None, None]
        theta = torch.cat([linear, shift[:, :, None]], dim=2).to(device)  # (B, 2, 3)
        grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)  # (B, H, W, 2)

        # Elastic field: 4x4 random displacements, upsampled bicubically to (H, W).
        coarse = _uniform(generator, (b, 2, 4, 4), -1.0, 1.0).to(device)
        field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)  # (B, 2, H, W)
        amplitude = _uniform(generator, (b, 1, 1, 1), 0.0, self.elastic).to(device)
        field = field * amplitude * torch.tensor([2 / w, 2 / h], device=device).view(1, 2, 1, 1)
        grid = grid + field.permute(0, 2, 3, 1)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

        # Blur half of them, each with its own sigma: one grouped convolution.
        sigma = _uniform(generator, (b,), 0.0, self.blur) * (_uniform(generator, (b,), 0.0, 1.0) < 0.5)
        if bool((sigma > 0.05).any()):
            x = _gaussian_blur(x, sigma.to(device))

        x = x.clamp(0.0, 1.0)
        return (x * peak / x.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)).clamp(0.0, 1.0)


def _uniform(generator: torch.Generator, shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
    """Uniform in [low, high) drawn on the CPU from the job's generator."""
    return torch.rand(shape, generator=generator) * (high - low) + low


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """x: (B, 1, H, W), sigma: (B,) px (0 = unchanged) -> (B, 1, H, W)."""
    b, _, h, w = x.shape
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)  # (K,)
    safe = sigma.clamp_min(1e-3)[:, None]
    kernel = torch.exp(-offsets[None, :] ** 2 / (2 * safe ** 2))  # (B, K)
    kernel = torch.where(sigma[:, None] > 0.05, kernel, (offsets[None, :] == 0).to(x.dtype))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    k2d = kernel[:, :, None] * kernel[:, None, :]  # (B, K, K), separable Gaussian
    out = F.conv2d(x.view(1, b, h, w), k2d[:, None], padding=radius, groups=b)  # (1, B, H, W)
    return out.view(b, 1, h, w)

