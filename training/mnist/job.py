"""What differs between the MNIST classifiers (`ClassifierJob`) and the served contract they share.

Each network module (training.mnist.mlp, training.mnist.cnn) supplies a `ClassifierJob`: its
network, its repository config, its flags and its defaults. The job that runs it is the same
for both (training.mnist.train).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from training.common.repository import DynamicBatching, ModelConfig, TensorConfig

PACKAGE = "training.mnist"  # python -m training.mnist <network>


def classifier_config(name: str) -> ModelConfig:
    """The served contract both classifiers share: `image` FP32 [-1,1,28,28] -> `probabilities` [-1,10],
    or instead of `image`, `image_bytes`: one encoded image file (PNG, JPEG, BMP, GIF, WebP) per
    row, which the `classifier` runner prepares the way MNIST was made (tensorgate.digits)."""
    return ModelConfig(
        name=name,
        max_batch_size=64,
        inputs=(TensorConfig("image", "TYPE_FP32", (1, 28, 28), optional=True),
                TensorConfig("image_bytes", "TYPE_STRING", (1,), reshape=(), optional=True)),
        outputs=(TensorConfig("probabilities", "TYPE_FP32", (10,)),),
        batching=DynamicBatching(
            preferred_batch_sizes=(16, 32, 64),
            max_queue_delay_microseconds=2000,
            max_queue_size=1024,
            default_timeout_microseconds=5_000_000,
        ),
        parameters={"runner": "classifier"},
    )


@dataclass(frozen=True)
class ClassifierJob:
    """What differs between the MNIST classifiers; everything else is shared."""

    name: str  # the served model's name, e.g. mnist_mlp
    network: str  # the subcommand of `python -m training.mnist`, e.g. mlp
    description: str  # one line for the card
    doc: str  # the model module's docstring, shown by --help
    config: ModelConfig
    net_class: type[nn.Module]
    add_model_args: Callable[[argparse.ArgumentParser], None]
    make_net: Callable[[argparse.Namespace], nn.Module]
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def prog(self) -> str:
        """How a shell starts this job (argparse's prog)."""
        return f"python -m {PACKAGE} {self.network}"
