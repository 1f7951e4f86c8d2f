"""A real Prometheus and Alertmanager for the monitoring test: the shipped configuration adapted to
this machine (local targets, 1-second intervals, a copy of the rules whose `for:` is shortened),
each tool a subprocess on a free port of 127.0.0.1 with its data in a temporary folder, and the
few calls of their HTTP APIs the test makes. Also the dashboard's queries, with Grafana's
variables substituted as Grafana would.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.acceptance.daemons import eventually
from tests.deploy.tools import ROOT, find_tool
from tests.fakes.providers import unused_local_url

PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "flavor-scheduler.json"
INSTALL = "bash .ci/install-tools (Debian's prometheus and prometheus-alertmanager)"
INTERVAL = "1s"  # scrapes and rule evaluations
START_SECONDS = 30.0
STOP_SECONDS = 10.0


def free_port() -> int:
    """A port of 127.0.0.1 nothing listens on right now."""
    return int(unused_local_url().rsplit(":", 1)[1])


def shortened_rules(wait: str) -> str:
    """alerts.yml as shipped, every `for:` cut to `wait`, under a header that says so."""
    text, count = re.subn(r"^(\s+for:) \S+$", rf"\g<1> {wait}", RULES.read_text(), flags=re.MULTILINE)
    assert count, "alerts.yml has no `for:` to shorten"
    return f"# A copy of deploy/prometheus/alerts.yml for the monitoring test: every `for:` is {wait}.\n{text}"


def prometheus_config(*, rules: Path, scheduler_targets: list[str], alertmanager: str, self_target: str) -> str:
    """prometheus.yml as shipped, pointed at this machine's daemons, rules and Alertmanager."""
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"].update(scrape_interval=INTERVAL, evaluation_interval=INTERVAL)
    config["rule_files"] = [str(rules)]
    (alertmanagers,) = config["alerting"]["alertmanagers"]
    (alertmanagers_static,) = alertmanagers["static_configs"]
    alertmanagers_static["targets"] = [alertmanager]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    (scheduler_static,) = jobs["flavor-scheduler"]["static_configs"]
    scheduler_static["targets"] = scheduler_targets  # its labels (environment) stay as shipped
    (own_static,) = jobs["prometheus"]["static_configs"]
    own_static["targets"] = [self_target]
    return yaml.safe_dump(config, sort_keys=False)


