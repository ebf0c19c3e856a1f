"""Translate German to English with the exported model (ONNX Runtime, no torch).

    python -m training.translator.translate "Der Hund kam unter dem Tisch hervor."
    echo "Wie spät ist es?" | python -m training.translator.translate --beam-size 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from services.modelservice.runners.translator.translator import Translator


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.translator.translate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sentences", nargs="*",
                   help="German sentences; read from stdin, one per line, when none are given")
    p.add_argument("--model-dir", type=Path, default=Path("models/translator_de_en/1"),
                   help="model version folder (default: models/translator_de_en/1)")
    p.add_argument("--beam-size", type=int, default=5, help="beam size, 1 = greedy (default: 5)")
    p.add_argument("--alpha", type=float, default=None,
                   help="length penalty alpha (default: the model's, from its manifest)")
    p.add_argument("--scores", action="store_true", help="print the score before each translation")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads, 0 = default")
    args = p.parse_args(argv)
    sentences = args.sentences or [line.strip() for line in sys.stdin if line.strip()]
    translator = Translator(args.model_dir, threads=args.threads)
    for text, score in translator.translate(sentences, beam_size=args.beam_size, alpha=args.alpha):
        print(f"{score:.3f}\t{text}" if args.scores else text, flush=True)


if __name__ == "__main__":
    main()
