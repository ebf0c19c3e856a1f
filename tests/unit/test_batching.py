from __future__ import annotations

from services.modelservice.batching import BatchPolicy


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
