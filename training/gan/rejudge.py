"""Re-measure the shipped digit_gan's test figures with another judge, without retraining it.

    python -m training.gan.rejudge                    # judge: models/mnist_cnn/1/model.onnx
    python -m training.gan.rejudge --dry-run          # print, write nothing

The GAN's quality figures are read through a classifier (training.common.judge): agreement of
its argmax with the requested digit, and the Fréchet distance of its penultimate features of
generated against real test images (with the real train-vs-test floor beside it). When the
judge is retrained, those figures move although the generator did not. This runs the served
graph (models/digit_gan/1/model.onnx, which matched the PyTorch generator within the card's
parity tolerance) on the card's own test seeds, judges the images and the real splits with the
new judge, and writes the figures into the card; the previous judge and its figures are kept
under `previous_judges`. Epoch selection and the per-epoch validation figures stay those of
the judge used in training.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnxruntime as ort

from training.common.card import command_line
from training.common.judge import Judge, agreement, frechet_distance
from training.data.mnist import load_mnist
from training.data.parallel import file_sha256
from training.data.synthetic import synthetic_mnist
from training.gan.evaluation import PER_DIGIT, TEST_SEEDS_START, eval_inputs, real_stats

FLOOR_TRAIN_IMAGES = 10_000  # as training.gan.train


def generate_served(model: Path, digits: np.ndarray, seeds: np.ndarray, batch: int = 500) -> np.ndarray:
    """The exported generator: digits, seeds (N,) int64 -> float32 (N, 1, 28, 28) in 0..1."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["image"], {"digit": digits[i:i + batch], "seed": seeds[i:i + batch]})[0]
                           for i in range(0, len(digits), batch)])


def rejudge(gan_dir: Path, judge_path: Path, data_dir: Path, synthetic: bool = False) -> dict[str, Any]:
    """The new figures, in the card's layout."""
    card = json.loads((gan_dir / "1" / "card.json").read_text())
    seed = int(card["training"]["seed"])
    data = synthetic_mnist(seed=seed) if synthetic else load_mnist(data_dir)
    judge = Judge(judge_path)
    test_reference = real_stats(judge, data.test_x)
    floor_rows = np.random.default_rng(seed).permutation(len(data.train_x))[:FLOOR_TRAIN_IMAGES]
    floor = frechet_distance(real_stats(judge, data.train_x[np.sort(floor_rows)]), test_reference)
    digits, seeds = (t.numpy() for t in eval_inputs(TEST_SEEDS_START, PER_DIGIT))
    probabilities, features = judge.run(generate_served(gan_dir / "1" / "model.onnx", digits, seeds))
    per_digit = (probabilities.argmax(1) == digits).reshape(10, -1).mean(1)
    return {
        "judge": {**card["judge"], "onnx": str(judge_path), "sha256": file_sha256(judge_path),
                  "feature_tensor": judge.feature_name, "feature_dim": int(features.shape[1])},
        "metrics": {"test_agreement": agreement(probabilities, digits),
                    "test_agreement_per_digit": [float(a) for a in per_digit],
                    "test_frechet": frechet_distance(features, test_reference),
                    "frechet_floor_real_train_vs_test": floor,
                    "floor_train_images": len(floor_rows),
                    "test_images": len(seeds), "test_seeds": [int(seeds[0]), int(seeds[-1])],
                    "test_reference": f"{len(data.test_y)} real test images"},
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m training.gan.rejudge", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gan", type=Path, default=Path("models/digit_gan"), help="the GAN's repository folder")
    p.add_argument("--judge", type=Path, default=Path("models/mnist_cnn/1/model.onnx"),
                   help="ONNX classifier that judges (default: the shipped mnist_cnn)")
    p.add_argument("--data-dir", type=Path, default=Path("data/mnist"),
                   help="MNIST cache folder, fetched when missing (default: data/mnist)")
    p.add_argument("--synthetic", action="store_true", help="a tiny generated data set instead of MNIST (tests)")
    p.add_argument("--dry-run", action="store_true", help="print the figures, do not touch the card")
    args = p.parse_args(argv)
    new = rejudge(args.gan, args.judge, args.data_dir, args.synthetic)
    card_path = args.gan / "1" / "card.json"
    card = json.loads(card_path.read_text())
    old = card["metrics"]
    print(f"judge {args.judge} ({new['judge']['sha256'][:12]}): test agreement "
          f"{old['test_agreement']:.2%} -> {new['metrics']['test_agreement']:.2%}, Fréchet "
          f"{old['test_frechet']:.3f} -> {new['metrics']['test_frechet']:.3f} (floor "
          f"{old['frechet_floor_real_train_vs_test']:.3f} -> {new['metrics']['frechet_floor_real_train_vs_test']:.3f})")
    if args.dry_run or new["judge"]["sha256"] == card["judge"]["sha256"]:
        return new
    previous = {"judge": card["judge"], **{k: old[k] for k in new["metrics"] if k in old}}
    card["previous_judges"] = [*card.get("previous_judges", []), previous]
    card["judge"] = new["judge"]
    card["metrics"] = {**old, **new["metrics"]}
    card["rejudged"] = {"command": command_line("training.gan.rejudge", argv if argv is not None else sys.argv[1:]),
                        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "note": "test figures by the judge above, from the exported graph on the card's test "
                                "seeds; selection and per-epoch validation figures by the training-time judge "
                                "(previous_judges[0])"}
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote {card_path}")
    return new


if __name__ == "__main__":
    main()
