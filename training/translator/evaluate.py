"""Validation and test figures: perplexity (teacher forced), sacreBLEU and chrF
on detokenized output, with their signatures."""

from __future__ import annotations

import math
from typing import Any, Sequence

import sacrebleu
import torch
import torch.nn.functional as F

from services.modelservice.runners.translator.translator import Translator
from training.translator.batching import Batch
from training.translator.model import Seq2Seq
from training.translator.vocab import PAD_ID


def perplexity(model: Seq2Seq, batches: Sequence[Batch], device: torch.device) -> float:
    """exp(mean negative log-likelihood per target token incl. EOS), dropout off."""
    model.eval()
    total, tokens = 0.0, 0
    with torch.inference_mode():
        for batch in batches:
            batch = batch.to(device)
            logits = model(batch.src, batch.src_mask, batch.tgt_in)  # (B, T, V)
            total += F.cross_entropy(logits.flatten(0, 1), batch.tgt_out.flatten(),
                                     ignore_index=PAD_ID, reduction="sum").item()
            tokens += batch.target_tokens
    return math.exp(min(total / max(tokens, 1), 50.0))


def bleu_chrf(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Corpus BLEU (13a tokenization) and chrF2 with their sacreBLEU signatures."""
    bleu, chrf = sacrebleu.metrics.BLEU(), sacrebleu.metrics.CHRF()
    b = bleu.corpus_score(list(hypotheses), [list(references)])
    c = chrf.corpus_score(list(hypotheses), [list(references)])
    return {"bleu": round(b.score, 2), "chrf": round(c.score, 2),
            "bleu_signature": f"BLEU|{bleu.get_signature()}",
            "chrf_signature": f"chrF{chrf.beta}|{chrf.get_signature()}",
            "bleu_detail": str(b)}


def translate_and_score(translator: Translator, sources: Sequence[str], references: Sequence[str],
                        beam_size: int, alpha: float) -> tuple[dict[str, Any], list[str]]:
    outputs = translator.translate(list(sources), beam_size=beam_size, alpha=alpha)
    hypotheses = [text for text, _ in outputs]
    return bleu_chrf(hypotheses, references), hypotheses
