"""One training epoch and one evaluation pass of an MNIST classifier (alone or one DDP rank)."""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from training.common.distributed import Dist
from training.mnist.inputs import augmentation_from, random_shift, to_input


def train(args: argparse.Namespace, model: nn.Module, dist: Dist, sampler: DistributedSampler,
          images: torch.Tensor, labels: torch.Tensor, optimizer: torch.optim.Optimizer,
          scheduler: torch.optim.lr_scheduler.LRScheduler, generator: torch.Generator,
          epoch: int) -> tuple[float, float]:
    """One epoch over this rank's shard in shuffled mini-batches; returns this
    rank's (mean loss, accuracy) on the augmented training images."""
    model.train()
    augmentation = augmentation_from(args)
    sampler.set_epoch(epoch)  # same permutation on every rank, a different one each epoch
    order = torch.tensor(list(sampler), device=dist.device)
    per_rank_batch = max(1, args.batch_size // dist.world_size)
    total_loss, correct = 0.0, 0
    batches = range(0, len(order), per_rank_batch)
    for start in tqdm(batches, desc=f"epoch {epoch}", unit="batch", leave=False,
                      disable=not dist.is_main or args.quiet):
        index = order[start:start + per_rank_batch]
        x = random_shift(to_input(images[index]), args.shift, generator)  # (B, 1, 28, 28)
        x = augmentation(x, generator)
        y = labels[index]  # (B,)
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)  # (B, 10)
        loss = F.cross_entropy(logits, y, label_smoothing=args.label_smoothing)
        loss.backward()  # under DDP this also all-reduces the gradients
        optimizer.step()
        scheduler.step()  # the schedule is per step, so it is smooth within an epoch
        total_loss += loss.item() * len(index)
        correct += int((logits.argmax(dim=1) == y).sum())
    return total_loss / len(order), correct / len(order)


def test(model: nn.Module, device: torch.device, images: torch.Tensor,
         labels: torch.Tensor, batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy and accuracy, dropout off."""
    model.eval()
    total_loss, correct = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            logits = model(to_input(images[start:start + batch_size].to(device)))
            y = labels[start:start + batch_size].to(device)
            total_loss += F.cross_entropy(logits, y, reduction="sum").item()
            correct += int((logits.argmax(dim=1) == y).sum())
    return total_loss / len(images), correct / len(images)
