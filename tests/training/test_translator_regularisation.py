"""The translator's input regularisation: subword sampling and source word dropout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch

from training.translator import fit, train
from training.translator.batching import collate
from training.translator.vocab import EOS_ID, PAD_ID, UNK_ID, load_sentencepiece


def test_subword_sampling_re_segments_the_same_text(
        translator_dry_run: tuple[Path, Path, dict[str, Any]]) -> None:
    _, run_dir, _ = translator_dry_run
    processor = load_sentencepiece(run_dir / "export" / "sentencepiece.model")
    pairs = train.load_corpus(train.parse_args(["--dry-run", "--synthetic"])).train[:40]
    best = train.encode_pairs(processor, pairs, max_len=80)
    assert best == [(processor.EncodeAsIds(de), processor.EncodeAsIds(en)) for de, en in pairs]
    spm.set_random_generator_seed(7)
    source_only = train.encode_pairs(processor, pairs, max_len=80, alpha=0.5)
    both = train.encode_pairs(processor, pairs, max_len=80, alpha=0.5, sides="both")
    assert [t for _, t in source_only] == [t for _, t in best]  # the target keeps its best
    assert any(s != b for (s, _), (b, _) in zip(source_only, best))
    assert any(t != b for (_, t), (_, b) in zip(both, best))
    for (s, t), (de, en) in zip(both, pairs):  # a segmentation, never a different text
        assert processor.DecodeIds(s) == de and processor.DecodeIds(t) == en


def test_word_dropout_only_touches_real_source_tokens() -> None:
    batch = collate([([7, 8, 9, 10] * 50, [9]), ([7, 8], [9, 10, 11])])
    dropped = fit.drop_source_words(batch, 0.5, torch.Generator().manual_seed(0))
    real = (batch.src != PAD_ID) & (batch.src != EOS_ID)
    changed = dropped.src != batch.src
    assert not (changed & ~real).any()  # EOS and padding stay
    assert (dropped.src[changed] == UNK_ID).all()
    assert 0.35 < changed.sum().item() / real.sum().item() < 0.65
    assert torch.equal(dropped.tgt_out, batch.tgt_out) and torch.equal(dropped.tgt_in, batch.tgt_in)
    kept = fit.drop_source_words(batch, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(kept.src, batch.src)
