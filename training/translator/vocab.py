"""The joint German-English sentencepiece model (unigram, character coverage 1.0).

Special ids are fixed so the served graphs and the search agree without
guessing: pad 0, unk 1, bos 2, eos 3 (recorded in the manifest too).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import sentencepiece as spm

from training.data.parallel import Pair

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


def train_sentencepiece(pairs: Sequence[Pair], vocab_size: int, path: Path,
                        max_sentences: int = 400_000, seed_sentences: int = 0) -> Path:
    """Train on both sides of `pairs` (German and English lines) and write `path`."""
    lines = [text for pair in pairs for text in pair]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size,
        model_type="unigram", character_coverage=1.0, pad_id=PAD_ID, unk_id=UNK_ID,
        bos_id=BOS_ID, eos_id=EOS_ID, input_sentence_size=max_sentences,
        shuffle_input_sentence=True, num_threads=1, minloglevel=2,
        # Small corpora (tests) cannot always reach the requested size.
        hard_vocab_limit=False,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.getvalue())
    return path


def load_sentencepiece(path: Path) -> spm.SentencePieceProcessor:
    processor = spm.SentencePieceProcessor()
    processor.Load(str(path))
    if (processor.pad_id(), processor.unk_id(), processor.bos_id(), processor.eos_id()) != \
            (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
        raise ValueError(f"{path}: special ids differ from pad/unk/bos/eos = 0/1/2/3")
    return processor
