"""The translator job's published entry on the generated corpus (no network): files, config,
card, manifest, the ONNX graphs against PyTorch, and --publish-only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from services.modelservice.runners.translator.translator import Translator, sha256_of
from training.common.card import REQUIRED_FIELDS
from training.common.checkpoint import build_model, load_checkpoint
from training.common.export import check_onnx
from training.translator import train
from training.translator.export import EncoderGraph, export_translator
from training.translator.publish import parity_check
from training.translator.model import Seq2Seq


def test_entry_files_config_and_card(translator_dry_run: tuple[Path, Path, dict[str, Any]]) -> None:
    out_dir, _, card = translator_dry_run
    version = out_dir / "translator_de_en" / "1"
    assert sorted(p.name for p in version.iterdir()) == [
        "card.json", "curves.png", "decoder_step.onnx", "encoder.onnx", "manifest.json",
        "sentencepiece.model"]
    config = (out_dir / "translator_de_en" / "config.pbtxt").read_text()
    for text in ('name: "translator_de_en"', "max_batch_size: 32", '"text" data_type: TYPE_STRING',
                 '"translation" data_type: TYPE_STRING', '"score" data_type: TYPE_FP32',
                 'key: "runner" value: { string_value: "translator" }',
                 'key: "beam_size" value: { string_value: "5" }'):
        assert text in config
    assert all(field in card for field in REQUIRED_FIELDS)
    test = card["metrics"]["test"]
    for key in ("onnx_beam", "onnx_greedy", "pytorch_beam"):
        assert "BLEU|" in test[key]["bleu_signature"] and "chrF2|" in test[key]["chrf_signature"]
    assert test["onnx_beam"]["bleu"] == test["pytorch_beam"]["bleu"]
    validation = card["metrics"]["validation"]  # alpha is chosen on validation, not test
    assert test["alpha"] == validation["alpha_chosen"]
    assert set(validation["beam_alpha_on_validation"]) == {"0.6", "1.0", "1.4"}
    parity = card["export"]["parity"]
    assert parity["encoder_bound_ratio"] <= 1 and parity["decoder_step_bound_ratio"] <= 1
    assert parity["greedy_tokens_agree"] and (parity["atol"], parity["rtol"]) == (1e-4, 1e-4)
    assert parity["batch_size"] != 2 and parity["source_length"] != 5


def test_manifest_and_graphs(translator_dry_run: tuple[Path, Path, dict[str, Any]]) -> None:
    out_dir, run_dir, card = translator_dry_run
    version = out_dir / "translator_de_en" / "1"
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["search"]["default_alpha"] == card["metrics"]["test"]["alpha"]
    assert manifest["special_ids"] == {"pad": 0, "unk": 1, "bos": 2, "eos": 3}
    assert manifest["sentencepiece"]["sha256"] == sha256_of(version / "sentencepiece.model")
    encoder, decoder = check_onnx(version / "encoder.onnx"), check_onnx(version / "decoder_step.onnx")
    assert [i.name for i in encoder.graph.input] == manifest["encoder"]["inputs"]
    assert [i.name for i in decoder.graph.input] == manifest["decoder_step"]["inputs"]
    assert [o.name for o in decoder.graph.output] == manifest["decoder_step"]["outputs"]
    for state in manifest["states"]:
        assert state["name"] in manifest["decoder_step"]["inputs"]
        assert state["output"] in manifest["decoder_step"]["outputs"]

    # Independent re-check of the encoder at batch 3, source length 9, with padding.
    selection = card["selection"]
    checkpoint = load_checkpoint(run_dir / "checkpoints" /
                                 f"checkpoint_{selection['checkpoint']:03d}.pt")
    model = build_model(checkpoint, Seq2Seq)
    if selection["averaged"]:
        pytest.skip("averaged model: the checkpoint alone is not what was exported")
    src = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12, 3], [5, 6, 3, 0, 0, 0, 0, 0, 0],
                        [7, 3, 0, 0, 0, 0, 0, 0, 0]])
    mask = (src != 0).float()
    session = ort.InferenceSession(str(version / "encoder.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"src": src.numpy(), "src_mask": mask.numpy()})
    with torch.inference_mode():
        want = EncoderGraph(model)(src, mask)
        alone = EncoderGraph(model)(src[1:2, :3], mask[1:2, :3])
    for w, g in zip(want, got):
        assert np.max(np.abs(w.numpy() - g)) <= 1e-4
    # Padding does not change a short sentence's encoding.
    assert torch.allclose(alone[0][0], want[0][1, :3], atol=1e-6)


def test_publish_only_rebuilds_the_same_entry(translator_dry_run: tuple[Path, Path, dict[str, Any]],
                                              tmp_path: Path) -> None:
    out_dir, run_dir, card = translator_dry_run
    again = train.main(["--dry-run", "--synthetic", "--publish-only", "--run-dir", str(run_dir),
                        "--out-dir", str(tmp_path), "--threads", "1", "--device", "cpu",
                        "--quiet"])
    assert again["selection"] == card["selection"]
    assert again["metrics"]["test"]["onnx_beam"]["bleu"] == card["metrics"]["test"]["onnx_beam"]["bleu"]
    for name in ("encoder.onnx", "decoder_step.onnx", "sentencepiece.model", "manifest.json"):
        assert (tmp_path / "translator_de_en" / "1" / name).read_bytes() == \
            (out_dir / "translator_de_en" / "1" / name).read_bytes()


def test_parity_check_passes_the_export_and_catches_a_drifted_model(
        translator_dry_run: tuple[Path, Path, dict[str, Any]], tmp_path: Path) -> None:
    _, run_dir, _ = translator_dry_run
    model = build_model(load_checkpoint(run_dir / "checkpoints" / "checkpoint_001.pt"), Seq2Seq)
    for name in ("manifest.json", "sentencepiece.model"):
        shutil.copy(run_dir / "export" / name, tmp_path / name)
    export_translator(model, tmp_path)
    sentences = [f"ein satz mit {n} woertern und mehr" for n in range(20)]
    result = parity_check(model, tmp_path, Translator(tmp_path), sentences)
    assert result["greedy_tokens_agree"] and result["decoder_step_bound_ratio"] <= 1
    with torch.no_grad():  # the graphs no longer match the weights
        next(model.parameters()).add_(1e-2)
    with pytest.raises(AssertionError, match="ONNX parity fails"):
        parity_check(model, tmp_path, Translator(tmp_path), sentences)
