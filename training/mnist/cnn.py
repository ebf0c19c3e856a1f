"""Train the MNIST convolutional network and publish it to the model repository.

    python -m training.mnist cnn                         # full run (make train-cnn)
    python -m training.mnist cnn --dry-run --synthetic   # seconds, no download
    torchrun --nproc_per_node 2 -m training.mnist cnn    # DistributedDataParallel

conv 32 -> max-pool 2x2 -> conv 64 -> max-pool 2x2 -> flatten -> dense -> 10,
softmax added in the exported graph; same input and output contract as the
MLP. The loop, selection on validation, export and card are
training.mnist.train's, shared with the MLP.
"""

from __future__ import annotations

import argparse
from typing import Any, Sequence

import torch
from torch import nn

from training.mnist.args import parse_args as job_args
from training.mnist.job import ClassifierJob, classifier_config
from training.mnist.train import main as run_job

NAME = "mnist_cnn"
CONFIG = classifier_config(NAME)


class Net(nn.Module):
    """Two conv blocks (3x3, same padding, ReLU, 2x2 max-pool), then a hidden dense layer
    with dropout and the 10-way output. The hidden layer's activation is the
    penultimate feature vector (used by the GAN's Fréchet distance)."""

    def __init__(self, channels: Sequence[int] = (32, 64), hidden: int = 128, dropout: float = 0.5,
                 classes: int = 10) -> None:
        super().__init__()
        self.init_args = {"channels": list(channels), "hidden": hidden, "dropout": dropout, "classes": classes}
        blocks: list[nn.Module] = []
        width, side = 1, 28
        for out in channels:
            blocks += [nn.Conv2d(width, out, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            width, side = out, side // 2
        self.features = nn.Sequential(*blocks)  # (B, 1, 28, 28) -> (B, 64, 7, 7)
        self.classifier = nn.Sequential(
            nn.Flatten(),  # (B, 64 * 7 * 7)
            nn.Linear(width * side * side, hidden), nn.ReLU(), nn.Dropout(dropout),  # (B, hidden)
            nn.Linear(hidden, classes),  # logits (B, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def describe(self) -> str:
        layers = [*self.features, *self.classifier]
        return " -> ".join(str(layer) for layer in layers) + " (softmax added at export)"


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--channels", type=int, nargs="+", default=[32, 64],
                   help="output channels of each conv block (default: 32 64)")
    p.add_argument("--hidden", type=int, default=128, help="width of the dense layer (default: 128)")
    p.add_argument("--dropout", type=float, default=0.5,
                   help="dropout after the dense layer (default: 0.5)")


JOB = ClassifierJob(
    name=NAME, network="cnn", description="MNIST digit classifier, convolutional network.", doc=__doc__ or "",
    config=CONFIG, net_class=Net, add_model_args=add_model_args,
    make_net=lambda args: Net(args.channels, args.hidden, args.dropout),
    defaults={"epochs": 20, "batch_size": 128, "lr": 1e-3, "shift": 2, "label_smoothing": 0.05})


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return job_args(JOB, argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the job; returns the model card it wrote."""
    return run_job(JOB, argv)
