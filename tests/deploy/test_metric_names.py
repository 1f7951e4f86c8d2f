"""The dashboard and the alert rules name only metrics the daemon exports, with the labels it
gives them; and the exported text passes `promtool check metrics`."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from scheduler.metrics import Metrics
from tests.deploy.tools import ROOT, find_tool

_NAME = re.compile(r"\b(flavor_scheduler_[a-z_]+)\b")
_SUFFIXES = ("_bucket", "_count", "_sum", "_created")


def exported() -> tuple[str, dict[str, set[str]]]:
    """The exposition text and, per sample name, the label names it carries."""
    registry = CollectorRegistry()
    Metrics(registry, "1.2.3")
    text = generate_latest(registry).decode()
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return text, labels


def _expressions(node: Any) -> list[str]:
    """Every PromQL string of the dashboard's JSON model."""
    if isinstance(node, dict):
        found = [
            value for key, value in node.items() if key in ("expr", "query", "definition") and isinstance(value, str)
        ]
        for value in node.values():
            found += _expressions(value)
        return found
    if isinstance(node, list):
        return [expr for item in node for expr in _expressions(item)]
    return []


def _rule_text() -> str:
    """The rules file without its comment lines (a YAML parser is not needed to find names)."""
    lines = (ROOT / "deploy/prometheus/alerts.yml").read_text().splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


def _names_in(expressions: list[str]) -> set[str]:
    return {name for expr in expressions for name in _NAME.findall(expr)}


def test_dashboard_metrics_are_exported() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/flavor-scheduler.json").read_text())
    names = _names_in(_expressions(dashboard))
    _, labels = exported()
    assert names, "the dashboard names no metric"
    missing = sorted(name for name in names if name not in labels)
    assert not missing, f"the dashboard queries metrics the daemon does not export: {missing}"


def test_alert_rule_metrics_are_exported() -> None:
    names = _names_in([_rule_text()])
    _, labels = exported()
    assert names
    missing = sorted(name for name in names if name not in labels)
    assert not missing, f"the alert rules name metrics the daemon does not export: {missing}"


def test_labels_used_by_rules_and_dashboard_exist() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/flavor-scheduler.json").read_text())
    _, labels = exported()
    for expr in [*_expressions(dashboard), _rule_text()]:
        for name, selector in re.findall(r"\b(flavor_scheduler_[a-z_]+)\{([^}]*)\}", expr):
            used = set(re.findall(r"([a-z_]+)\s*(?:=~|!~|!=|=)", selector))
            # The target's labels: job and instance from Prometheus, environment from the scrape config.
            assert used <= labels[name] | {"job", "instance", "environment"}, f"{name}{{{selector}}} in {expr!r}"


def test_promtool_check_metrics_accepts_the_exposition() -> None:
    promtool = find_tool("promtool", "apt-get install prometheus")
    text, _ = exported()
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
