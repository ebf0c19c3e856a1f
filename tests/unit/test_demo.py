"""The demo's latency table: Prometheus' histogram_quantile over the gateway's own histogram."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from services.demo import latency_table, quantile
from services.metrics import Metrics


def test_quantile_interpolates_inside_its_bucket_as_prometheus_does() -> None:
    buckets = {0.01: 10.0, 0.1: 90.0, 1.0: 100.0, math.inf: 100.0}
    assert quantile(0.5, buckets) == pytest.approx(0.01 + 0.09 * (40 / 80))
    assert quantile(0.05, buckets) == pytest.approx(0.005)  # the first bucket starts at 0
    assert quantile(0.99, buckets) == pytest.approx(0.1 + 0.9 * 0.9)
    assert quantile(0.99, {0.1: 0.0, math.inf: 4.0}) == 0.1  # in +Inf: the highest finite bound
    assert math.isnan(quantile(0.5, {0.1: 0.0, math.inf: 0.0}))


def test_latency_table_reads_the_gateway_histogram() -> None:
    metrics = Metrics(CollectorRegistry())
    for n, seconds in enumerate([0.002] * 50 + [0.02] * 45 + [0.2] * 5):
        metrics.request_duration.labels("mnist_cnn", str(1 + n % 2)).observe(seconds)  # two versions, added up
    metrics.request_duration.labels("digit_gan", "1").observe(0.004)
    rows = latency_table(generate_latest(metrics.registry).decode())
    assert [(model, count) for model, count, *_ in rows] == [("digit_gan", 1), ("mnist_cnn", 100)]
    _, _, p50, p95, p99 = rows[1]
    assert 0.001 <= p50 <= 0.0025 and 0.01 <= p95 <= 0.025 and 0.1 <= p99 <= 0.25
