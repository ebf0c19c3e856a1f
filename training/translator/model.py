"""Attentional LSTM encoder-decoder (Bahdanau et al. 2015; Luong et al. 2015;
Sockeye's RNN model) written so that the served graphs are plain to export.

- Encoder: embeddings -> bidirectional LSTM layers. Padding is handled with a
  mask, not packed sequences: the backward direction runs a forward LSTM over
  each sentence reversed in place (index gather, pads stay at the end), so it
  starts at the sentence's own last token and a batch gives the same result
  for a sentence as that sentence alone.
- Decoder: LSTM cells with input feeding; attention over the encoder states,
  `mlp` (Bahdanau: v . tanh(K m + Q h)) or `dot` (Luong "general":
  h . K m); the keys K m are computed once by the encoder.
- Target embeddings are tied: the output layer's weights are the decoder's
  input embedding (pre-output layer projects the attentional state to the
  embedding size).

Shapes: B batch, S source length, T target length, E embedding size,
H decoder hidden size, M encoder state size (both directions), A attention size,
L decoder layers, V vocabulary.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def reverse_index(mask: torch.Tensor) -> torch.Tensor:
    """(B, S) mask of 1 = token, 0 = pad -> (B, S) index reversing each row's
    tokens in place and leaving its pads where they are (an involution)."""
    lengths = mask.sum(dim=1, keepdim=True).long()  # (B, 1)
    positions = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)  # (1, S)
    return torch.where(positions < lengths, lengths - 1 - positions, positions)  # (B, S)


def gather_time(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, S, D), index (B, S) -> x[b, index[b, s], :]."""
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class Encoder(nn.Module):
    """src (B, S) int64, mask (B, S) float -> memory (B, S, M), keys (B, S, A),
    initial decoder state h, c (L, B, H) and input feed (B, H)."""

    def __init__(self, vocab: int, embed: int, hidden: int, layers: int, dec_hidden: int,
                 dec_layers: int, attention: str, attention_size: int, dropout: float,
                 pad_id: int) -> None:
        super().__init__()
        if hidden % 2:
            raise ValueError("encoder hidden size must be even (half per direction)")
        self.embedding = nn.Embedding(vocab, embed, padding_idx=pad_id)
        self.forward_layers = nn.ModuleList()
        self.backward_layers = nn.ModuleList()
        for i in range(layers):
            width = embed if i == 0 else hidden
            self.forward_layers.append(nn.LSTM(width, hidden // 2, batch_first=True))
            self.backward_layers.append(nn.LSTM(width, hidden // 2, batch_first=True))
        self.dropout = nn.Dropout(dropout)
        key_size = attention_size if attention == "mlp" else dec_hidden
        self.key = nn.Linear(hidden, key_size, bias=False)
        self.bridge = nn.Linear(hidden, 2 * dec_layers * dec_hidden)
        self.dec_layers, self.dec_hidden = dec_layers, dec_hidden

    def forward(self, src: torch.Tensor, mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        mask3 = mask.unsqueeze(-1)  # (B, S, 1)
        reverse = reverse_index(mask)  # (B, S)
        x = self.dropout(self.embedding(src))  # (B, S, E)
        for fwd, bwd in zip(self.forward_layers, self.backward_layers):
            out_f, _ = fwd(x)  # (B, S, M/2); pads come after the tokens, so harmless
            out_b, _ = bwd(gather_time(x, reverse))
            x = torch.cat([out_f, gather_time(out_b, reverse)], dim=-1) * mask3  # (B, S, M)
            x = self.dropout(x)
        memory = x
        keys = self.key(memory)  # (B, S, A)
        mean = memory.sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1.0)  # (B, M)
        state = torch.tanh(self.bridge(mean))  # (B, 2 L H)
        state = state.view(-1, 2 * self.dec_layers, self.dec_hidden).transpose(0, 1)
        h, c = state[:self.dec_layers].contiguous(), state[self.dec_layers:].contiguous()
        feed = torch.zeros_like(h[0])  # (B, H)
        return memory, keys, h, c, feed


class Decoder(nn.Module):
    """One step: previous token (B,), state h, c (L, B, H), feed (B, H),
    memory (B, S, M), keys (B, S, A), mask (B, S) -> logits (B, V), new h, c,
    new feed, attention weights (B, S)."""

    def __init__(self, vocab: int, embed: int, hidden: int, layers: int, memory_size: int,
                 attention: str, attention_size: int, dropout: float, pad_id: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed, padding_idx=pad_id)
        self.cells = nn.ModuleList(
            nn.LSTMCell((embed + hidden) if i == 0 else hidden, hidden) for i in range(layers))
        self.attention = attention
        if attention == "mlp":
            self.query = nn.Linear(hidden, attention_size, bias=True)
            self.score = nn.Linear(attention_size, 1, bias=False)
        elif attention != "dot":
            raise ValueError(f"attention must be mlp or dot, got {attention!r}")
        self.combine = nn.Linear(hidden + memory_size, hidden)
        self.pre_output = nn.Linear(hidden, embed) if hidden != embed else nn.Identity()
        self.output_bias = nn.Parameter(torch.zeros(vocab))
        self.dropout = nn.Dropout(dropout)

    def forward(self, prev: torch.Tensor, h: torch.Tensor, c: torch.Tensor, feed: torch.Tensor,
                memory: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        h, c, feed, weights = self.step(prev, h, c, feed, memory, keys, mask)
        return self.logits(feed), h, c, feed, weights

    def logits(self, feed: torch.Tensor) -> torch.Tensor:
        """feed (..., H) -> logits (..., V), tied to the input embedding."""
        return F.linear(self.pre_output(self.dropout(feed)), self.embedding.weight,
                        self.output_bias)

    def step(self, prev: torch.Tensor, h: torch.Tensor, c: torch.Tensor, feed: torch.Tensor,
             memory: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x = torch.cat([self.dropout(self.embedding(prev)), feed], dim=-1)  # (B, E + H)
        new_h, new_c = [], []
        for i, cell in enumerate(self.cells):
            hi, ci = cell(x, (h[i], c[i]))
            new_h.append(hi)
            new_c.append(ci)
            x = self.dropout(hi) if i + 1 < len(self.cells) else hi
        top = x  # (B, H)
        if self.attention == "mlp":
            energy = torch.tanh(keys + self.query(top).unsqueeze(1))  # (B, S, A)
            scores = self.score(energy).squeeze(-1)  # (B, S)
        else:
            scores = torch.bmm(keys, top.unsqueeze(-1)).squeeze(-1)  # (B, S)
        scores = scores.masked_fill(mask < 0.5, -1e9)
        weights = torch.softmax(scores, dim=-1)  # (B, S)
        context = torch.bmm(weights.unsqueeze(1), memory).squeeze(1)  # (B, M)
        feed = torch.tanh(self.combine(torch.cat([top, context], dim=-1)))  # (B, H)
        return torch.stack(new_h), torch.stack(new_c), feed, weights


class Seq2Seq(nn.Module):
    """Encoder + decoder; `forward` is teacher-forced training, the parts are exported."""

    def __init__(self, vocab: int, embed: int = 256, enc_hidden: int = 512, enc_layers: int = 1,
                 dec_hidden: int = 512, dec_layers: int = 1, attention: str = "mlp",
                 attention_size: int = 256, dropout: float = 0.2, pad_id: int = 0) -> None:
        super().__init__()
        # Kept so a checkpoint can rebuild this exact network.
        self.init_args: dict[str, Any] = {
            "vocab": vocab, "embed": embed, "enc_hidden": enc_hidden, "enc_layers": enc_layers,
            "dec_hidden": dec_hidden, "dec_layers": dec_layers, "attention": attention,
            "attention_size": attention_size, "dropout": dropout, "pad_id": pad_id}
        self.encoder = Encoder(vocab, embed, enc_hidden, enc_layers, dec_hidden, dec_layers,
                               attention, attention_size, dropout, pad_id)
        self.decoder = Decoder(vocab, embed, dec_hidden, dec_layers, enc_hidden, attention,
                               attention_size, dropout, pad_id)

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor, tgt_in: torch.Tensor
                ) -> torch.Tensor:
        """src (B, S), src_mask (B, S), tgt_in (B, T) starting with BOS -> logits (B, T, V)."""
        memory, keys, h, c, feed = self.encoder(src, src_mask)
        feeds = []
        for t in range(tgt_in.shape[1]):
            h, c, feed, _ = self.decoder.step(tgt_in[:, t], h, c, feed, memory, keys, src_mask)
            feeds.append(feed)
        return self.decoder.logits(torch.stack(feeds, dim=1))  # (B, T, V)

    def set_dropout(self, p: float) -> None:
        """Change every dropout rate (a resumed stage may regularise harder)."""
        for module in self.modules():
            if isinstance(module, nn.Dropout):
                module.p = p
        self.init_args["dropout"] = p

    def describe(self) -> str:
        a = self.init_args
        return (f"bi-LSTM encoder {a['enc_layers']}x{a['enc_hidden']} "
                f"({a['enc_hidden'] // 2} per direction), LSTM decoder "
                f"{a['dec_layers']}x{a['dec_hidden']} with input feeding, {a['attention']} "
                f"attention ({a['attention_size']}), embeddings {a['embed']}, tied target "
                f"embeddings/output layer, vocabulary {a['vocab']}, dropout {a['dropout']}")
