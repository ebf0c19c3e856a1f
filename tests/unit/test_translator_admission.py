"""Admission (the translator runner's room) and the length router, without a model."""

from __future__ import annotations

import pytest

from services.modelservice.runners.translator.admission import Admission, LengthRouter


def test_room_counts_requests_and_closes_at_the_sentence_cap() -> None:
    a = Admission(max_requests=3, max_sentences=5)
    assert a.room() == 3
    a.take(1)
    assert a.room() == 2
    a.take(4)  # 5 sentences queued: the cap
    assert a.room() == 0
    woken: list[int] = []
    a.on_room(lambda: woken.append(1))
    assert woken == []
    a.give(4)
    assert woken == [1] and a.room() == 2
    a.on_room(lambda: woken.append(2))  # room now: at once
    assert woken == [1, 2]


def test_one_request_over_the_sentence_cap_is_taken_whole() -> None:
    a = Admission(max_requests=4, max_sentences=4)
    a.take(10)
    assert a.room() == 0
    a.give(10)
    assert a.room() == 4 and a.sentences == 0 and a.requests == 0


def test_even_work_bounds_split_summed_length() -> None:
    lengths = [2] * 60 + [10] * 30 + [30] * 10  # work 120 + 300 + 300
    # Two loops: the 2s and 10s (420) below, the 30s (300) above, closer than 120 against 600.
    assert LengthRouter.even_work_bounds(lengths, 2) == [11]
    # Three loops: the 2s and 10s on the first two, the 30s on the last.
    assert LengthRouter.even_work_bounds(lengths, 3) == [10, 30]
    assert LengthRouter.even_work_bounds([5] * 10, 2) == [6]  # alike: the first loop takes them


def test_router_sends_short_to_the_first_loop_once_it_has_seen_lengths() -> None:
    router = LengthRouter(2, every=8)
    # Cold: the least-loaded loop.
    assert router.choose([3], [100, 0]) == 1
    for n in [3, 4, 5, 6, 20, 22, 25, 30]:
        router.choose([n], [0, 0])
    assert router.bounds
    assert router.choose([3], [0, 1000]) == 0
    assert router.choose([4, 28], [1000, 0]) == 1  # by the longest sentence
    assert LengthRouter(1).choose([50], [0]) == 0


def test_least_loaded_policy_and_unknown_policy() -> None:
    router = LengthRouter(3, policy="least_loaded", every=1)
    assert router.choose([3], [5, 2, 9]) == 1
    with pytest.raises(ValueError, match="routing"):
        LengthRouter(2, policy="random")


def test_a_short_share_cuts_the_first_band_by_count() -> None:
    lengths = [2] * 20 + [5] * 20 + [10] * 30 + [30] * 30
    assert LengthRouter.band_bounds(lengths, 2, 0.25) == [5]  # 20 below 5: closer to 25 than 40
    assert LengthRouter.band_bounds(lengths, 2, 0.4) == [10]  # the 2s and 5s, exactly 40
    # Three loops: about the shortest quarter, the rest by even work (300 + 900 above 5).
    assert LengthRouter.band_bounds(lengths, 3, 0.25) == [5, 30]
    assert LengthRouter.band_bounds(lengths, 2, 0.0) == LengthRouter.even_work_bounds(lengths, 2)
    with pytest.raises(ValueError, match="short_share"):
        LengthRouter(2, short_share=1.5)
