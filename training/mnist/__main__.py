"""`python -m training.mnist {mlp,cnn} [flags]`: train one of the MNIST classifiers.

Each network's flags: `python -m training.mnist mlp --help`. Under torchrun:
`torchrun --nproc_per_node 2 -m training.mnist cnn`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Sequence

from training.mnist import cnn, mlp

NETWORKS: dict[str, tuple[Callable[[Sequence[str] | None], dict[str, Any]], str]] = {
    "mlp": (mlp.main, "the multi-layer perceptron -> models/mnist_mlp (make train-mlp)"),
    "cnn": (cnn.main, "the convolutional network -> models/mnist_cnn (make train-cnn)"),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.mnist", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__,
        epilog="The real-life evaluation of both: python -m training.mnist.real_life --help")
    networks = p.add_subparsers(dest="network", required=True, metavar="{" + ",".join(NETWORKS) + "}")
    for name, (_, summary) in NETWORKS.items():
        # The network's own parser reads the flags (and answers --help); this one only names it.
        networks.add_parser(name, help=summary, add_help=False)
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the named network's job; returns the model card it wrote."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in NETWORKS:
        return NETWORKS[argv[0]][0](argv[1:])
    parser().parse_args(argv)  # --help, or the usage error for a missing or unknown network
    raise SystemExit(2)


if __name__ == "__main__":
    main()
