"""A database that cannot be used says which of the usual causes it is, never the password
(CONTRACT §5): host not found, connection refused, credentials refused, database missing, TLS."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from uuid import uuid4

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from scheduler.db.errors import ConnectProblem, describe_db_error, explain_connect_error
from scheduler.settings import SettingsError, load_settings
from tests.acceptance.cli import clean_env, run_cli
from tests.database import DatabaseFactory, admin, over_tcp, to_libpq
from tests.faults.servers import OwnServer

PASSWORD = "Sup3r-S3cret-Pw"  # looked for in every output


def _url(server: str, *, user: str, password: str | None, database: str) -> str:
    parsed = make_url(server).set(username=user, password=password, database=database)
    return to_libpq(parsed.render_as_string(hide_password=False))


@pytest.fixture
async def role(test_databases: DatabaseFactory) -> AsyncIterator[str]:
    """A login role with a password, dropped afterwards."""
    name = f"fs_role_{uuid4().hex[:8]}"
    await admin(test_databases.url, f"CREATE ROLE {name} LOGIN PASSWORD '{PASSWORD}'")
    try:
        yield name
    finally:
        await admin(test_databases.url, f"DROP ROLE IF EXISTS {name}")


def _run(url: str, *args: str) -> tuple[int, str]:
    done = run_cli(*(args or ("--run-once", "cleanup_expired_otps")), env=clean_env(DATABASE_URL=url))
    assert "Traceback" not in done.stderr
    assert PASSWORD not in done.stderr + done.stdout
    return done.code, done.stderr


def test_database_missing_is_named(test_databases: DatabaseFactory) -> None:
    url = _url(test_databases.url, user="postgres", password=PASSWORD, database="fs_no_such_db")
    code, stderr = _run(url)
    assert code == 1
    assert "cannot connect to the database: database 'fs_no_such_db' does not exist" in stderr


def test_unknown_role_is_refused_naming_the_user(test_databases: DatabaseFactory) -> None:
    url = _url(test_databases.url, user="fs_nobody", password=PASSWORD, database="postgres")
    code, stderr = _run(url)
    assert code == 1
    assert "refused user 'fs_nobody': no such role" in stderr


async def test_role_that_may_not_log_in_is_refused(test_databases: DatabaseFactory, role: str) -> None:
    await admin(test_databases.url, f"ALTER ROLE {role} NOLOGIN")
    url = _url(test_databases.url, user=role, password=PASSWORD, database="postgres")
    code, stderr = _run(url)
    assert code == 1
    assert f"refused user {role!r}: the role may not log in" in stderr


@pytest.fixture(scope="module")
def password_server() -> Iterator[str]:
    """A server of the suite's own that asks every role but postgres for its password, with a
    role whose password is PASSWORD (the shared test server may trust every connection, and
    then takes any password)."""
    with OwnServer() as server:
        (server.data / "pg_hba.conf").write_text("local all postgres trust\nlocal all all scram-sha-256\n")
        server.reload()
        asyncio.run(admin(server.url, f"CREATE ROLE fs_app LOGIN PASSWORD '{PASSWORD}'"))
        yield server.url


def test_wrong_password_is_refused_naming_the_user(password_server: str) -> None:
    url = _url(password_server, user="fs_app", password="wrong-" + PASSWORD, database="postgres")
    code, stderr = _run(url)
    assert code == 1
    assert "cannot connect to the database: " in stderr and "refused the credentials of user 'fs_app'" in stderr
    done = run_cli(env=clean_env(DATABASE_URL=url))  # the daemon: no waiting for credentials that are wrong
    assert done.code == 1
    (refused,) = [json.loads(line) for line in done.stderr.splitlines() if '"database_refused"' in line]
    assert refused["problem"] == "credentials_refused"
    assert "refused the credentials of user 'fs_app'" in refused["error"]
    assert "wrong-" + PASSWORD not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_closed_port_is_connection_refused(test_databases: DatabaseFactory) -> None:
    if not over_tcp(test_databases.url):
        pytest.skip("the test server listens on a socket only")
    url = _url(test_databases.url, user="postgres", password=PASSWORD, database="postgres").replace(
        f":{make_url(test_databases.url).port or 5432}/", ":1/"
    )
    code, stderr = _run(url)
    assert code == 1
    assert "database unreachable: connection refused by " in stderr and ":1" in stderr


def test_daemon_stops_at_start_when_the_database_does_not_exist(test_databases: DatabaseFactory) -> None:
    url = _url(test_databases.url, user="postgres", password=PASSWORD, database="fs_no_such_db")
    check = run_cli("--check", env=clean_env(DATABASE_URL=url))
    assert check.code == 1
    assert "database 'fs_no_such_db' does not exist" in check.stdout
    done = run_cli(env=clean_env(DATABASE_URL=url))  # the daemon: no waiting for a database that is not there
    assert done.code == 1
    assert "database_refused" in done.stderr and "fs_no_such_db" in done.stderr
    assert PASSWORD not in done.stderr


def test_daemon_stops_at_start_when_the_credentials_are_refused(test_databases: DatabaseFactory) -> None:
    """Waiting would not cure refused credentials: exit 1 at once, saying so (CONTRACT §5). A role
    that does not exist is refused by any server, also one that trusts every connection."""
    url = _url(test_databases.url, user="fs_nobody", password=PASSWORD, database="postgres")
    done = run_cli(env=clean_env(DATABASE_URL=url))
    assert done.code == 1
    (refused,) = [json.loads(line) for line in done.stderr.splitlines() if '"database_refused"' in line]
    assert refused["problem"] == "credentials_refused"
    assert "refused user 'fs_nobody': no such role" in refused["error"]
    assert PASSWORD not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


URL = "postgresql+asyncpg://app:" + PASSWORD + "@db.example.com:6543/bookings"


@pytest.mark.parametrize(
    ("error", "problem", "says"),
    [
        (socket.gaierror(-2, "Name or service not known"), ConnectProblem.HOST_NOT_FOUND, "'db.example.com' not found"),
        (ConnectionRefusedError(111, "Connect call failed"), ConnectProblem.REFUSED, "db.example.com:6543"),
        (OSError("Multiple exceptions: [Errno 111] Connect call failed ('::1', 1)"), ConnectProblem.REFUSED, ":6543"),
        (
            asyncpg.InvalidPasswordError('password authentication failed for user "app"'),
            ConnectProblem.CREDENTIALS,
            "refused the credentials of user 'app'",
        ),
        (
            asyncpg.InvalidCatalogNameError('database "bookings" does not exist'),
            ConnectProblem.DATABASE_MISSING,
            "database 'bookings' does not exist on db.example.com:6543",
        ),
        (
            asyncpg.InvalidAuthorizationSpecificationError(
                'no pg_hba.conf entry for host "10.0.0.5", user "app", database "bookings", no encryption'
            ),
            ConnectProblem.TLS_REQUIRED,
            "requires TLS: add ?sslmode=require",
        ),
        (
            asyncpg.InvalidAuthorizationSpecificationError(
                'pg_hba.conf rejects connection for host "10.0.0.5", user "app", database "bookings", no encryption'
            ),
            ConnectProblem.CREDENTIALS,
            "refused user 'app': not allowed from this host (pg_hba.conf)",
        ),
        (
            ConnectionError('PostgreSQL server at "db.example.com:6543" rejected SSL upgrade'),
            ConnectProblem.TLS_UNAVAILABLE,
            "does not offer TLS",
        ),
        (TimeoutError(), ConnectProblem.TIMEOUT, "no answer from db.example.com:6543"),
        (
            asyncpg.InsufficientPrivilegeError("permission denied for database bookings"),
            ConnectProblem.PRIVILEGE,
            "user 'app' lacks a privilege in database 'bookings'",
        ),
    ],
)
def test_each_cause_is_named(error: BaseException, problem: ConnectProblem, says: str) -> None:
    failure = explain_connect_error(error, URL)
    assert failure is not None
    assert failure.problem is problem
    assert says in failure.message
    assert PASSWORD not in failure.message
    assert describe_db_error(error, url=URL) == failure.message
    assert failure.fatal == (
        problem
        in {
            ConnectProblem.CREDENTIALS,
            ConnectProblem.DATABASE_MISSING,
            ConnectProblem.TLS_REQUIRED,
            ConnectProblem.TLS_UNAVAILABLE,
            ConnectProblem.PRIVILEGE,
        }
    )


def test_other_errors_keep_the_drivers_wording() -> None:
    error = asyncpg.UndefinedTableError('relation "bookings" does not exist')
    assert explain_connect_error(error, URL) is None
    assert describe_db_error(error, url=URL) == 'UndefinedTableError: relation "bookings" does not exist'


def test_unescaped_at_in_the_password_gets_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:p@ss" + PASSWORD + "@db.example.com:5432/app")
    with pytest.raises(SettingsError) as raised:
        load_settings(_env_file=None)
    assert "DATABASE_URL has more than one '@': percent-encode" in str(raised.value)
    assert PASSWORD not in str(raised.value)
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:p%40ss@db.example.com:5432/app")
    assert load_settings(_env_file=None).database_url is not None
