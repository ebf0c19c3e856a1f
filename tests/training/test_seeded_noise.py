"""Seeded noise: a function of the seed alone, standard normal, and the same
in ONNX Runtime as in PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from training.common import seeded_noise
from training.common.export import check_onnx, export_onnx

EXTREME_SEEDS = [0, 1, -1, 7, -7, 2**31 - 1, 2**31, -(2**31), 2**62, 2**63 - 1, -(2**63)]


def test_noise_is_a_function_of_the_seed_alone() -> None:
    seeds = torch.tensor(EXTREME_SEEDS)
    z = seeded_noise.gaussian_noise(seeds, 16)
    assert z.shape == (len(seeds), 16) and z.dtype == torch.float32 and torch.isfinite(z).all()
    # Same seed, same noise, whatever else is in the batch and at any position.
    alone = torch.cat([seeded_noise.gaussian_noise(seeds[i:i + 1], 16) for i in range(len(seeds))])
    assert torch.equal(z, alone)
    assert torch.equal(seeded_noise.gaussian_noise(seeds.flip(0), 16), z.flip(0))
    # Every seed differs from every other (negative ones from their positive twins).
    assert len({tuple(row.tolist()) for row in z}) == len(seeds)
    # The first components do not depend on how many are drawn.
    assert torch.equal(seeded_noise.gaussian_noise(seeds, 4), z[:, :4])


def test_noise_looks_standard_normal() -> None:
    z = seeded_noise.gaussian_noise(torch.arange(-1000, 1000), 64).double()  # (2000, 64)
    assert abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1) < 0.02
    kurtosis = float(((z - z.mean()) ** 4).mean() / z.var() ** 2)
    assert abs(kurtosis - 3) < 0.1
    correlation = torch.corrcoef(z.T) - torch.eye(64, dtype=torch.float64)
    assert float(correlation.abs().max()) < 0.1  # components are uncorrelated
    neighbours = torch.corrcoef(torch.stack([z[:-1].flatten(), z[1:].flatten()]))[0, 1]
    assert abs(float(neighbours)) < 0.02  # consecutive seeds are unrelated


class _Noise(nn.Module):
    def forward(self, seed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return seeded_noise.uniform_noise(seed, 8), seeded_noise.gaussian_noise(seed, 4)


def test_noise_is_identical_in_onnx_runtime(tmp_path: Path) -> None:
    path = export_onnx(_Noise(), [torch.tensor([3, 4])], tmp_path / "noise.onnx", ["seed"],
                       ["uniform", "normal"])
    proto = check_onnx(path)
    ops = {n.op_type for n in proto.graph.node}
    # Integer work is Mod / Mul / Add only (no Floor: no division through float).
    assert {"Mod", "Mul", "Add"} <= ops
    assert ops <= {"Mod", "Mul", "Add", "Unsqueeze", "Cast", "Div", "Reshape", "Sqrt", "Log",
                   "Cos", "Slice", "Gather", "Neg", "Constant", "Squeeze", "Split"}, ops
    seeds = torch.tensor(EXTREME_SEEDS + list(range(-50, 50)))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    uniform, normal = session.run(None, {"seed": seeds.numpy()})
    want_uniform, want_normal = _Noise()(seeds)
    np.testing.assert_array_equal(uniform, want_uniform.numpy())  # integer part: bit-exact
    np.testing.assert_allclose(normal, want_normal.numpy(), rtol=0, atol=1e-6)
