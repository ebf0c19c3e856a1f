"""Token-based, length-bucketed batches (as Sockeye builds them).

Pairs are put in buckets by (source length, target length) rounded up to a
bucket width; a batch holds pairs of one bucket, as many as fit a token
budget counted on the padded target side (batch size x bucket's longest
target, + 1 for EOS/BOS), so every batch costs about the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from training.translator.vocab import BOS_ID, EOS_ID, PAD_ID

Encoded = tuple[list[int], list[int]]  # (source ids, target ids), without BOS/EOS


@dataclass(frozen=True)
class Batch:
    src: torch.Tensor  # (B, S) int64, ends with EOS, padded with PAD
    src_mask: torch.Tensor  # (B, S) float32, 1 = token
    tgt_in: torch.Tensor  # (B, T) int64, BOS + target
    tgt_out: torch.Tensor  # (B, T) int64, target + EOS, PAD where padded

    @property
    def target_tokens(self) -> int:
        return int((self.tgt_out != PAD_ID).sum())

    def to(self, device: torch.device) -> Batch:
        return Batch(*(t.to(device) for t in (self.src, self.src_mask, self.tgt_in, self.tgt_out)))


def collate(pairs: Sequence[Encoded]) -> Batch:
    s_len = max(len(src) for src, _ in pairs) + 1
    t_len = max(len(tgt) for _, tgt in pairs) + 1
    src = torch.full((len(pairs), s_len), PAD_ID, dtype=torch.long)
    tgt_in = torch.full((len(pairs), t_len), PAD_ID, dtype=torch.long)
    tgt_out = torch.full((len(pairs), t_len), PAD_ID, dtype=torch.long)
    for i, (s, t) in enumerate(pairs):
        src[i, :len(s) + 1] = torch.tensor(s + [EOS_ID])
        tgt_in[i, :len(t) + 1] = torch.tensor([BOS_ID] + t)
        tgt_out[i, :len(t) + 1] = torch.tensor(t + [EOS_ID])
    return Batch(src, (src != PAD_ID).float(), tgt_in, tgt_out)


def make_batches(pairs: Sequence[Encoded], batch_tokens: int, bucket_width: int = 4,
                 max_sentences: int = 512) -> list[list[int]]:
    """Indices of `pairs` grouped into batches; every pair is in exactly one.

    A batch never mixes buckets and never exceeds `batch_tokens` padded target
    tokens, except a single pair longer than the budget, which gets a batch
    of its own.
    """
    buckets: dict[tuple[int, int], list[int]] = {}
    for i, (src, tgt) in enumerate(pairs):
        key = (-(-(len(src) + 1) // bucket_width), -(-(len(tgt) + 1) // bucket_width))
        buckets.setdefault(key, []).append(i)
    batches: list[list[int]] = []
    for key in sorted(buckets):
        members = buckets[key]
        width = key[1] * bucket_width  # the bucket's longest target incl. EOS
        size = max(1, min(max_sentences, batch_tokens // width))
        batches.extend(members[i:i + size] for i in range(0, len(members), size))
    return batches


def epoch_batches(pairs: Sequence[Encoded], batches: Sequence[Sequence[int]],
                  generator: torch.Generator) -> Iterator[Batch]:
    """The batches in a random order (pairs inside a batch shuffled too)."""
    for b in torch.randperm(len(batches), generator=generator).tolist():
        members = batches[b]
        order = torch.randperm(len(members), generator=generator).tolist()
        yield collate([pairs[members[i]] for i in order])
