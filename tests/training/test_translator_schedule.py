"""The translator's learning-rate plateau schedule and its patience."""

from __future__ import annotations

from typing import Any



from training.translator import fit


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
