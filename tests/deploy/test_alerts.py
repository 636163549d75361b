"""Monitoring: alerts, dashboard, adapter rules and the Prometheus Operator's resources.

Queries must be valid PromQL (promtool) on metrics the server exports; alerts are
unit-tested with `promtool test rules`. ServiceMonitor and PrometheusRule are custom
resources with no schema in kubernetes-validate, so their structure is checked here.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.conftest import (
    OBSERVABILITY,
    PROMETHEUS_SERIES,
    load_documents,
    matches,
    only,
    promql_metric_names,
    render,
)

RULES = OBSERVABILITY / "alerts.rules.yaml"
RULE_TESTS = OBSERVABILITY / "alerts.test.yaml"
DASHBOARD = OBSERVABILITY / "grafana-dashboard.json"
# Values for Grafana's variables and prometheus-adapter's templates, to parse queries.
_SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$namespace": "i2i",
    "$model": ".*",
    "<<.Series>>": "{series}",
    "<<.LabelMatchers>>": 'namespace="i2i",pod=~"a|b"',
    "<<.GroupBy>>": "pod",
}


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_queries() -> list[str]:
    """Every PromQL query of the dashboard: panel targets and variable queries."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found = re.fullmatch(r"label_values\((.+), *(\w+)\)", variable["query"]["query"])
            assert found, f"variable {variable['name']}: expected label_values(SELECTOR, LABEL)"
            queries.append(found.group(1))
    return queries


def adapter_queries(rule: dict[str, Any]) -> list[str]:
    """A prometheus-adapter rule's queries, templates filled in as the adapter would."""
    series = re.fullmatch(r"\^?([A-Za-z_:][\w:]*)\$?", rule["name"]["matches"])
    assert series, f"name.matches should name one series: {rule['name']['matches']}"
    queries = [rule["seriesQuery"], rule["metricsQuery"]]
    for template, value in _SUBSTITUTIONS.items():
        queries = [q.replace(template, value.format(series=series.group(1))) for q in queries]
    return queries


def fill_grafana_variables(query: str) -> str:
    for variable, value in _SUBSTITUTIONS.items():
        query = query.replace(variable, value)
    return query


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_metric_name_extraction_sees_through_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, pod) (rate(a_bucket{code=~"x|y"}[5m])))'
        " / on (pod) group_left b_total offset 1m > bool 1e3 unless max(c) by (namespace)"
    )
    assert promql_metric_names(expr) == {"a_bucket", "b_total", "c"}
    assert promql_metric_names("sum(rate(x[$__rate_interval]))") == {"x"}


def test_rules_pass_promtool_check(promtool: str) -> None:
    done = run([promtool, "check", "rules", RULES.name], OBSERVABILITY)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout


def test_rules_pass_their_unit_tests(promtool: str) -> None:
    done = run([promtool, "test", "rules", RULE_TESTS.name], OBSERVABILITY)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_is_tested_firing_and_quiet() -> None:
    cases: dict[str, list[list[Any]]] = {}
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test["alert_rule_test"]:
            cases.setdefault(case["alertname"], []).append(case.get("exp_alerts") or [])
    for rule in alert_rules():
        expected = cases.get(rule["alert"])
        assert expected, f"{rule['alert']} has no case in {RULE_TESTS.name}"
        assert any(expected), f"{rule['alert']}: no case where it fires"
        # promtool compares the whole list of alerts, so the healthy series of a firing
        # case stay quiet too; an empty case also checks the `for:` wait or the recovery.
        assert not all(expected), f"{rule['alert']}: no case where it stays quiet"


def test_prometheusrule_carries_the_same_rules() -> None:
    rules_file = yaml.safe_load(RULES.read_text())
    resource = yaml.safe_load((OBSERVABILITY / "prometheusrule.yaml").read_text())
    assert resource["spec"]["groups"] == rules_file["groups"], (
        "prometheusrule.yaml and alerts.rules.yaml differ: copy the groups of "
        "alerts.rules.yaml under spec: in prometheusrule.yaml"
    )


def test_alerts_say_how_bad_and_what_to_do() -> None:
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_alerts_read_only_metrics_the_server_exports(
    exported_metric_names: frozenset[str],
) -> None:
    used = set().union(*(promql_metric_names(rule["expr"]) for rule in alert_rules()))
    assert used - PROMETHEUS_SERIES <= exported_metric_names, used - exported_metric_names
    # The alerts this file promises: queue time, errors, batches, readiness, GPUs.
    assert {
        "i2i_inference_queue_duration_seconds_bucket",
        "i2i_inference_requests_total",
        "i2i_inference_exec_failures_total",
        "i2i_server_ready",
        "i2i_model_info",
        "i2i_gpu_memory_total_bytes",
    } <= used


