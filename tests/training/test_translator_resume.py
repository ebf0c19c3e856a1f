"""Resuming a translator run: the history, the optimizer, the schedule and a new stage's own
regularisation carry on, and each later epoch trains on freshly resampled pairs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from training.common.checkpoint import build_model, load_checkpoint
from training.translator import fit, train
from training.translator.batching import collate
from training.translator.model import Seq2Seq
from training.translator.vocab import EOS_ID, load_sentencepiece


def test_resume_carries_on_the_run(translator_dry_run: tuple[Path, Path, dict[str, Any]],
                                   tmp_path: Path) -> None:
    _, first_run, card = translator_dry_run
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


def test_resumed_stage_can_regularise_harder(translator_dry_run: tuple[Path, Path, dict[str, Any]],
                                             tmp_path: Path) -> None:
    _, first_run, _ = translator_dry_run
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


def test_each_later_epoch_gets_the_resampled_pairs(translator_dry_run: tuple[Path, Path, dict[str, Any]],
                                                   tmp_path: Path) -> None:
    _, first_run, _ = translator_dry_run
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
