"""Re-judging the shipped GAN with another classifier, without retraining it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.support import REPO_ROOT
from training.gan.rejudge import main

SHIPPED = REPO_ROOT / "models"


def test_rejudge_writes_the_new_figures_and_keeps_the_old(tmp_path: Path) -> None:
    gan = tmp_path / "digit_gan"
    shutil.copytree(SHIPPED / "digit_gan", gan)
    before = json.loads((gan / "1" / "card.json").read_text())
    judge = tmp_path / "judge.onnx"
    shutil.copyfile(SHIPPED / "mnist_mlp" / "1" / "model.onnx", judge)  # a judge the card never had
    new = main(["--gan", str(gan), "--judge", str(judge), "--synthetic"])
    card = json.loads((gan / "1" / "card.json").read_text())
    assert card["judge"]["sha256"] == new["judge"]["sha256"] != before["judge"]["sha256"]
    assert card["previous_judges"][-1]["judge"] == before["judge"]
    assert card["previous_judges"][-1]["test_frechet"] == before["metrics"]["test_frechet"]
    assert 0.0 <= card["metrics"]["test_agreement"] <= 1.0 and card["metrics"]["test_frechet"] > 0
    assert card["metrics"]["test_images"] == 1000 and len(card["metrics"]["test_agreement_per_digit"]) == 10
    assert card["metrics"]["per_epoch"] == before["metrics"]["per_epoch"]  # training history untouched
    main(["--gan", str(gan), "--judge", str(judge), "--synthetic"])  # same judge again: nothing added
    assert len(json.loads((gan / "1" / "card.json").read_text())["previous_judges"]) == len(card["previous_judges"])