@dataclass
class Tool:
    """One tool's process; its output goes to a log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    url: str

    @classmethod
    def start(cls, name: str, args: list[str], *, port: int, workdir: Path) -> Tool:
        log_path = workdir / f"{name}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(args, cwd=workdir, stdout=log_file, stderr=subprocess.STDOUT)
        return cls(name, process, log_path, f"http://127.0.0.1:{port}")

    async def wait_ready(self, http: aiohttp.ClientSession) -> None:
        async def ready() -> bool | None:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.process.returncode}:\n{self.log_path.read_text()}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{self.url}/-/ready") as response:
                    return True if response.status == 200 else None
            return None

        await eventually(ready, within=START_SECONDS, what=f"{self.name} to be ready")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def alertmanager(workdir: Path) -> Iterator[Tool]:
    """Alertmanager with the shipped configuration; clustering off (it would bind 0.0.0.0:9094)."""
    port = free_port()
    tool = Tool.start(
        "alertmanager",
        [
            find_tool("prometheus-alertmanager", INSTALL),
            f"--config.file={ALERTMANAGER_CONFIG}",
            f"--storage.path={workdir / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        port=port,
        workdir=workdir,
    )
    try:
        yield tool
    finally:
        tool.stop()


@contextlib.asynccontextmanager
async def prometheus(
    http: aiohttp.ClientSession, workdir: Path, *, scheduler_targets: list[str], alertmanager_url: str, wait: str
) -> AsyncIterator[Tool]:
    """Prometheus with the adapted configuration, ready, its targets scraped, then the shortened
    rules loaded (a reload): a Prometheus that has just started has scraped nothing for a few
    seconds, which `absent(up)` would take for every replica gone once `for:` is seconds long."""
    port = free_port()
    rules = workdir / "alerts.yml"
    rules.write_text(shortened_rules(wait))
    config = workdir / "prometheus.yml"

    def configure(*, with_rules: bool) -> None:
        adapted = prometheus_config(
            rules=rules,
            scheduler_targets=scheduler_targets,
            alertmanager=alertmanager_url.removeprefix("http://"),
            self_target=f"127.0.0.1:{port}",
        )
        config.write_text(adapted if with_rules else adapted.replace(str(rules), "/dev/null"))

    configure(with_rules=False)
    tool = Tool.start(
        "prometheus",
        [
            find_tool("prometheus", INSTALL),
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            # Firing alerts are sent again every second (not every minute): one sent while the
            # reload below rediscovers Alertmanager is not lost for a minute.
            "--rules.alert.resend-delay=1s",
        ],
        port=port,
        workdir=workdir,
    )
    try:
        await tool.wait_ready(http)

        async def scraped() -> bool | None:
            found = values(await query(http, tool.url, 'count(up{job="flavor-scheduler"} == 1)'))
            return True if found == [len(scheduler_targets)] else None

        await eventually(scraped, within=START_SECONDS, what="Prometheus to scrape every daemon")
        configure(with_rules=True)
        tool.process.send_signal(signal.SIGHUP)

        async def rules_loaded() -> bool | None:
            async with http.get(f"{tool.url}/api/v1/rules") as response:
                groups = (await response.json())["data"]["groups"]
            return True if groups else None

        await eventually(rules_loaded, within=START_SECONDS, what="Prometheus to load the rules")
        yield tool
    finally:
        tool.stop()


# --- the APIs ----------------------------------------------------------------------------------

Labels = frozenset[tuple[str, str]]
IDENTITY = ("alertname", "severity", "instance", "job_name", "channel")
"""The labels that tell the alerts of this test apart."""


def identity(labels: dict[str, str]) -> Labels:
    return frozenset((name, labels[name]) for name in IDENTITY if name in labels)


def alert(alertname: str, **labels: str) -> Labels:
    return identity({"alertname": alertname, **labels})


async def active_alerts(http: aiohttp.ClientSession, url: str) -> dict[Labels, dict[str, Any]]:
    """Alertmanager's alerts that are firing now (a resolved one ends in the past), by identity."""
    async with http.get(f"{url}/api/v2/alerts") as response:
        assert response.status == 200, await response.text()
        alerts = await response.json()
    now = datetime.now(UTC)
    return {
        identity(found["labels"]): found
        for found in alerts
        if found["status"]["state"] == "active" and datetime.fromisoformat(found["endsAt"]) > now
    }


async def query(http: aiohttp.ClientSession, url: str, expr: str, **params: float | str) -> list[dict[str, Any]]:
    """A PromQL query (instant, or a range with start/end/step): its result list."""
    path = "query_range" if "step" in params else "query"
    async with http.get(f"{url}/api/v1/{path}", params={"query": expr, **params}) as response:
        body = await response.json()
    assert body.get("status") == "success", f"{expr}: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def values(result: list[dict[str, Any]]) -> list[float]:
    """Every number of a query's result (instant or range), NaN left out."""
    found = []
    for series in result:
        for _, value in series.get("values", [series.get("value")]):
            number = float(value)
            if not math.isnan(number):
                found.append(number)
    return found


# --- the dashboard ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Panel:
    title: str
    bars: bool
    interval: str | None
    targets: list[dict[str, Any]]


def dashboard_panels() -> list[Panel]:
    """The dashboard's panels that query (rows' own panels included)."""
    model = json.loads(DASHBOARD.read_text())
    flat: list[dict[str, Any]] = []
    for panel in model["panels"]:
        flat.extend(panel.get("panels", []) if panel["type"] == "row" else [panel])
    return [
        Panel(
            title=panel["title"],
            bars=panel["fieldConfig"]["defaults"].get("custom", {}).get("drawStyle") == "bars",
            interval=panel.get("interval"),
            targets=panel["targets"],
        )
        for panel in flat
    ]


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Grafana's variables replaced as Grafana does ($name); an unknown one fails the test."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in variables, f"no value for ${name} in {expr}"
        return variables[name]

    return re.sub(r"\$(\w+)", value, expr)


def seconds(started: float) -> str:
    """A duration since `started` (time.time()) as PromQL writes it, whole seconds rounded up."""
    return f"{math.ceil(time.time() - started)}s"
