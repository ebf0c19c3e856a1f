"""bench.translator's summary figures, its loader of today's search, and bench.profile's py-spy summary."""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from types import ModuleType

import pytest

from bench.profile import excerpt, parse_raw, top_frames
from bench.translator import (
    TODAYS_COMMIT,
    TODAYS_PATH,
    InProcess,
    Timed,
    Todays,
    Unavailable,
    identical_share,
    module_at_commit,
    percentile,
    shortest_quarter,
    summarise,
)


def test_shortest_quarter_breaks_ties_in_order() -> None:
    assert shortest_quarter([5, 2, 9, 2, 7, 3, 8, 1]) == [7, 1]
    assert shortest_quarter([4, 4, 4]) == [0]  # at least one
    assert identical_share(["a", "b", "c", "d"], ["a", "x", "c", "d"]) == 0.75
    assert identical_share([], []) == 0.0


def test_summarise() -> None:
    pairs = [("Ich bin hier.", "I am here."), ("Der Hund schläft.", "The dog is sleeping."),
             ("Wir gehen nach Hause.", "We are going home."), ("Es regnet.", "It is raining.")]
    served = Timed(["I am here.", "The dog sleeps.", "We are going home.", "It is raining."], [40, 50, 60, 30], 0.5)
    single = Timed(["I am here.", "The dog sleeps.", "We are going home.", "It is raining."], [10, 12, 14, 8], 2.0)
    batch = Timed(["I am here.", "The dog is sleeping.", "We are going home.", "It is raining."], [], 1.0)
    result = summarise(pairs, [4, 5, 6, 3], single, batch, served, clients=16, beam=5, batch_size=32)
    assert result.served_per_s == pytest.approx(8.0) and result.batch_per_s == pytest.approx(4.0)
    assert result.single_per_s == pytest.approx(2.0)
    assert result.served_p50_ms == pytest.approx(45.0) and result.single_p50_ms == pytest.approx(11.0)
    assert result.identical_share == pytest.approx(0.75)
    assert result.examples == [("Der Hund schläft.", "The dog sleeps.", "The dog is sleeping.")]
    assert result.short_count == 1  # the 3-token sentence (index 3)
    assert (result.short_served_p50_ms, result.short_single_p50_ms) == pytest.approx((30.0, 8.0))
    assert result.batch_bleu == pytest.approx(100.0)  # every reference reproduced
    assert result.served_bleu < result.batch_bleu and result.served_bleu == pytest.approx(result.single_bleu)
    assert result.bleu_signature.startswith("BLEU|")
    assert percentile([], 50) != percentile([], 50)  # nan without latencies


RAW = """\
_run_module_as_main (<frozen runpy>:198);_run_code (<frozen runpy>:88);main (app.py:10);handle (servicer.py:150);parse (tensors.py:40) 30
_run_module_as_main (<frozen runpy>:198);_run_code (<frozen runpy>:88);main (app.py:10);handle (servicer.py:150) 10
_run_module_as_main (<frozen runpy>:198);_run_code (<frozen runpy>:88);main (app.py:10);send (streams.py:77) 60
not a stack line
"""


def test_profile_summary() -> None:
    stacks = parse_raw(RAW)
    assert sum(stacks.values()) == 100 and len(stacks) == 3
    total, own, inclusive = top_frames(stacks, n=3)
    assert total == 100
    assert own == [("send (streams.py:77)", 60), ("parse (tensors.py:40)", 30), ("handle (servicer.py:150)", 10)]
    assert inclusive[0] == ("main (app.py:10)", 100)  # runpy's frames are plumbing: left out
    assert ("handle (servicer.py:150)", 40) in top_frames(stacks, n=10)[2]
    assert not any("runpy" in frame for frame, _ in top_frames(stacks, n=10)[2])
    text = excerpt("gateway", stacks, n=2)
    assert text.splitlines()[0] == "#### gateway (100 busy samples)"
    assert "| 60.0 | `send (streams.py:77)` | | 100.0 | `main (app.py:10)` |" in text
    assert excerpt("idle", parse_raw("")).endswith("no busy samples")


