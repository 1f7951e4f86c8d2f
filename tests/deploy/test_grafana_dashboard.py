"""The Grafana dashboard: a current JSON model that picks its Prometheus through a variable (no
hard-coded data source uid), queries the daemon's metrics in every panel, follows the environment
and instance selectors in every query, draws bars that add up to the true count, shows readiness,
and colours job staleness with the alert thresholds; the provisioning files load it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from scheduler.vocabulary import JobName
from tests.deploy.tools import ROOT

GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "flavor-scheduler.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
MIN_SCHEMA_VERSION = 39
# The metrics the dashboard must show (CONTRACT §7), as they appear in queries.
SHOWN_METRICS = (
    "flavor_scheduler_job_runs_total",
    "flavor_scheduler_job_duration_seconds_bucket",
    "flavor_scheduler_job_last_success_timestamp_seconds",
    "flavor_scheduler_job_next_run_timestamp_seconds",
    "flavor_scheduler_job_errors_total",
    "flavor_scheduler_job_skipped_total",
    "flavor_scheduler_rows_deleted_total",
    "flavor_scheduler_bookings_cancelled_total",
    "flavor_scheduler_reminders_sent_total",
    "flavor_scheduler_messages_total",
    "flavor_scheduler_messages_pending",
    "flavor_scheduler_provider_request_duration_seconds_bucket",
    "flavor_scheduler_ready",
    "flavor_scheduler_job_paused",
    "flavor_scheduler_job_last_error_timestamp_seconds",
)
SCOPE = ('environment=~"$environment"', 'instance=~"$instance"')
# A metric's selector in a query: the name, and its braces when it has them.
SELECTOR = re.compile(r"\b(flavor_scheduler_\w+|up)\b(\{[^}]*\})?")
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _walk(node: Any, path: str = "$") -> Iterator[tuple[str, str, Any]]:
    """(path, key, value) for every key of every object in the document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _walk(item, f"{path}[{index}]")


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that shows data (rows excluded, panels inside collapsed rows included)."""
    found = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def _variable(dashboard: dict[str, Any], name: str) -> dict[str, Any]:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert name in variables, f"no template variable {name!r}"
    variable: dict[str, Any] = variables[name]
    return variable


def test_is_a_current_dashboard_model(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] >= MIN_SCHEMA_VERSION
    assert dashboard["title"] == "flavor-scheduler"
    assert dashboard["uid"] == "flavor-scheduler"
    assert dashboard.get("id") is None, "an exported id would clash on import"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_datasource_is_a_variable(dashboard: dict[str, Any]) -> None:
    variable = _variable(dashboard, "datasource")
    assert variable["type"] == "datasource"
    assert variable["query"] == "prometheus"


def test_job_name_variable_lists_the_jobs(dashboard: dict[str, Any]) -> None:
    variable = _variable(dashboard, "job_name")
    assert variable["type"] == "query"
    assert variable["multi"] is True
    assert variable["includeAll"] is True
    assert variable["datasource"] == DATASOURCE
    assert variable["definition"] == (
        'label_values(flavor_scheduler_job_runs_total{environment=~"$environment", instance=~"$instance"}, job_name)'
    )
    assert variable["query"]["query"] == variable["definition"]


def test_environment_and_instance_variables(dashboard: dict[str, Any]) -> None:
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names.index("environment") < names.index("instance") < names.index("job_name"), "each narrows the next"
    environment = _variable(dashboard, "environment")
    assert environment["multi"] is False, "one environment at a time: staging's figures never mix with production's"
    assert environment["definition"] == 'label_values(flavor_scheduler_build_info{job="flavor-scheduler"}, environment)'
    instance = _variable(dashboard, "instance")
    assert (instance["multi"], instance["includeAll"], instance["allValue"]) == (True, True, ".*")
    assert 'environment=~"$environment"' in instance["definition"]
    for variable in (environment, instance):
        assert variable["type"] == "query"
        assert variable["datasource"] == DATASOURCE
        assert variable["query"]["query"] == variable["definition"]


def _targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, query) for every query of every panel."""
    for panel in _panels(dashboard):
        for target in panel["targets"]:
            yield panel["title"], target["expr"]


def test_every_query_follows_the_environment_and_instance(dashboard: dict[str, Any]) -> None:
    for title, expr in _targets(dashboard):
        selectors = SELECTOR.findall(expr)
        assert selectors, f"{title}: {expr}"
        for name, braces in selectors:
            for matcher in SCOPE:
                assert matcher in braces, f"{title}: {name}{braces} lacks {matcher}"


def _bar_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in _panels(dashboard) if p["fieldConfig"]["defaults"].get("custom", {}).get("drawStyle") == "bars"]


def test_bars_add_up_to_the_true_count(dashboard: dict[str, Any]) -> None:
    """`increase(x[$__rate_interval])` per bar counts every event in several bars (the windows are
    longer than the step); each bar must be the rise over its own interval (a replica's last
    samples before it stopped, and the rise across a failed scrape, included), and no interval
    shorter than a scrape or two."""
    bars = _bar_panels(dashboard)
    assert len(bars) == 9
    for panel in bars:
        assert panel.get("interval") == "1m", panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            assert "$__rate_interval" not in expr, panel["title"]
            assert "$__range" not in expr, panel["title"]
            # The last sample in the bar's interval minus the last one before it (a failed scrape's
            # staleness marker does not hide it, as it would from `x offset $__interval`).
            now, before = (
                r"last_over_time\((\w+\{[^}]*\})\[\$__interval\]\)",
                r"last_over_time\(\1\[5m\] offset \$__interval\)",
            )
            assert re.search(f"{now} - {before}", expr), expr


