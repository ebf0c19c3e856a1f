"""The MNIST jobs under torchrun: two CPU processes (gloo), one tiny epoch, same weights on both ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.support import REPO_ROOT, free_port
from training.common.checkpoint import build_model, load_checkpoint


@pytest.mark.parametrize("network", ["cnn", "mlp"])
def test_two_ranks_train_to_identical_weights(tmp_path: Path, network: str) -> None:
    out_dir, run_dir = tmp_path / "models", tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "training.mnist", network,
               "--dry-run", "--synthetic", "--device", "cpu", "--threads", "1", "--quiet",
               "--out-dir", str(out_dir), "--run-dir", str(run_dir)]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "x 2 ranks (DDP)" in done.stdout

    rank0 = torch.load(run_dir / "final_rank0.pt", weights_only=True)
    rank1 = torch.load(run_dir / "final_rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name

    # The ranks did train: the weights moved away from the initial ones the seed
    # gives, and the epoch's checkpoint (rank 0) holds the final weights.
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "epoch_001.pt")
    assert all(torch.equal(checkpoint.state_dict[name], rank0[name]) for name in rank0)
    torch.manual_seed(1)
    initial = type(build_model(checkpoint))(**checkpoint.model_args).state_dict()
    assert any(not torch.equal(initial[name], rank0[name]) for name in rank0)
    # Rank 0 alone published the model, recording the process count.
    name = f"mnist_{network}"
    card = json.loads((out_dir / name / "1" / "card.json").read_text())
    assert card["training"]["processes"] == 2
    assert (out_dir / name / "1" / "model.onnx").stat().st_size > 0


def test_each_rank_takes_its_own_half_of_every_epoch() -> None:
    from torch.utils.data import DistributedSampler

    halves = [list(DistributedSampler(range(10), num_replicas=2, rank=r, shuffle=True, seed=1)) for r in (0, 1)]
    assert not set(halves[0]) & set(halves[1]) and sorted(halves[0] + halves[1]) == list(range(10))
