"""Grafana (deploy/grafana): the provisioning points at compose's Prometheus and mounts, the
dashboard has its panels, every metric it queries is one services/metrics.py defines (and,
for job="gateway", one the gateway exposes), and every PromQL expression parses in a real
Prometheus when one is installed."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from services.metrics import Metrics
from tests.support import free_port
from tests.unit.deploy_files import (DASHBOARD, DATASOURCE_UID, GATEWAY_FAMILIES, GRAFANA, METRIC_NAME,
                                     _environment, _load_yaml, _walk)
from tests.unit.deploy_files import compose  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = [value for key, value in _walk(dashboard.get("panels", [])) if key == "expr"]
    assert exprs and all(isinstance(e, str) and e.strip() for e in exprs)
    return exprs


def _defined_series() -> set[str]:
    """Every series name the Metrics registry can expose (histogram _bucket/_sum/_count, counter _total)."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
    return names


def _family(series: str) -> str:
    for suffix in ("_bucket", "_sum", "_count", "_total"):
        if series.endswith(suffix):
            return series[: -len(suffix)]
    return series


def test_grafana_provisioning(compose: dict[str, Any]) -> None:
    datasources = _load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    (prom,) = [d for d in datasources if d["type"] == "prometheus"]
    assert prom["uid"] == DATASOURCE_UID
    assert prom["url"] == "http://prometheus:9090"
    providers = _load_yaml(GRAFANA / "provisioning" / "dashboards" / "dashboards.yml")["providers"]
    paths = {p["options"]["path"] for p in providers}
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"] if v.startswith("./")}
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert mounts["./deploy/grafana/dashboards"] in paths
    env = _environment(grafana)
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true" and env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert [port.split(":", 1)[1] for port in grafana["ports"]] == ["3000:3000"]


def test_dashboard_shape(dashboard: dict[str, Any]) -> None:
    assert dashboard["title"] == "tensorgate latency" and dashboard["uid"]
    uids = {value["uid"] for key, value in _walk(dashboard) if key == "datasource" and isinstance(value, dict)
            and value.get("type") == "prometheus"}
    assert uids == {DATASOURCE_UID}
    (model,) = [v for v in dashboard["templating"]["list"] if v["name"] == "model"]
    assert model["definition"] == "label_values(tensorgate_request_duration_seconds_count, model)"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    types = {p["type"] for p in panels}
    assert {"timeseries", "heatmap", "table"} <= types
    titles = " | ".join(p["title"].lower() for p in panels)
    for word in ("latency", "queue", "compute", "throughput", "batch size", "pending", "error", "execution provider"):
        assert word in titles, word
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        for target in panel["targets"]:
            if "tensorgate_" in target["expr"] and "model" in target["expr"]:
                assert '"$model"' in target["expr"] or "tensorgate_dropped_replies" in target["expr"], target["expr"]


def test_dashboard_metrics_are_defined(dashboard: dict[str, Any]) -> None:
    defined = _defined_series()
    used: set[str] = set()
    for expr in _exprs(dashboard):
        names = set(METRIC_NAME.findall(expr))
        assert names, f"no tensorgate metric in {expr!r}"
        assert names <= defined, f"{expr!r} uses undefined {sorted(names - defined)}"
        used |= names
        if 'job="gateway"' in expr:
            families = {_family(n) for n in names}
            assert families <= GATEWAY_FAMILIES, f"the gateway does not expose {sorted(families - GATEWAY_FAMILIES)}"
    for var in dashboard["templating"]["list"]:
        assert set(METRIC_NAME.findall(var.get("definition", ""))) <= defined
    # The panels the dashboard promises.
    for family in ("tensorgate_request_duration_seconds", "tensorgate_queue_duration_seconds",
                   "tensorgate_compute_duration_seconds", "tensorgate_batch_size"):
        assert family + "_bucket" in used
    assert {"tensorgate_requests_total", "tensorgate_pending_requests", "tensorgate_execution_provider_info",
            "tensorgate_batch_size_sum", "tensorgate_batch_size_count"} <= used


def _get_json(url: str, timeout_s: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not installed (apt-get install prometheus): PromQL of the dashboard not checked")
    tmp = tmp_path_factory.mktemp("prometheus")
    (tmp / "prometheus.yml").write_text("global:\n  scrape_interval: 5s\nscrape_configs: []\n")
    port = free_port()
    log = (tmp / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                pytest.fail(f"prometheus exited: {(tmp / 'prometheus.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail("prometheus did not become ready in 15 s")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _grafana_to_promql(expr: str) -> str:
    """What Grafana sends for expr when every model is selected."""
    return expr.replace("$__rate_interval", "1m").replace("$model", ".*")


def test_dashboard_promql_parses(prometheus_url: str, dashboard: dict[str, Any]) -> None:
    queries = [_grafana_to_promql(e) for e in _exprs(dashboard)]
    queries.append("tensorgate_request_duration_seconds_count")  # the model variable's series
    for query in queries:
        assert "$" not in query, f"unsubstituted Grafana variable in {query!r}"
        url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        try:
            body = _get_json(url)
        except urllib.error.HTTPError as err:
            body = json.loads(err.read())
            err.close()
        assert body["status"] == "success", f"{query!r}: {body.get('error')}"

