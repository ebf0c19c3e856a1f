"""python -m bench.accuracy: send all 10,000 MNIST test images through a running gateway and
compare the accuracy with the model card's figure (which training measured in PyTorch).

Start the stack first (`make up`), then: `python -m bench.accuracy --model mnist_mlp`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from services.client import Client


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.accuracy", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="localhost:8001", help="gateway address")
    parser.add_argument("--model", default="mnist_mlp", help="model to evaluate (mnist_mlp, mnist_cnn)")
    parser.add_argument("--model-repository", default="models", help="where the model card is (<model>/<version>/card.json)")
    parser.add_argument("--data", default="data/mnist", help="MNIST cache folder (make data)")
    parser.add_argument("--batch-size", type=int, default=50, help="images per request")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    args = parser.parse_args(argv)

    from training.data.mnist import load_mnist

    splits = load_mnist(args.data)
    images = (splits.test_x.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    labels = splits.test_y
    starts = range(0, len(images), args.batch_size)
    started = time.perf_counter()
    with Client(args.url) as client, ThreadPoolExecutor(args.concurrency) as pool:
        predicted = np.concatenate(list(pool.map(
            lambda s: client.classify(images[s : s + args.batch_size], args.model)[0], starts)))
    seconds = time.perf_counter() - started
    accuracy = float((predicted == labels).mean())
    cards = sorted(Path(args.model_repository, args.model).glob("*/card.json"), key=lambda p: int(p.parent.name))
    card_accuracy = json.loads(cards[-1].read_text())["metrics"]["test_accuracy"] if cards else None
    print(f"{args.model}: {int((predicted == labels).sum())}/{len(labels)} correct through {args.url} "
          f"= {accuracy:.4f} in {seconds:.1f}s; model card says {card_accuracy}")
    if card_accuracy is not None and abs(accuracy - card_accuracy) > 1e-9:
        print("MISMATCH between the served model and its card", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
