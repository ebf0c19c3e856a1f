"""The flags of the MNIST classifiers' job: shared ones, the network's own (ClassifierJob.add_model_args)
and the network's defaults."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from training.common.augment import Augmentation
from training.common.runtime import add_mnist_run_args
from training.mnist.job import ClassifierJob


def parse_args(job: ClassifierJob, argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=job.prog, description=job.doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = {"epochs": 30, "batch_size": 128, "lr": 1e-3, "shift": 2, "label_smoothing": 0.0,
         "weight_decay": 0.0, "augment": 0.5, **job.defaults}
    p.add_argument("--epochs", type=int, default=d["epochs"], help=f"training epochs (default: {d['epochs']})")
    p.add_argument("--batch-size", type=int, default=d["batch_size"],
                   help=f"global mini-batch size, split over torchrun ranks (default: {d['batch_size']})")
    p.add_argument("--lr", type=float, default=d["lr"], help=f"Adam's peak learning rate (default: {d['lr']})")
    p.add_argument("--schedule", choices=("cosine", "constant"), default="cosine",
                   help="learning-rate schedule over all steps (default: cosine, to 0)")
    p.add_argument("--weight-decay", type=float, default=d["weight_decay"],
                   help=f"Adam weight decay (default: {d['weight_decay']})")
    job.add_model_args(p)
    p.add_argument("--shift", type=int, default=d["shift"],
                   help=f"augmentation: random shift of up to this many px per axis, 0 = off (default: {d['shift']})")
    aug = Augmentation()
    p.add_argument("--augment", type=float, default=d["augment"],
                   help="augmentation: share of training images given a random real-life transform "
                        "(the flags below), 0 = off (default: %(default)s)")
    p.add_argument("--rotate", type=float, default=aug.rotate,
                   help="augmentation: rotation, degrees either way (default: %(default)s)")
    p.add_argument("--scale", type=float, default=aug.scale,
                   help="augmentation: scale in 1 +- this (default: %(default)s)")
    p.add_argument("--shear", type=float, default=aug.shear,
                   help="augmentation: horizontal shear, degrees either way (default: %(default)s)")
    p.add_argument("--translate", type=float, default=aug.translate,
                   help="augmentation: sub-pixel translation, px either way per axis (default: %(default)s)")
    p.add_argument("--elastic", type=float, default=aug.elastic,
                   help="augmentation: largest elastic displacement, px (default: %(default)s)")
    p.add_argument("--thickness", type=float, default=aug.thickness,
                   help="augmentation: stroke weight, blend towards a 3x3 dilation or erosion "
                        "of up to this (default: %(default)s)")
    p.add_argument("--blur", type=float, default=aug.blur,
                   help="augmentation: largest Gaussian blur sigma, px, on half of the transformed "
                        "images (default: %(default)s)")
    p.add_argument("--label-smoothing", type=float, default=d["label_smoothing"],
                   help=f"cross-entropy label smoothing (default: {d['label_smoothing']})")
    add_mnist_run_args(p, device_note="; under torchrun each rank takes the GPU of its LOCAL_RANK",
                       threads_note=" per process")
    p.add_argument("--dry-run", action="store_true",
                   help="tiny subset and 1 epoch; writes to temporary folders unless "
                        "--out-dir/--run-dir are given")
    p.add_argument("--out-dir", type=Path, default=None,
                   help="model repository root (default: models)")
    p.add_argument("--run-dir", type=Path, default=None,
                   help=f"checkpoints, history and curves (default: runs/{job.name})")
    p.add_argument("--version", type=int, default=1, help="model version folder (default: 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (one line per epoch still)")
    return p.parse_args(argv)
