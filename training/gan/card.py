"""The digit GAN's model card: what the job writes to card.json, built from
the run's arguments and results."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.common.checkpoint import Checkpoint
from training.common.export import DEFAULT_OPSET
from training.common.judge import Judge
from training.common.seeded_noise import (MODULUS, MULTIPLIER, ROUND_KEYS, SECOND_MODULUS,
                                          uniform_noise)
from training.data.mnist import MnistSplits
from training.data.parallel import file_sha256
from training.gan.evaluation import GRID_SEEDS_START
from training.gan.networks import Discriminator, Generator


def model_card(*, name: str, args: argparse.Namespace, command: str, G: Generator,
               D: Discriminator, checkpoint: Checkpoint, g_params: int, d_params: int,
               data: MnistSplits, device: torch.device, train_seconds: float,
               history: list[dict[str, float]], best: dict[str, float], val_seeds: torch.Tensor,
               judge: Judge, feature_dim: int, test_agreement: float,
               test_per_digit: np.ndarray, test_frechet: float, test_seeds: torch.Tensor,
               floor: float, floor_train_images: int, onnx_path: Path, parity_diff: float,
               parity_images: int, parity_batch: int, parity_tolerance: float) -> dict[str, Any]:
    """The card of the run (write_card adds the environment and the time).

    `checkpoint` is the best epoch's, `best` its entry of `history`; `G`/`D`
    are described by their architecture only. `feature_dim` is the width of
    the judge's features, `test_per_digit` the agreement per digit 0..9 (10,),
    `floor` the Fréchet distance of `floor_train_images` real training images
    against the test split, and `parity_*` what the ONNX parity check ran."""
    best_epoch = int(best["epoch"])
    return {
        "name": name,
        "version": args.version,
        "description": "Conditional DCGAN: draws a 28x28 MNIST-style image of the requested "
                       "digit; the noise comes from the seed inside the graph, so the same "
                       "(digit, seed) always gives the same image.",
        "inputs": [{"name": "digit", "data_type": "INT64", "shape": [-1],
                    "range": "0..9; values outside are clamped to 0..9 inside the graph "
                             "(the service should still refuse them)"},
                   {"name": "seed", "data_type": "INT64", "shape": [-1],
                    "range": "any int64, negative included"}],
        "outputs": [{"name": "image", "data_type": "FP32", "shape": [-1, 1, 28, 28],
                     "range": "0..1, white digit on black (the classifiers' input)"}],
        "config_note": "config.pbtxt gives dims [1] per input (batch excluded); the graph "
                       "takes rank-1 (B,) tensors",
        "architecture": {"summary": G.describe(), "class": checkpoint.model_class,
                         "model_args": checkpoint.model_args, "parameters": g_params,
                         "discriminator": {"summary": D.describe(), "model_args": D.init_args,
                                           "parameters": d_params, "shipped": False},
                         "noise": {"dim": args.z_dim, "generator": uniform_noise.__doc__,
                                   "to_normal": "Box-Muller in float64, cos branch, cast to float32",
                                   "modulus": MODULUS, "second_modulus": SECOND_MODULUS,
                                   "multiplier": MULTIPLIER, "round_keys": list(ROUND_KEYS)}},
        "data": {"name": "synthetic" if args.synthetic else "MNIST", "source": data.source,
                 "sha256": data.sha256(),
                 "sha256_of": "split arrays: name, dtype, shape, bytes (MnistSplits.sha256)",
                 "splits": {s: len(getattr(data, f"{s}_y")) for s in ("train", "val", "test")},
                 "use": "train: GAN training; val: Fréchet reference for epoch selection; "
                        "test: Fréchet reference for the final figures only"},
        "training": {"optimizer": "Adam", "lr": args.lr, "betas": [0.5, 0.999],
                     "epochs": args.epochs, "epochs_run": len(history),
                     "batch_size": args.batch_size, "max_seconds": args.max_seconds,
                     "seed": args.seed, "device": str(device), "threads": torch.get_num_threads(),
                     "seconds": round(train_seconds, 1), "dry_run": args.dry_run,
                     "loss": "non-saturating GAN loss + auxiliary digit classification (AC-GAN) "
                             f"weighted {args.aux_weight}",
                     "tricks": ["projection discriminator (label embedding dot features)",
                                "auxiliary classifier head on the discriminator (AC-GAN)",
                                *(["spectral norm on the discriminator's conv, linear and "
                                   "embedding"] if args.spectral_norm else []),
                                "one-sided label smoothing (real target 0.9)",
                                "batch norm in the generator; samples and export use eval mode "
                                "(running statistics)",
                                "training noise drawn by the served seed -> noise function from "
                                "random int64 seeds"]},
        "selection": {"criterion": "highest validation judge agreement (ties: lower validation "
                                   "Fréchet distance)",
                      "best_epoch": best_epoch,
                      "validation_seeds": [int(val_seeds[0]), int(val_seeds[-1])],
                      "validation_images_per_digit": len(val_seeds) // 10},
        "judge": {"onnx": str(args.judge), "sha256": file_sha256(args.judge),
                  "feature_tensor": judge.feature_name, "feature_dim": feature_dim,
                  "agreement": "share of generated images whose judge argmax is the requested digit",
                  "frechet": "Fréchet distance of Gaussians fitted to the judge's penultimate "
                             "features (the input of its last linear layer)"},
        "metrics": {"test_agreement": test_agreement,
                    "test_agreement_per_digit": [float(a) for a in test_per_digit],
                    "test_frechet": test_frechet,
                    "frechet_floor_real_train_vs_test": floor,
                    "floor_train_images": floor_train_images,
                    "test_images": len(test_seeds),
                    "test_seeds": [int(test_seeds[0]), int(test_seeds[-1])],
                    "test_reference": f"{len(data.test_y)} real test images",
                    "test_epoch": best_epoch,
                    "val_agreement": best["val_agreement"], "val_frechet": best["val_frechet"],
                    "val_agreement_per_epoch": [m["val_agreement"] for m in history],
                    "per_epoch": history},
        "export": {"format": "onnx", "file": "model.onnx", "opset": DEFAULT_OPSET,
                   "bytes": onnx_path.stat().st_size, "dynamic_batch": True,
                   "parity_max_abs_diff": parity_diff, "parity_images": parity_images,
                   "parity_batch_size": parity_batch, "parity_tolerance": parity_tolerance},
        "samples": {"file": "samples.png", "layout": "10x10: row = digit 0..9, column = seeds "
                    f"{GRID_SEEDS_START}..{GRID_SEEDS_START + 9}", "epoch": best_epoch},
        "command": command,
    }
