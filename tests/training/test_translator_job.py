"""The translator job end to end on the generated corpus (no network), and the shipped model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import sentencepiece as spm
import torch

from services.modelservice.runners.translator.translator import Translator, sha256_of
from training import translate
from training.common.card import REQUIRED_FIELDS
from training.common.checkpoint import build_model, load_checkpoint
from training.common.export import check_onnx
from training.translator import fit, train
from training.translator.export import EncoderGraph, export_translator
from training.translator.publish import parity_check
from training.translator.batching import collate
from training.translator.model import Seq2Seq
from training.translator.vocab import EOS_ID, PAD_ID, UNK_ID, load_sentencepiece

SHIPPED = Path("models/translator_de_en/1")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("translator")
    out_dir, run_dir = root / "models", root / "run"
    card = train.main(["--dry-run", "--synthetic", "--out-dir", str(out_dir), "--run-dir",
                       str(run_dir), "--threads", "1", "--device", "cpu", "--quiet"])
    return out_dir, run_dir, card


def test_entry_files_config_and_card(dry_run: tuple[Path, Path, dict[str, Any]]) -> None:
    out_dir, _, card = dry_run
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


def test_manifest_and_graphs(dry_run: tuple[Path, Path, dict[str, Any]]) -> None:
    out_dir, run_dir, card = dry_run
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


def test_translator_and_cli(dry_run: tuple[Path, Path, dict[str, Any]],
                            capsys: pytest.CaptureFixture[str]) -> None:
    out_dir, _, _ = dry_run
    version = out_dir / "translator_de_en" / "1"
    translator = Translator(version, threads=1)
    results = translator.translate(["Der Hund sieht den Ball.", "Die Katze mag das Haus heute."],
                                   beam_size=3)
    assert len(results) == 2 and all(isinstance(t, str) and s <= 0.0 for t, s in results)
    translate.main(["--model-dir", str(version), "--beam-size", "1", "Der Hund sieht den Ball."])
    assert capsys.readouterr().out.strip() == translator.translate(
        ["Der Hund sieht den Ball."], beam_size=1)[0][0]


@pytest.mark.skipif(not SHIPPED.is_dir(), reason="models/translator_de_en not trained yet")
def test_shipped_model_translates() -> None:
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    assert manifest["sentencepiece"]["sha256"] == sha256_of(SHIPPED / "sentencepiece.model")
    total = sum(p.stat().st_size for p in SHIPPED.iterdir())
    assert total <= 25_000_000
    translator = Translator(SHIPPED, threads=1)
    sentences = ["Der Hund kam unter dem Tisch hervor.", "Ich habe keine Ahnung.",
                 "Wie spät ist es?"]
    for text, score in translator.translate(sentences, beam_size=5):
        assert sum(ch.isalpha() for ch in text) >= 3 and score <= 0.0


def test_publish_only_rebuilds_the_same_entry(dry_run: tuple[Path, Path, dict[str, Any]],
                                              tmp_path: Path) -> None:
    out_dir, run_dir, card = dry_run
    again = train.main(["--dry-run", "--synthetic", "--publish-only", "--run-dir", str(run_dir),
                        "--out-dir", str(tmp_path), "--threads", "1", "--device", "cpu",
                        "--quiet"])
    assert again["selection"] == card["selection"]
    assert again["metrics"]["test"]["onnx_beam"]["bleu"] == card["metrics"]["test"]["onnx_beam"]["bleu"]
    for name in ("encoder.onnx", "decoder_step.onnx", "sentencepiece.model", "manifest.json"):
        assert (tmp_path / "translator_de_en" / "1" / name).read_bytes() == \
            (out_dir / "translator_de_en" / "1" / name).read_bytes()


def test_resume_carries_on_the_run(dry_run: tuple[Path, Path, dict[str, Any]],
                                   tmp_path: Path) -> None:
    _, first_run, card = dry_run
    run_dir = tmp_path / "run"
    shutil.copytree(first_run, run_dir)
    before = json.loads((run_dir / "history.json").read_text())
    before[-1]["updates"] -= 1  # as if a time budget had stopped it off the checkpoint grid
    (run_dir / "history.json").write_text(json.dumps(before, indent=1))
    last = load_checkpoint(run_dir / "checkpoints" / f"checkpoint_{len(before):03d}.pt")
    assert last.optimizer is not None and last.optimizer["state"]  # Adam's moments are saved

    model = build_model(last, Seq2Seq)
    for p in model.parameters():
        torch.nn.init.zeros_(p)
    args = train.parse_args(["--resume"])
    state = fit.resume_state(args, model, run_dir)
    assert state.plateau.lr == before[-1]["lr"]  # no --lr: the replayed schedule
    assert all(torch.equal(v, last.state_dict[k]) for k, v in model.state_dict().items())
    assert (state.updates, state.epoch, state.elapsed_offset) == \
        (before[-1]["updates"], before[-1]["epoch"], before[-1]["elapsed_s"])

    again = train.main(["--dry-run", "--synthetic", "--resume", "--run-dir", str(run_dir),
                        "--out-dir", str(tmp_path / "models"), "--threads", "1", "--device",
                        "cpu", "--quiet", "--lr", "3e-4"])
    after = json.loads((run_dir / "history.json").read_text())
    assert after[:len(before)] == before
    new = after[len(before):]
    assert [m["checkpoint"] for m in new] == list(range(len(before) + 1, len(after) + 1))
    assert new[0]["elapsed_s"] > before[-1]["elapsed_s"]
    interval = card["training"]["checkpoint_interval"]
    assert new[0]["updates"] - before[-1]["updates"] == interval
    stages = again["training"]["stages"]
    assert [s["checkpoints"] for s in stages] == [[1, len(before)], [len(before) + 1, len(after)]]
    assert stages[1]["optimizer"] == "Adam state restored"
    assert stages[1]["lr_at_start"] == new[0]["lr"] == 3e-4  # an explicit --lr wins on resume
    assert again["command"].count("python -m training.translator") == 2
    assert "--resume" in again["command"] and card["command"] in again["command"]
    # the tokenizer is the run's own: resuming never retrains it
    assert (run_dir / "export" / "sentencepiece.model").read_bytes() == \
        (first_run / "export" / "sentencepiece.model").read_bytes()


def test_parity_check_passes_the_export_and_catches_a_drifted_model(
        dry_run: tuple[Path, Path, dict[str, Any]], tmp_path: Path) -> None:
    _, run_dir, _ = dry_run
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


def test_plateau_halves_after_patience_and_resets_on_improvement() -> None:
    plateau = fit.Plateau(lr=1e-3, factor=0.5, patience=2, min_lr=3e-4)

    def point(bleu: float, ppl: float = 10.0) -> dict[str, Any]:
        return {"val_bleu": bleu, "val_perplexity": ppl}

    assert plateau.update(point(5.0))
    assert not plateau.update(point(4.0)) and plateau.lr == 1e-3
    assert not plateau.update(point(5.0, 11.0)) and plateau.lr == 5e-4  # ties: perplexity
    assert plateau.update(point(5.0, 9.0)) and plateau.since_best == 0
    for _ in range(4):
        plateau.update(point(1.0))
    assert plateau.lr == 3e-4 and plateau.since_best == 4  # floored at min_lr


def test_plateau_restart_gives_a_new_rate_its_own_patience() -> None:
    plateau = fit.Plateau(lr=1e-3, factor=0.5, patience=3, min_lr=1e-5)
    plateau.update({"val_bleu": 5.0, "val_perplexity": 10.0})
    for _ in range(2):
        plateau.update({"val_bleu": 4.0, "val_perplexity": 10.0})
    plateau.restart(2e-4)  # --resume --lr 2e-4, two checkpoints into a plateau
    for _ in range(2):
        assert not plateau.update({"val_bleu": 4.0, "val_perplexity": 10.0})
        assert plateau.lr == 2e-4
    plateau.update({"val_bleu": 4.0, "val_perplexity": 10.0})
    assert plateau.lr == 1e-4 and plateau.since_best == 5  # patience still counts from the best


def test_a_resumed_stage_gets_its_own_patience() -> None:
    plateau = fit.Plateau(lr=1e-3, factor=0.5, patience=3, min_lr=1e-5)
    plateau.update({"val_bleu": 5.0, "val_perplexity": 10.0})
    for _ in range(6):  # the last stage ended on --patience 6
        plateau.update({"val_bleu": 4.0, "val_perplexity": 10.0})
    assert fit.out_of_patience(plateau, 6, 6)
    assert not fit.out_of_patience(plateau, 1, 6)  # resumed: one checkpoint into this stage
    plateau.update({"val_bleu": 4.0, "val_perplexity": 10.0})
    assert not fit.out_of_patience(plateau, 5, 6) and fit.out_of_patience(plateau, 6, 6)


def test_plateau_on_perplexity_ignores_a_noisy_bleu() -> None:
    plateau = fit.Plateau(lr=1e-3, factor=0.5, patience=1, min_lr=1e-5, metric="perplexity")
    assert plateau.update({"val_bleu": 6.0, "val_perplexity": 20.0})
    assert plateau.update({"val_bleu": 5.0, "val_perplexity": 19.0}) and plateau.lr == 1e-3
    assert not plateau.update({"val_bleu": 7.0, "val_perplexity": 19.5}) and plateau.lr == 5e-4


def test_subword_sampling_re_segments_the_same_text(
        dry_run: tuple[Path, Path, dict[str, Any]]) -> None:
    _, run_dir, _ = dry_run
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


def test_resumed_stage_can_regularise_harder(dry_run: tuple[Path, Path, dict[str, Any]],
                                             tmp_path: Path) -> None:
    _, first_run, _ = dry_run
    run_dir, extra = tmp_path / "run", tmp_path / "extra"
    shutil.copytree(first_run, run_dir)
    extra.mkdir()
    (extra / "train.de").write_text("Das Haus ist rot.\n")
    (extra / "train.en").write_text("The house is red.\n")
    card = train.main(["--dry-run", "--synthetic", "--resume", "--run-dir", str(run_dir),
                       "--out-dir", str(tmp_path / "models"), "--threads", "1", "--device",
                       "cpu", "--quiet", "--dropout", "0.4", "--word-dropout", "0.2",
                       "--subword-alpha", "0.5", "--extra-parallel", str(extra)])
    stage = card["training"]["stages"][-1]
    assert (stage["dropout"], stage["word_dropout"], stage["subword_alpha"]) == (0.4, 0.2, 0.5)
    assert stage["extra_parallel"] == [str(extra)]
    last = load_checkpoint(run_dir / "checkpoints" / f"checkpoint_{stage['checkpoints'][1]:03d}.pt")
    assert last.model_args["dropout"] == 0.4
    model = build_model(last, Seq2Seq)
    assert {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)} == {0.4}


def test_each_later_epoch_gets_the_resampled_pairs(dry_run: tuple[Path, Path, dict[str, Any]],
                                                   tmp_path: Path) -> None:
    _, first_run, _ = dry_run
    run_dir = tmp_path / "run"
    shutil.copytree(first_run, run_dir)
    args = train.parse_args(["--dry-run", "--synthetic", "--resume", "--run-dir", str(run_dir),
                             "--max-updates", "4", "--checkpoint-interval", "100", "--quiet",
                             "--alpha", "1.0"])
    corpus = train.load_corpus(args)
    processor = load_sentencepiece(run_dir / "export" / "sentencepiece.model")
    model = build_model(load_checkpoint(run_dir / "checkpoints" / "checkpoint_001.pt"), Seq2Seq)
    state = fit.resume_state(args, model, run_dir)
    served: list[list[int]] = []  # the first source of every batch trained on

    def one_batch(n: int) -> tuple[list[Any], list[list[int]]]:
        return [([5 + n, 6], [7])], [[0]]

    calls = iter(range(1, 10))

    def resample() -> tuple[list[Any], list[list[int]]]:
        return one_batch(next(calls))

    original = fit.epoch_batches

    def spy(pairs: Any, batches: Any, generator: Any) -> Any:
        for batch in original(pairs, batches, generator):
            served.append(batch.src[0].tolist())
            yield batch

    valid = [collate([(processor.EncodeAsIds(de), processor.EncodeAsIds(en))
                      for de, en in corpus.valid])]
    fit.epoch_batches = spy  # type: ignore[assignment]
    try:
        history, _, reason = fit.fit(args, model, torch.device("cpu"), torch.Generator(), corpus,
                                     *one_batch(0), valid, run_dir / "export", {}, state,
                                     resample)
    finally:
        fit.epoch_batches = original  # type: ignore[assignment]
    assert reason == "4 updates"
    assert served == [[5, 6, EOS_ID], [6, 6, EOS_ID], [7, 6, EOS_ID], [8, 6, EOS_ID]]
