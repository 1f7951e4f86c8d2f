"""Commands stay quick and the daemon small: what a process does not use, it does not import."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from scheduler.cli import _parser
{body}
print(" ".join(sorted(set(sys.modules) | {{name.split(".")[0] for name in sys.modules}})))
"""


def loaded(body: str = "") -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(body=body)], capture_output=True, text=True, check=True, timeout=60
    )
    return set(done.stdout.split())


def test_help_loads_none_of_the_heavy_libraries() -> None:
    heavy = {"sqlalchemy", "pydantic", "pydantic_settings", "asyncio", "structlog", "aiohttp", "apscheduler"}
    assert not heavy & loaded()


def test_the_daemon_loads_no_provider_sdk_and_no_orm_until_it_sends() -> None:
    body = """
import os
os.environ.update(TWILIO_ACCOUNT_SID="AC" + "0" * 32, TWILIO_AUTH_TOKEN="t" * 16,
                  TWILIO_WHATSAPP_NUMBER="+14155238886", RESEND_API_KEY="re_test_0000",
                  DATABASE_URL="postgresql://app@db.example.com/app")
from scheduler.lean_imports import keep_orm_out
assert keep_orm_out()
from scheduler.settings import load_settings
from scheduler.app import build
import scheduler.daemon
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
app = build(load_settings(_env_file=None))
assert {channel.value for channel in app.transports} == {"whatsapp", "email"}
"""
    modules = loaded(body)
    assert not {"twilio", "resend", "httpx", "jinja2", "alembic"} & modules
    assert "sqlalchemy.ext.asyncio.engine" in modules
    assert "sqlalchemy.orm" not in modules


@pytest.mark.parametrize("name", ["AsyncSession", "async_sessionmaker", "AsyncEngine", "AsyncResult"])
def test_every_public_name_of_the_async_package_still_resolves(name: str) -> None:
    body = f"""
from scheduler.lean_imports import keep_orm_out
assert keep_orm_out()
from sqlalchemy.ext import asyncio as package
import importlib
real = importlib.import_module("sqlalchemy.ext.asyncio." + {{"AsyncSession": "session", "async_sessionmaker": "session",
    "AsyncEngine": "engine", "AsyncResult": "result"}}[{name!r}])
assert getattr(package, {name!r}) is getattr(real, {name!r})
"""
    loaded(body)
