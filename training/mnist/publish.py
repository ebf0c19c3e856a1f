"""The end of an MNIST classifier's job: select the epoch on validation, test it once, export it
to ONNX with the softmax inside, check parity, plot, and write the model card and repository entry."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from training.common.card import write_card
from training.common.checkpoint import build_model, load_checkpoint
from training.common.export import DEFAULT_OPSET, WithSoftmax, export_and_verify
from training.common.plots import plot_curves
from training.common.repository import write_entry
from training.data.mnist import MnistSplits
from training.mnist.inputs import augmentation_from, to_input
from training.mnist.job import ClassifierJob
from training.mnist.loop import test

PARITY_IMAGES, PARITY_BATCH, PARITY_TOLERANCE = 1000, 250, 1e-5


def publish(job: ClassifierJob, args: argparse.Namespace, data: MnistSplits, history: list[dict[str, float]],
            train_seconds: float, device: str, world_size: int, command: str) -> dict[str, Any]:
    """Select on validation, test once, export, plot, write card and repository entry."""
    best = max(history, key=lambda m: (m["val_accuracy"], -m["val_loss"]))  # ties: lower val loss
    best_epoch = int(best["epoch"])
    checkpoint = load_checkpoint(args.run_dir / "checkpoints" / f"epoch_{best_epoch:03d}.pt")
    model = build_model(checkpoint, job.net_class)
    test_loss, test_acc = test(model, torch.device("cpu"), torch.from_numpy(data.test_x),
                               torch.from_numpy(data.test_y))
    print(f"best epoch {best_epoch}: val acc {best['val_accuracy']:.2%}, "
          f"test acc {test_acc:.2%} (loss {test_loss:.4f})", flush=True)

    onnx_path = args.run_dir / "model.onnx"
    parity_images = to_input(torch.from_numpy(data.test_x[:PARITY_IMAGES]))  # (N, 1, 28, 28)
    parity_diff = export_and_verify(WithSoftmax(model), onnx_path, {"image": parity_images},
                                    ["probabilities"], batch_size=PARITY_BATCH,
                                    tolerance=PARITY_TOLERANCE)
    print(f"exported {onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB), "
          f"parity max |diff| {parity_diff:.2e} on {len(parity_images)} images", flush=True)

    curves = plot_curves(args.run_dir / "curves.png", {
        "loss": {"train": [m["train_loss"] for m in history],
                 "validation": [m["val_loss"] for m in history]},
        "accuracy": {"train": [m["train_accuracy"] for m in history],
                     "validation": [m["val_accuracy"] for m in history]},
    }, title=f"{job.name} (best epoch {best_epoch})")

    describe = getattr(model, "describe", None)
    card = write_card(args.run_dir / "card.json", {
        "name": job.name,
        "version": args.version,
        "description": job.description,
        "inputs": [{"name": "image", "data_type": "FP32", "shape": [-1, 1, 28, 28],
                    "range": "0..1 (pixel / 255), white digit on black"}],
        "outputs": [{"name": "probabilities", "data_type": "FP32", "shape": [-1, 10],
                     "note": "softmax over digits 0-9, computed inside the graph"}],
        "architecture": {"summary": describe() if describe else str(model), "class": checkpoint.model_class,
                         "model_args": checkpoint.model_args,
                         "parameters": sum(p.numel() for p in model.parameters())},
        "regularisation": {"dropout": args.dropout, "weight_decay": args.weight_decay,
                           "label_smoothing": args.label_smoothing,
                           "augmentation": (f"random shift of up to +-{args.shift} px per axis, "
                                            "per image, black fill") if args.shift else "none",
                           "real_life_augmentation": {"summary": augmentation_from(args).describe(),
                                                      **augmentation_from(args).as_dict()}},
        "data": {"name": "synthetic" if args.synthetic else "MNIST", "source": data.source,
                 "sha256": data.sha256(),
                 "sha256_of": "split arrays: name, dtype, shape, bytes (MnistSplits.sha256)",
                 "splits": {s: len(getattr(data, f"{s}_y")) for s in ("train", "val", "test")}},
        "training": {"optimizer": "Adam", "lr": args.lr, "schedule": args.schedule,
                     "schedule_unit": "step", "epochs": args.epochs, "batch_size": args.batch_size,
                     "processes": world_size, "seed": args.seed, "device": device,
                     "threads": torch.get_num_threads(), "seconds": round(train_seconds, 1),
                     "dry_run": args.dry_run},
        "selection": {"criterion": "highest validation accuracy (ties: lower validation loss)",
                      "best_epoch": best_epoch},
        "metrics": {"test_accuracy": test_acc, "test_loss": test_loss, "test_epoch": best_epoch,
                    "val_accuracy": best["val_accuracy"],
                    "val_accuracy_per_epoch": [m["val_accuracy"] for m in history],
                    "per_epoch": history},
        "export": {"format": "onnx", "file": "model.onnx", "opset": DEFAULT_OPSET,
                   "bytes": onnx_path.stat().st_size, "dynamic_batch": True,
                   "parity_max_abs_diff": parity_diff, "parity_images": len(parity_images),
                   "parity_batch_size": PARITY_BATCH, "parity_tolerance": PARITY_TOLERANCE},
        "command": command,
    })
    version_dir = write_entry(args.out_dir, job.config, args.version, {
        "model.onnx": onnx_path, "card.json": args.run_dir / "card.json", "curves.png": curves})
    print(f"wrote {version_dir} and {args.out_dir / job.name / 'config.pbtxt'}", flush=True)
    return card
