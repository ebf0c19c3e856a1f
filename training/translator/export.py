"""The translator as two ONNX graphs plus manifest, and the same interface in PyTorch.

    encoder.onnx       src (B, S) int64, src_mask (B, S) float32
                       -> memory (B, S, M), keys (B, S, A), state_h, state_c (L, B, H), feed (B, H)
    decoder_step.onnx  prev_token (N,) int64, state_h, state_c, feed, memory, keys, src_mask
                       -> log_probs (N, V), state_h_out, state_c_out, feed_out, attention (N, S)

Every recurrent state is an explicit input and output; batch and source
length are dynamic. Exported with the TorchScript exporter (`dynamo=False`),
which maps nn.LSTM to ONNX's LSTM op; opset 18.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from services.modelservice.runners.translator.translator import Arrays
from training.common.export import DEFAULT_OPSET, check_onnx
from training.translator.model import Seq2Seq
from training.translator.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID

ENCODER_INPUTS = ["src", "src_mask"]
ENCODER_OUTPUTS = ["memory", "keys", "state_h", "state_c", "feed"]
STATES = [("state_h", 1), ("state_c", 1), ("feed", 0)]  # name, batch axis
CONTEXT = ["memory", "keys", "src_mask"]
DECODER_INPUTS = ["prev_token", *(name for name, _ in STATES), *CONTEXT]
DECODER_OUTPUTS = ["log_probs", *(f"{name}_out" for name, _ in STATES), "attention"]


class EncoderGraph(nn.Module):
    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.encoder = model.encoder

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.encoder(src, src_mask)


class DecoderStepGraph(nn.Module):
    """One decoder step with log-softmax inside the graph."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.decoder = model.decoder

    def forward(self, prev_token: torch.Tensor, state_h: torch.Tensor, state_c: torch.Tensor,
                feed: torch.Tensor, memory: torch.Tensor, keys: torch.Tensor,
                src_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, h, c, new_feed, attention = self.decoder(prev_token, state_h, state_c, feed,
                                                         memory, keys, src_mask)
        return torch.log_softmax(logits, dim=-1), h, c, new_feed, attention


class TorchStepModel:
    """services.modelservice.runners.translator.search.StepModel over the PyTorch model (CPU, eval mode)."""

    bos_id, eos_id = BOS_ID, EOS_ID
    state_axes = dict(STATES)

    def __init__(self, model: Seq2Seq) -> None:
        self.encoder = EncoderGraph(model).eval().cpu()
        self.decoder = DecoderStepGraph(model).eval().cpu()

    def encode(self, src: np.ndarray, src_mask: np.ndarray) -> tuple[Arrays, Arrays]:
        with torch.inference_mode():
            out = self.encoder(torch.from_numpy(src), torch.from_numpy(src_mask))
        named = {name: t.numpy() for name, t in zip(ENCODER_OUTPUTS, out)}
        context = {"memory": named["memory"], "keys": named["keys"], "src_mask": src_mask}
        return context, {name: named[name] for name, _ in STATES}

    def step(self, prev: np.ndarray, states: Arrays, context: Arrays) -> tuple[np.ndarray, Arrays]:
        inputs = [prev, *(states[name] for name, _ in STATES), *(context[n] for n in CONTEXT)]
        with torch.inference_mode():
            out = self.decoder(*(torch.from_numpy(np.ascontiguousarray(a)) for a in inputs))
        log_probs, h, c, feed, _ = (t.numpy() for t in out)
        return log_probs, {"state_h": h, "state_c": c, "feed": feed}


def _export(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, inputs: list[str],
            outputs: list[str], dynamic: dict[str, dict[int, str]], opset: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo, which does
        # not handle nn.LSTM with dynamic shapes in torch 2.13; and it warns
        # that LSTM batch_first export depends on the batch size (it does not:
        # the parity check below runs other batch sizes).
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, str(path), dynamo=False, input_names=inputs,
                          output_names=outputs, dynamic_axes=dynamic, opset_version=opset,
                          do_constant_folding=True)


def export_translator(model: Seq2Seq, out_dir: Path, opset: int = DEFAULT_OPSET
                      ) -> tuple[Path, Path]:
    """Write encoder.onnx and decoder_step.onnx (example batch 2, source length 5) and check both."""
    model = model.eval().cpu()
    src = torch.tensor([[5, 6, 7, 8, EOS_ID], [9, 10, EOS_ID, PAD_ID, PAD_ID]])
    mask = (src != PAD_ID).float()
    enc_path, dec_path = out_dir / "encoder.onnx", out_dir / "decoder_step.onnx"
    bs = {0: "batch", 1: "source_length"}
    _export(EncoderGraph(model), (src, mask), enc_path, ENCODER_INPUTS, ENCODER_OUTPUTS,
            {"src": bs, "src_mask": bs, "memory": bs, "keys": bs, "state_h": {1: "batch"},
             "state_c": {1: "batch"}, "feed": {0: "batch"}}, opset)
    with torch.no_grad():  # not inference_mode: the tracer cannot take inference tensors
        memory, keys, h, c, feed = model.encoder(src, mask)
    prev = torch.tensor([BOS_ID, BOS_ID])
    rows = {0: "rows"}
    rs = {0: "rows", 1: "source_length"}
    _export(DecoderStepGraph(model), (prev, h, c, feed, memory, keys, mask), dec_path,
            DECODER_INPUTS, DECODER_OUTPUTS,
            {"prev_token": rows, "state_h": {1: "rows"}, "state_c": {1: "rows"}, "feed": rows,
             "memory": rs, "keys": rs, "src_mask": rs, "log_probs": rows,
             "state_h_out": {1: "rows"}, "state_c_out": {1: "rows"}, "feed_out": rows,
             "attention": rs}, opset)
    check_onnx(enc_path)
    check_onnx(dec_path)
    return enc_path, dec_path


def manifest(model: Seq2Seq, spm_sha256: str, max_source_len: int, max_target_len: int
             ) -> dict[str, Any]:
    a = model.init_args
    layers, hidden = a["dec_layers"], a["dec_hidden"]
    key_size = a["attention_size"] if a["attention"] == "mlp" else hidden
    return {
        "format": "tensorgate-translator/1",
        "special_ids": {"pad": PAD_ID, "unk": UNK_ID, "bos": BOS_ID, "eos": EOS_ID},
        "vocab_size": a["vocab"],
        "sentencepiece": {"file": "sentencepiece.model", "sha256": spm_sha256},
        "max_source_len": max_source_len,
        "max_target_len": max_target_len,
        "source_suffix": "EOS after the source tokens; no BOS on the source side",
        "encoder": {"file": "encoder.onnx", "inputs": ENCODER_INPUTS, "outputs": ENCODER_OUTPUTS,
                    "shapes": {"src": ["batch", "source_length"],
                               "src_mask": ["batch", "source_length"],
                               "memory": ["batch", "source_length", a["enc_hidden"]],
                               "keys": ["batch", "source_length", key_size]}},
        "decoder_step": {"file": "decoder_step.onnx", "inputs": DECODER_INPUTS,
                         "outputs": DECODER_OUTPUTS, "context_inputs": CONTEXT,
                         "shapes": {"prev_token": ["rows"], "log_probs": ["rows", a["vocab"]],
                                    "attention": ["rows", "source_length"]}},
        "states": [
            {"name": "state_h", "output": "state_h_out", "batch_axis": 1,
             "shape": [layers, "rows", hidden], "dtype": "float32"},
            {"name": "state_c", "output": "state_c_out", "batch_axis": 1,
             "shape": [layers, "rows", hidden], "dtype": "float32"},
            {"name": "feed", "output": "feed_out", "batch_axis": 0,
             "shape": ["rows", hidden], "dtype": "float32"},
        ],
        "search": {"default_beam_size": 5, "default_alpha": 0.6,
                   "length_penalty": "((5 + length) / 6) ** alpha, length incl. EOS"},
    }


def write_manifest(path: Path, content: dict[str, Any]) -> Path:
    path.write_text(json.dumps(content, indent=1) + "\n")
    return path