def test_dashboard_is_grafana_json_on_exported_metrics(
    exported_metric_names: frozenset[str],
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36 and dashboard["uid"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], f"panel {panel['title']!r} has no query"
    used = set().union(*(promql_metric_names(q) for q in dashboard_queries()))
    assert used <= exported_metric_names, used - exported_metric_names
    wanted = {
        "i2i_inference_requests_total",  # request rate by code
        "i2i_inference_images_total",
        "i2i_inference_request_duration_seconds_bucket",
        "i2i_inference_queue_duration_seconds_bucket",
        "i2i_inference_compute_duration_seconds_bucket",
        "i2i_inference_batch_size_bucket",
        "i2i_inference_pending_requests",
        "i2i_inference_in_flight_requests",
        "i2i_gpu_utilization_ratio",
        "i2i_gpu_memory_used_bytes",
        "i2i_model_load_duration_seconds",
    }
    assert wanted <= used, f"panels missing for {wanted - used}"


def test_adapter_rules_read_exported_metrics(
    adapter_rules: list[dict[str, Any]], exported_metric_names: frozenset[str]
) -> None:
    for rule in adapter_rules:
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
        for query in adapter_queries(rule):
            used = promql_metric_names(query)
            assert used and used <= exported_metric_names, f"{query}: {used}"


def test_dashboard_and_adapter_queries_are_valid_promql(
    promtool: str, adapter_rules: list[dict[str, Any]], tmp_path: Path
) -> None:
    queries = [fill_grafana_variables(q) for q in dashboard_queries()]
    queries += [q for rule in adapter_rules for q in adapter_queries(rule)]
    records = [{"record": f"check:query_{i}", "expr": q} for i, q in enumerate(queries)]
    rules_file = tmp_path / "queries.rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": records}]}))
    done = run([promtool, "check", "rules", rules_file.name], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("placeholder", ["<<", "$"])
def test_query_checks_fill_every_placeholder(
    adapter_rules: list[dict[str, Any]], placeholder: str
) -> None:
    queries = [fill_grafana_variables(q) for q in dashboard_queries()]
    queries += [q for rule in adapter_rules for q in adapter_queries(rule)]
    left = [q for q in queries if placeholder in q]
    assert not left, f"unfilled {placeholder!r}: add it to _SUBSTITUTIONS: {left}"


def test_servicemonitor_scrapes_the_metrics_port_of_exactly_one_service(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    monitor = only(load_documents(OBSERVABILITY / "servicemonitor.yaml"), "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    for target, docs in rendered.items():
        services = [
            s for s in docs if s["kind"] == "Service" and matches(selector, s["metadata"]["labels"])
        ]
        assert len(services) == 1, f"{target}: scraping several Services duplicates series"
        port_names = {p["name"] for p in services[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in port_names
            assert endpoint["path"] == "/metrics"
        pod_labels = only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
        if target != "base":  # the overlays label pods for the GPU alerts
            assert set(monitor["spec"]["podTargetLabels"]) <= set(pod_labels)


# Just the fields these files use, with the types the Prometheus Operator's CRDs give them.
_SERVICE_MONITOR_SPEC = {
    "type": "object",
    "required": ["selector", "endpoints"],
    "additionalProperties": False,
    "properties": {
        "selector": {
            "type": "object",
            "properties": {"matchLabels": {"type": "object"}},
            "additionalProperties": False,
        },
        "podTargetLabels": {"type": "array", "items": {"type": "string"}},
        "endpoints": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["port"],
                "additionalProperties": False,
                "properties": {
                    "port": {"type": "string"},
                    "path": {"type": "string"},
                    "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                    "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                },
            },
        },
    },
}
_RULE = {
    "type": "object",
    "required": ["alert", "expr"],
    "additionalProperties": False,
    "properties": {
        "alert": {"type": "string"},
        "expr": {"type": "string"},
        "for": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
_PROMETHEUS_RULE_SPEC = {
    "type": "object",
    "required": ["groups"],
    "additionalProperties": False,
    "properties": {
        "groups": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "rules"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string"},
                    "rules": {"type": "array", "items": _RULE},
                },
            },
        }
    },
}


@pytest.mark.parametrize(
    ("path", "kind", "spec_schema"),
    [
        ("servicemonitor.yaml", "ServiceMonitor", _SERVICE_MONITOR_SPEC),
        ("prometheusrule.yaml", "PrometheusRule", _PROMETHEUS_RULE_SPEC),
    ],
)
def test_custom_resources_have_the_operators_shape(
    kubectl: str, path: str, kind: str, spec_schema: dict[str, Any]
) -> None:
    (doc,) = load_documents(OBSERVABILITY / path)
    assert (doc["apiVersion"], doc["kind"]) == ("monitoring.coreos.com/v1", kind)
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
    # Metadata is Kubernetes' own: validate it with a core kind's schema.
    kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]},
        "1.34",
        strict=True,
    )
    jsonschema.validate(doc["spec"], spec_schema)
    assert doc in render(kubectl, OBSERVABILITY)  # applied by deploy/observability