def test_readiness_is_shown_per_replica(dashboard: dict[str, Any]) -> None:
    (panel,) = [p for p in _panels(dashboard) if p["title"] == "Ready"]
    (target,) = panel["targets"]
    assert target["expr"].startswith("max by (instance) (flavor_scheduler_ready{")
    assert target["legendFormat"] == "{{instance}}"


def test_paused_jobs_are_shown_by_name(dashboard: dict[str, Any]) -> None:
    (panel,) = [p for p in _panels(dashboard) if p["title"] == "Paused"]
    (target,) = panel["targets"]
    assert target["expr"].startswith("max by (job_name) (flavor_scheduler_job_paused{")  # every replica says the same
    assert target["legendFormat"] == "{{job_name}}"
    (mapping,) = panel["fieldConfig"]["defaults"]["mappings"]
    assert mapping["options"]["1"]["text"] == "paused"
    assert mapping["options"]["0"]["text"] == "scheduled"


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:  # the top level: rows and the panels between them
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_no_hard_coded_datasource_uid(dashboard: dict[str, Any]) -> None:
    for path, key, value in _walk(dashboard):
        if key == "datasource":
            assert value == DATASOURCE, f"{path}.datasource is {value!r}"
        if key == "uid" and path != "$":
            assert value == "${datasource}", f"{path}.uid is {value!r}"
        if key in ("__inputs", "__requires"):
            pytest.fail(f"{path}.{key}: an export for sharing, not the provisioned model")


def test_every_panel_queries_the_daemon(dashboard: dict[str, Any]) -> None:
    for panel in _panels(dashboard):
        title = panel["title"]
        assert panel["datasource"] == DATASOURCE, title
        assert panel.get("targets"), f"panel {title!r} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, title
            assert re.search(r"flavor_scheduler_\w+|up\{job=\"flavor-scheduler\"[,}]", target["expr"]), title
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys(), title


def test_job_panels_follow_the_job_name_variable(dashboard: dict[str, Any]) -> None:
    for panel in _panels(dashboard):
        for target in panel["targets"]:
            for selector in re.findall(r"flavor_scheduler_job_\w+\{[^}]*\}", target["expr"]):
                assert 'job_name=~"$job_name"' in selector, f"{panel['title']}: {selector}"


def test_the_contract_metrics_are_all_shown(dashboard: dict[str, Any]) -> None:
    queries = "\n".join(t["expr"] for panel in _panels(dashboard) for t in panel["targets"])
    missing = [metric for metric in SHOWN_METRICS if metric not in queries]
    assert missing == []


def _red_from(thresholds: dict[str, Any]) -> float:
    return float(min(step["value"] for step in thresholds["steps"] if step["color"] == "red"))


def _alert_stale_thresholds() -> dict[str, float]:
    """job_name selector -> seconds, from the "last success too old" rules of alerts.yml."""
    pattern = (
        r"flavor_scheduler_job_last_success_timestamp_seconds\{job_name=~?\"([^\"]+)\"\}\)\)"
        r" > (\d+) \* (\d+)"
    )
    return {sel: float(int(a) * int(b)) for sel, a, b in re.findall(pattern, ALERTS.read_text())}


def test_staleness_is_coloured_with_the_alert_thresholds(dashboard: dict[str, Any]) -> None:
    (panel,) = [p for p in _panels(dashboard) if p["title"] == "Time since last success"]
    assert "flavor_scheduler_job_last_success_timestamp_seconds" in panel["targets"][0]["expr"]
    assert panel["targets"][0]["legendFormat"] == "{{job_name}}"  # the overrides match on it
    field_config = panel["fieldConfig"]
    alert_thresholds = _alert_stale_thresholds()
    for job in JobName:
        (alert_threshold,) = [t for sel, t in alert_thresholds.items() if re.fullmatch(sel, job.value)]
        thresholds = field_config["defaults"]["thresholds"]
        for override in field_config["overrides"]:
            if re.fullmatch(override["matcher"]["options"], job.value):
                thresholds = next(p["value"] for p in override["properties"] if p["id"] == "thresholds")
        assert _red_from(thresholds) == alert_threshold, job.value


def test_provisioning_loads_the_dashboard_from_prometheus() -> None:
    datasource = (GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text()
    assert "type: prometheus" in datasource
    assert "url: http://prometheus:9090" in datasource
    provider = (GRAFANA_DIR / "provisioning" / "dashboards" / "flavor-scheduler.yml").read_text()
    path = re.search(r"^ +path: (\S+)$", provider, flags=re.MULTILINE)
    assert path, provider
    compose = (ROOT / "deploy" / "docker-compose.yml").read_text()
    assert f"./grafana/flavor-scheduler.json:{path.group(1)}/flavor-scheduler.json:ro" in compose
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in compose
