from __future__ import annotations

import pytest

from services.modelservice.batching import BatchPolicy, WaitEstimator


def test_ready_when_full_preferred_or_waited_long_enough() -> None:
    policy = BatchPolicy(max_batch_size=8, max_queue_delay_s=0.002, preferred_batch_sizes=(4,))
    assert not policy.ready(rows=1, waited_s=0.0)
    assert policy.ready(rows=4, waited_s=0.0)  # preferred size reached
    assert not policy.ready(rows=5, waited_s=0.001)
    assert policy.ready(rows=5, waited_s=0.002)  # the oldest request waited max_queue_delay
    assert policy.ready(rows=8, waited_s=0.0)  # full
    assert policy.remaining_delay_s(0.0005) == 0.0015 and policy.remaining_delay_s(1.0) == 0.0


def test_fits_respects_max_batch_size_in_rows() -> None:
    policy = BatchPolicy(max_batch_size=8, max_queue_delay_s=0.0)
    assert policy.fits(rows=0, more=8) and policy.fits(rows=5, more=3)
    assert not policy.fits(rows=5, more=4)
    assert policy.capacity == 8 and policy.batching


def test_unbatched_model_takes_one_request_at_a_time() -> None:
    policy = BatchPolicy(max_batch_size=0, max_queue_delay_s=0.1)
    assert not policy.batching and policy.capacity == 1
    assert policy.fits(rows=0, more=1) and not policy.fits(rows=1, more=1)
    assert policy.ready(rows=1, waited_s=0.0)


def test_target_is_the_next_preferred_size_else_full() -> None:
    policy = BatchPolicy(max_batch_size=64, max_queue_delay_s=0.002, preferred_batch_sizes=(16, 32))
    assert policy.target(1) == 16 and policy.target(16) == 32 and policy.target(40) == 64


def test_estimator_waits_like_triton_until_it_has_measured() -> None:
    est = WaitEstimator()
    assert est.rate() is None
    assert est.plan(rows=1, target=16, remaining_s=0.002, now=0.0) == 0.002


def test_estimator_dispatches_at_once_when_nothing_arrives_during_waits() -> None:
    # A closed-loop client at concurrency 1: every wait sees no arrival.
    est = WaitEstimator(probe_interval_s=0.5)
    for _ in range(5):
        est.observe(arrivals=0, waited_s=0.002)
    assert est.rate() == 0.0
    assert est.plan(rows=1, target=16, remaining_s=0.002, now=10.0) == 0.002  # a probe: none for 0.5 s
    assert est.plan(rows=1, target=16, remaining_s=0.002, now=10.1) == 0.0  # the next ones go at once
    assert est.plan(rows=1, target=16, remaining_s=0.002, now=10.4) == 0.0
    assert est.plan(rows=1, target=16, remaining_s=0.002, now=10.6) == 0.002  # probe again


def test_estimator_waits_only_as_long_as_filling_the_target_takes() -> None:
    est = WaitEstimator()
    est.observe(arrivals=10, waited_s=0.001)  # 10,000 requests/s while waiting
    assert est.rate() == pytest.approx(10_000)
    assert est.plan(rows=6, target=16, remaining_s=0.002, now=0.0) == pytest.approx(0.001)  # 10 more in 1 ms
    assert est.plan(rows=1, target=64, remaining_s=0.002, now=0.0) == 0.002  # never past the window
    assert est.plan(rows=16, target=16, remaining_s=0.002, now=0.0) == 0.0
    assert est.plan(rows=1, target=16, remaining_s=0.0, now=0.0) == 0.0


def test_estimator_follows_the_load_down_and_up() -> None:
    est = WaitEstimator()
    est.observe(arrivals=20, waited_s=0.002)
    for _ in range(12):  # the load stops: the decayed rate falls below one request per window
        est.observe(arrivals=0, waited_s=0.002)
    assert est.rate() is not None and est.rate() * 0.002 < est.min_expected  # type: ignore[operator]
    for _ in range(3):
        est.observe(arrivals=8, waited_s=0.002)
    assert est.rate() * 0.002 > 1  # type: ignore[operator]


def test_a_batch_holding_everything_its_gateways_had_in_flight_goes_at_once() -> None:
    from services.modelservice.intake import Job, missing_inflight
    from services.queue.messages import RequestEntry

    def job(gateway: str, inflight: int) -> Job:
        entry = RequestEntry("r", gateway, 0.0, 0.0, b"", inflight=inflight)
        return Job(None, entry, None, None, None)  # type: ignore[arg-type]

    assert missing_inflight([job("rep:a", 1)]) == 0  # a lone closed-loop client
    assert missing_inflight([job("rep:a", 1), job("rep:a", 3), job("rep:a", 2)]) == 0  # all three of a
    assert missing_inflight([job("rep:a", 1), job("rep:a", 4)]) == 2  # a has two more out there
    assert missing_inflight([job("rep:a", 1), job("rep:b", 2)]) == 1  # b's other one may still come
    assert missing_inflight([job("rep:a", 0)]) is None  # unknown (an older gateway): the usual policy


def test_inflight_peaks_hold_a_lone_first_request_for_its_batch_mates() -> None:
    from services.modelservice.batching import InflightPeaks
    from services.modelservice.intake import Job, missing_inflight
    from services.queue.messages import RequestEntry

    def job(gateway: str, inflight: int) -> Job:
        entry = RequestEntry("r", gateway, 0.0, 0.0, b"", inflight=inflight)
        return Job(None, entry, None, None, None)  # type: ignore[arg-type]

    peaks = InflightPeaks(window_s=0.05)
    for inflight in (2, 3, 4):  # four closed-loop clients: the last batch held four
        peaks.observe("rep:a", inflight, now=1.0)
    peaks.observe("rep:a", 1, now=1.01)  # the first of the next four comes alone
    assert peaks.expected("rep:a", now=1.01) == 4
    assert missing_inflight([job("rep:a", 1)], peaks, now=1.01) == 3  # three more are on their way
    assert missing_inflight([job("rep:a", 1), job("rep:a", 2), job("rep:a", 3), job("rep:a", 4)], peaks, 1.01) == 0
    assert missing_inflight([job("rep:a", 1)]) == 0  # without peaks: its own count only
    # The load falls to one client: past the window the peak follows it down.
    peaks.observe("rep:a", 1, now=1.2)
    assert peaks.expected("rep:a", now=1.2) == 1
    assert missing_inflight([job("rep:a", 1)], peaks, now=1.2) == 0
    assert peaks.expected("rep:b", now=1.2) == 0  # a gateway never seen
    assert missing_inflight([job("rep:b", 0)], peaks, now=1.2) is None  # unknown counts: the usual policy


def test_inflight_peaks_forget_gateways_that_went_silent() -> None:
    from services.modelservice.batching import InflightPeaks

    peaks = InflightPeaks(window_s=0.05, prune_above=4)
    for i in range(4):  # four gateways that restarted, each under a new reply stream
        peaks.observe(f"rep:old{i}", 2, now=1.0)
    peaks.observe("rep:live", 3, now=1.9)  # past the limit, long after: the silent ones go
    assert sorted(peaks.peaks) == ["rep:live"]
    for i in range(3):
        peaks.observe(f"rep:new{i}", 1, now=1.91)
    peaks.observe("rep:new3", 1, now=1.92)  # all within the window: nothing to forget yet
    assert len(peaks.peaks) == 5 and peaks.expected("rep:live", now=1.92) == 3
