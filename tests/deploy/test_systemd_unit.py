"""The systemd unit: systemd's own verifier accepts it, its sandbox scores well, and it keeps the
promises the deployment guide makes (notify, credentials, stop timeout); env.example documents the
real settings with their real defaults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scheduler.jobs.catalog import schedule_for
from scheduler.settings import Settings, variable_names
from scheduler.settings_sources import SECRET_NAMES
from scheduler.vocabulary import JobName
from tests.deploy.tools import ROOT, find_tool, run

UNIT = ROOT / "deploy" / "systemd" / "flavor-scheduler.service"
ENV_EXAMPLE = ROOT / "deploy" / "systemd" / "env.example"
EXEC_START = "/opt/flavor-scheduler/.venv/bin/flavor-scheduler"
MAX_EXPOSURE = 2.0
SHUTDOWN_TIMEOUT_DEFAULT_SECONDS = 30
INSTALL_SYSTEMD = "apt-get install -y systemd (it brings systemd-analyze)"
OPTIONAL_SECRETS = ("twilio_auth_token", "resend_api_key", "cron_secret")


def _directives(text: str) -> dict[str, list[str]]:
    """`Section.Key` -> every value given, in order (comments and blank lines skipped)."""
    found: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        found.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return found


@pytest.fixture
def unit_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart= pointed at an executable that exists: `verify` insists on one."""
    fake = tmp_path / "bin" / "flavor-scheduler"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    text = UNIT.read_text()
    assert f"\nExecStart={EXEC_START}\n" in text, "the unit no longer starts the documented path"
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(f"ExecStart={EXEC_START}", f"ExecStart={fake}"))
    return copy


def _verify(unit: Path) -> tuple[int, list[str]]:
    tool = find_tool("systemd-analyze", INSTALL_SYSTEMD)
    proc = run([tool, "verify", "--man=no", str(unit)])
    # Only what concerns our unit: the host's own units may carry warnings of their own.
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "flavor-scheduler" in line]
    return proc.returncode, lines


def test_systemd_analyze_verify_accepts_the_unit(unit_copy: Path) -> None:
    returncode, complaints = _verify(unit_copy)
    assert returncode == 0, complaints
    assert complaints == []


def test_systemd_analyze_verify_would_catch_a_misspelt_directive(unit_copy: Path) -> None:
    unit_copy.write_text(unit_copy.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict"))
    _, complaints = _verify(unit_copy)
    assert any("ProtectSytem" in line for line in complaints), complaints


def test_sandbox_exposure_level_is_at_most_2(unit_copy: Path) -> None:
    tool = find_tool("systemd-analyze", INSTALL_SYSTEMD)
    proc = run([tool, "security", "--offline=true", "--no-pager", str(unit_copy)])
    assert proc.returncode == 0, proc.stderr
    match = re.search(r"Overall exposure level for flavor-scheduler\.service: (\d+(?:\.\d+)?)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    score = float(match.group(1))
    exposed = [line.strip() for line in proc.stdout.splitlines() if line.lstrip().startswith("✗")]
    print(f"systemd-analyze security: overall exposure level {score}")
    print("\n".join(exposed))
    assert score <= MAX_EXPOSURE, "\n".join(exposed)


def test_unit_is_a_notify_service_with_credentials_and_a_stop_timeout() -> None:
    d = _directives(UNIT.read_text())
    assert d["Service.Type"] == ["notify"]
    assert d["Service.NotifyAccess"] == ["main"]
    assert d["Service.ExecStart"] == [EXEC_START]
    assert d["Service.DynamicUser"] == ["yes"]
    assert d["Service.Restart"] == ["on-failure"]
    assert d["Service.RestartSec"] == ["5"]
    assert d["Service.KillSignal"] == ["SIGTERM"]
    assert d["Service.EnvironmentFile"] == ["/etc/flavor-scheduler/env"]
    assert d["Service.LoadCredential"] == ["database_url:/etc/flavor-scheduler/credentials/database_url"]
    assert "DATABASE_URL_FILE=%d/database_url" in d["Service.Environment"]
    assert d["Service.MemoryDenyWriteExecute"] == ["yes"]
    assert d["Service.CapabilityBoundingSet"] == [""]
    assert d["Service.AmbientCapabilities"] == [""]
    stop_timeout = int(d["Service.TimeoutStopSec"][0].removesuffix("s"))
    assert stop_timeout > SHUTDOWN_TIMEOUT_DEFAULT_SECONDS, "systemd would kill the daemon while it drains"


def test_no_secret_is_set_in_the_unit() -> None:
    environment = _directives(UNIT.read_text()).get("Service.Environment", [])
    names = {assignment.partition("=")[0] for assignment in environment}
    assert not names & {name.upper() for name in SECRET_NAMES}


def test_optional_secrets_are_documented_as_credential_pairs() -> None:
    text = UNIT.read_text()
    for name in OPTIONAL_SECRETS:
        assert f"#   LoadCredential={name}:/etc/flavor-scheduler/credentials/{name}\n" in text
        assert f"#   Environment={name.upper()}_FILE=%d/{name}\n" in text


def _env_example() -> dict[str, str]:
    """Every `KEY=value` of env.example, commented out or not."""
    pattern = re.compile(r"^#?([A-Z][A-Z0-9_]*)=(.*)$")
    return {m.group(1): m.group(2) for line in ENV_EXAMPLE.read_text().splitlines() if (m := pattern.match(line))}


def _documented_settings() -> set[str]:
    """The settings env.example must show: all but the secrets and their `_FILE` forms."""
    secret_like = {name.upper() for name in (*SECRET_NAMES, *(f"{name}_file" for name in SECRET_NAMES))}
    return set(variable_names()) - secret_like


def test_env_example_shows_every_setting_and_no_secret() -> None:
    shown = set(_env_example())
    assert shown - _documented_settings() == set(), "env.example names settings that do not exist"
    assert _documented_settings() - shown == set(), "settings missing from env.example"


def test_env_example_defaults_are_the_real_defaults() -> None:
    defaults = Settings(_env_file=None)
    for key, value in _env_example().items():
        name = key.lower()
        if name.startswith("schedule_"):
            assert value == schedule_for(defaults, JobName(name.removeprefix("schedule_"))), key
            continue
        if name.startswith("heartbeat_url_"):  # no default: an example URL
            assert defaults.heartbeat_url(JobName(name.removeprefix("heartbeat_url_"))) is None, key
            continue
        default = Settings.model_fields[name].default
        if default is None:
            continue
        expected = ",".join(default) if isinstance(default, tuple) else str(default)
        assert value == expected, f"{key}: env.example says {value!r}, the default is {expected!r}"
