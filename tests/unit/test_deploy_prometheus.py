"""deploy/prometheus/prometheus.yml scrapes every process compose runs, at its metrics port,
labelled by compose service (and passes promtool when it is installed)."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
from tests.unit.deploy_files import MODEL_PORTS, PROMETHEUS, _load_yaml, _role, _settings
from tests.unit.deploy_files import compose  # noqa: F401 (fixture)


def test_prometheus_scrapes_the_compose_services(compose: dict[str, Any]) -> None:
    config = _load_yaml(PROMETHEUS)
    assert config["global"]["scrape_interval"] == "5s"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"gateway", "model_services"} <= set(jobs)
    gateway = _settings(compose["services"]["gateway"])
    targets = [t for sc in jobs["gateway"]["static_configs"] for t in sc["targets"]]
    assert targets == [f"gateway:{gateway.metrics_port}"]

    # model_services: one DNS name (= compose service) per model service, at its metrics port.
    scraped: dict[str, int] = {}
    for sd in jobs["model_services"].get("dns_sd_configs", []):
        for name in sd["names"]:
            scraped[name] = int(sd["port"])
    for sc in jobs["model_services"].get("static_configs", []):
        for target in sc["targets"]:
            host, port = target.rsplit(":", 1)
            scraped[host] = int(port)
    expected = {
        name: _settings(s).metrics_port for name, s in compose["services"].items() if _role(s) == "services.modelservice"
    }
    assert scraped == expected
    assert {name: port for name, port in expected.items() if name in MODEL_PORTS} == {
        name: metrics for name, (_, metrics) in MODEL_PORTS.items()
    }
    # Every target is labelled with its compose service (the DNS name), not its replica's IP.
    assert {"source_labels": ["__meta_dns_name"], "target_label": "service"} in jobs["model_services"]["relabel_configs"]
    assert "prometheus.yml" in " ".join(compose["services"]["prometheus"]["volumes"])


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (apt-get install prometheus)")
def test_promtool_check_config() -> None:
    result = subprocess.run(["promtool", "check", "config", str(PROMETHEUS)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr

