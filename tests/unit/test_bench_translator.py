"""bench.translator's summary figures and bench.profile's py-spy summary, on literal samples."""

from __future__ import annotations

import pytest

from bench.profile import excerpt, parse_raw, top_frames
from bench.translator import Timed, identical_share, percentile, shortest_quarter, summarise


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