MODEL = Path(__file__).resolve().parents[2] / "models" / "translator_de_en"


def _todays_module() -> ModuleType:
    try:
        return module_at_commit(TODAYS_PATH, TODAYS_COMMIT, f"translation_{TODAYS_COMMIT}_test")
    except Unavailable as err:  # a shallow clone, an export without .git
        pytest.skip(str(err))


def test_module_at_commit_loads_the_old_file_under_its_own_name() -> None:
    old = _todays_module()
    assert old.__name__ == f"translation_{TODAYS_COMMIT}_test" and old.__name__ in sys.modules
    assert "session_options" not in inspect.signature(old.Translator).parameters  # the old API: threads only
    assert old is not importlib.import_module("services.modelservice.runners.translator.translator")


def test_module_at_commit_says_why_it_cannot(tmp_path: Path) -> None:
    with pytest.raises(Unavailable, match="not in this checkout"):
        module_at_commit(TODAYS_PATH, "0" * 40, "nowhere")
    with pytest.raises(Unavailable, match="not in this checkout"):
        module_at_commit(TODAYS_PATH, TODAYS_COMMIT, "nowhere", repo=tmp_path)  # no repository
    assert "nowhere" not in sys.modules


@pytest.mark.skipif(not (MODEL / "1" / "decoder_step.onnx").is_file(), reason="models/translator_de_en not trained yet")
def test_todays_search_runs_with_the_service_session_options() -> None:
    old = InProcess(MODEL, (1, 1), module=_todays_module(), todays=False)
    for session in (old.translator.model.encoder, old.translator.model.decoder):
        options = session.get_session_options()
        assert options.intra_op_num_threads == 1
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    new = InProcess(MODEL, (1, 1), todays=False)
    sentences = ["Guten Morgen.", "Wie spät ist es?"]
    assert old.all_at_once(sentences, 5).outputs == new.all_at_once(sentences, 5).outputs


def test_summarise_with_and_without_todays_search() -> None:
    pairs = [("Ich bin hier.", "I am here."), ("Es regnet.", "It is raining.")]
    served = Timed(["I am here.", "It is raining."], [40, 30], 0.5)
    single = Timed(["I am here.", "It is raining."], [10, 8], 2.0)
    todays = Timed(["I am here.", "It rains."], [], 4.0)
    batch = Timed(["I am here.", "It is raining."], [], 1.0, todays=Todays(todays))
    result = summarise(pairs, [4, 3], single, batch, served, clients=16, beam=5, batch_size=32)
    assert result.todays_per_s == pytest.approx(0.5) and result.todays_identical_share == pytest.approx(0.5)
    assert result.todays_examples == [("Es regnet.", "It is raining.", "It rains.")]
    assert result.todays_bleu is not None and result.todays_bleu < result.batch_bleu
    missing = Timed(batch.outputs, [], 1.0, todays=Todays(None, "git is not installed"))
    result = summarise(pairs, [4, 3], single, missing, served, clients=16, beam=5, batch_size=32)
    assert result.todays_per_s is None and result.todays_note == "git is not installed"


@pytest.mark.skipif(not (MODEL / "1" / "decoder_step.onnx").is_file(), reason="models/translator_de_en not trained yet")
def test_in_process_takes_the_thread_counts_the_model_config_sets(tmp_path: Path) -> None:
    import shutil

    model = tmp_path / "translator_de_en"
    shutil.copytree(MODEL, model)
    config = model / "config.pbtxt"
    config.write_text(config.read_text() + 'parameters { key: "intra_op_thread_count" value: { string_value: "2" } }\n')
    local = InProcess(model, (1, 1), todays=False)
    assert local.threads == (2, 1)
    assert local.translator.model.decoder.get_session_options().intra_op_num_threads == 2
    assert InProcess(MODEL, (1, 1), todays=False).threads == (1, 1)  # the shipped config leaves them to the service
