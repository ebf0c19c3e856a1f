"""Train the MNIST multi-layer perceptron and publish it to the model repository.

    python -m training.mnist mlp                         # full run
    python -m training.mnist mlp --dry-run --synthetic   # seconds, no download
    torchrun --nproc_per_node 2 -m training.mnist mlp    # DistributedDataParallel

Every epoch is checkpointed under --run-dir; the epoch with the best
validation accuracy is reloaded, evaluated once on the test set, exported to
ONNX (softmax inside the graph), checked for parity with PyTorch and written
to --out-dir/mnist_mlp/ with its config.pbtxt, model card and curves. The
loop is training.mnist.train's, shared with the CNN.
"""

from __future__ import annotations

import argparse
from typing import Any, Sequence

import torch
from torch import nn

from training.mnist.args import parse_args as job_args
from training.mnist.job import ClassifierJob, classifier_config
from training.mnist.train import main as run_job

__all__ = ["CONFIG", "JOB", "Net", "main", "parse_args"]

NAME = "mnist_mlp"
CONFIG = classifier_config(NAME)


class Net(nn.Module):
    """flatten -> [Linear -> ReLU -> Dropout] per hidden size -> Linear to logits."""

    def __init__(self, hidden_sizes: Sequence[int] = (1024, 512), dropout: float = 0.2,
                 in_features: int = 28 * 28, classes: int = 10) -> None:
        super().__init__()
        # Kept so a checkpoint can rebuild this exact network.
        self.init_args = {"hidden_sizes": list(hidden_sizes), "dropout": dropout,
                          "in_features": in_features, "classes": classes}
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)  # (B, 1, 28, 28) -> (B, 784) -> ... -> logits (B, 10)

    def describe(self) -> str:
        return " -> ".join(str(layer) for layer in self.layers) + " (softmax added at export)"


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hidden", type=int, nargs="+", default=[1024, 512],
                   help="hidden layer widths (default: 1024 512)")
    p.add_argument("--dropout", type=float, default=0.2,
                   help="dropout after each hidden layer (default: 0.2)")


JOB = ClassifierJob(
    name=NAME, network="mlp", description="MNIST digit classifier, multi-layer perceptron.", doc=__doc__ or "",
    config=CONFIG, net_class=Net, add_model_args=add_model_args,
    make_net=lambda args: Net(args.hidden, args.dropout))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return job_args(JOB, argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the job; returns the model card it wrote."""
    return run_job(JOB, argv)
