"""python -m services.client: talk to a running gateway from the shell."""

from __future__ import annotations

import argparse
import sys

import numpy as np
from PIL import Image

from services.client.sdk import Client, InferenceError, load_digit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.client", description="tensorgate client")
    parser.add_argument("--url", default="localhost:8001", help="gateway address host:port")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each call")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("health", help="server live/ready and each model's state")
    classify = sub.add_parser("classify", help="classify digit images (PNG, JPEG, ...)")
    classify.add_argument("images", nargs="+", help="image files; dark-on-light images are inverted")
    classify.add_argument("--model", default="mnist_mlp", help="mnist_mlp or mnist_cnn")
    translate = sub.add_parser("translate", help="translate German sentences to English")
    translate.add_argument("sentences", nargs="+", help="German sentences (quote each)")
    translate.add_argument("--beam-size", type=int, default=None, help="beam size (default: the model's; 1 = greedy)")
    generate = sub.add_parser("generate", help="draw digits with the GAN and save them as PNG files")
    generate.add_argument("digits", nargs="+", type=int, help="digits to draw, 0-9")
    generate.add_argument("--seed", type=int, default=0, help="seed of the first image; the next ones count up")
    generate.add_argument("--out", default="digit", help="file name prefix (default: digit -> digit_0_seed0.png)")
    stats = sub.add_parser("stats", help="server-side statistics of a model")
    stats.add_argument("model", nargs="?", default="", help="model name (all when omitted)")
    args = parser.parse_args(argv)

    with Client(args.url, args.timeout) as client:
        try:
            if args.command == "health":
                print(f"live={client.live()} ready={client.ready()}")
                for name, version, state in client.models():
                    print(f"  {name} v{version}: {state}")
            elif args.command == "classify":
                labels, probs = client.classify([load_digit(p) for p in args.images], args.model)
                for path, label, p in zip(args.images, labels, probs):
                    print(f"{path}: {label} (p={p[label]:.3f})")
            elif args.command == "translate":
                for sentence, (english, score) in zip(args.sentences, client.translate(args.sentences, args.beam_size)):
                    print(f"{sentence} -> {english}   (score {score:.3f})")
            elif args.command == "generate":
                seeds = [args.seed + i for i in range(len(args.digits))]
                for digit, seed, image in zip(args.digits, seeds, client.generate(args.digits, seeds)):
                    path = f"{args.out}_{digit}_seed{seed}.png"
                    Image.fromarray((image[0] * 255).round().astype(np.uint8)).save(path)
                    print(f"{digit} (seed {seed}) -> {path}")
            elif args.command == "stats":
                print(client.statistics(args.model))
        except InferenceError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
