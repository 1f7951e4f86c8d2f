"""The alerting rules: promtool accepts them and their unit tests pass; every alert is labelled,
described, linked to its runbook section and tested both firing and quiet; every aggregation keeps
the environment; Prometheus sends the alerts to an Alertmanager whose configuration amtool accepts."""

from __future__ import annotations

import re
from pathlib import Path

from tests.deploy.tools import ROOT, find_tool, run

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "alerts.yml"
RULE_TESTS = PROMETHEUS_DIR / "alerts_test.yml"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_URL = "https://github.com/flavor-entertainers/flavor-scheduler/blob/main/docs/runbook.md#"
INSTALL_PROMTOOL = "apt-get install -y prometheus (it brings promtool)"
INSTALL_AMTOOL = "apt-get install -y prometheus-alertmanager (it brings amtool)"
ALERTS = {
    "FlavorSchedulerDown",
    "FlavorSchedulerNotReady",
    "FlavorSchedulerJobPaused",
    "FlavorSchedulerJobStale",
    "FlavorSchedulerJobFailing",
    "FlavorSchedulerLastRunFailed",
    "FlavorSchedulerMessagesFailing",
    "FlavorSchedulerBacklogGrowing",
}


def _promtool(*args: str) -> tuple[int, str]:
    proc = run([find_tool("promtool", INSTALL_PROMTOOL), *args], cwd=PROMETHEUS_DIR)
    return proc.returncode, proc.stdout + proc.stderr


def _rules() -> list[tuple[str, str]]:
    """(alert name, the rule's text) for each rule of alerts.yml, in order."""
    text = RULES.read_text()
    heads = list(re.finditer(r"^ +- alert: (\w+)$", text, flags=re.MULTILINE))
    ends = [head.start() for head in heads[1:]] + [len(text)]
    return [(head.group(1), text[head.start() : end]) for head, end in zip(heads, ends, strict=True)]


def test_promtool_check_rules() -> None:
    code, output = _promtool("check", "rules", str(RULES))
    assert code == 0, output
    assert "SUCCESS" in output


def test_promtool_unit_tests_pass() -> None:
    code, output = _promtool("test", "rules", str(RULE_TESTS))
    assert code == 0, output
    assert "SUCCESS" in output


def test_promtool_check_config_of_the_compose_stack(tmp_path: Path) -> None:
    # prometheus.yml names the rules where the compose stack mounts them; point it at ours.
    config = tmp_path / "prometheus.yml"
    config.write_text(CONFIG.read_text().replace("/etc/prometheus/alerts.yml", str(RULES)))
    code, output = _promtool("check", "config", str(config))
    assert code == 0, output


def test_the_expected_alerts_exist() -> None:
    assert {name for name, _ in _rules()} == ALERTS


def test_every_rule_has_severity_summary_description_and_runbook() -> None:
    headings = set(re.findall(r"^## (\w+)\s*$", RUNBOOK.read_text(), flags=re.MULTILINE))
    for name, block in _rules():
        assert re.search(r"^ +severity: (critical|warning)$", block, flags=re.MULTILINE), name
        assert re.search(r"^ +summary: ", block, flags=re.MULTILINE), name
        assert re.search(r"^ +description: ", block, flags=re.MULTILINE), name
        assert f"runbook_url: {RUNBOOK_URL}{name.lower()}\n" in block, name
        assert name in headings, f"docs/runbook.md has no section '## {name}'"
        if "job_name" in block.partition("labels:")[0]:
            assert "{{ $labels.job_name }}" in block, f"{name}: the description should name the job"


def test_every_alert_is_tested_firing_and_quiet() -> None:
    text = RULE_TESTS.read_text()
    firing = set(re.findall(r"alertname: (\w+)\n +exp_alerts:\n +- exp_labels:", text))
    quiet = set(re.findall(r"alertname: (\w+)\n +exp_alerts: \[\]", text))
    assert firing >= ALERTS, f"never tested firing: {ALERTS - firing}"
    assert quiet >= ALERTS, f"never tested quiet: {ALERTS - quiet}"


def test_rules_and_scrape_config_agree_on_the_job_name() -> None:
    assert re.search(r"^ +- job_name: flavor-scheduler$", CONFIG.read_text(), flags=re.MULTILINE)
    assert 'up{job="flavor-scheduler"}' in RULES.read_text()


def test_every_aggregation_keeps_job_and_environment() -> None:
    """A rule that drops `environment` would let a healthy staging hide a stale production."""
    text = "\n".join(line for line in RULES.read_text().splitlines() if not line.lstrip().startswith("#"))
    groupings = re.findall(r"\b(?:by|on) \(([^)]*)\)", text)
    assert groupings
    for grouping in groupings:
        labels = {label.strip() for label in grouping.split(",")}
        assert {"job", "environment"} <= labels, grouping


def test_prometheus_sends_alerts_to_alertmanager() -> None:
    section = r"^alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: \[\S+\]$"
    assert re.search(section, CONFIG.read_text(), flags=re.MULTILINE)


def test_amtool_accepts_the_alertmanager_config() -> None:
    proc = run([find_tool("amtool", INSTALL_AMTOOL), "check-config", str(ALERTMANAGER_CONFIG)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout
