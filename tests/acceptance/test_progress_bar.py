"""`--run-once` draws a progress bar of the rows it deletes on stderr when stderr is a terminal (a
pseudo-terminal here), and never otherwise; stdout holds the result's JSON alone either way."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.acceptance.cli import CLI_TIMEOUT_SECONDS, clean_env, run_cli
from tests.database import to_libpq

ROWS = 2500
LABEL = "cleanup_old_notifications: rows deleted"
ANSI = re.compile(r"\x1b\[")


async def old_read_notifications(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO notifications (user_id, type, title, message, is_read, created_at) "
                "SELECT gen_random_uuid(), 'info', 't', 'm', true, :old FROM generate_series(1, :rows)"
            ),
            {"old": datetime.now(UTC) - timedelta(days=40), "rows": ROWS},
        )


def run_on_a_terminal(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """The CLI with stderr on a pseudo-terminal and stdout on a pipe: exit code, stdout, what the terminal got."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "scheduler", *args], env=env, stdout=subprocess.PIPE, stderr=follower
    )
    os.close(follower)
    received = bytearray()
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the program closed the terminal
            break
        if not chunk:
            break
        received += chunk
    os.close(leader)
    stdout, _ = process.communicate(timeout=CLI_TIMEOUT_SECONDS)
    return process.returncode, stdout.decode(), received.decode(errors="replace")


async def test_a_bar_on_a_terminal_and_none_on_a_pipe(database_url: str, engine: AsyncEngine) -> None:
    env = clean_env(DATABASE_URL=to_libpq(database_url), DELETE_BATCH_SIZE="500", TERM="xterm", COLUMNS="120")
    await old_read_notifications(engine)
    code, stdout, terminal = await asyncio.to_thread(
        run_on_a_terminal, "--run-once", "cleanup_old_notifications", env=env
    )
    assert code == 0, terminal
    assert json.loads(stdout)["deletedCount"] == ROWS  # stdout: the JSON alone
    assert LABEL in terminal
    assert f"{ROWS:,}" in terminal  # the count the bar reached
    assert '"event": "job_finished"' in terminal  # log lines still reach the terminal, above the bar

    await old_read_notifications(engine)
    piped = await asyncio.to_thread(run_cli, "--run-once", "cleanup_old_notifications", env=env)
    assert piped.code == 0
    assert piped.json()["deletedCount"] == ROWS
    assert LABEL not in piped.stderr
    assert not ANSI.search(piped.stderr + piped.stdout)
    assert all(line.startswith("{") for line in piped.stderr.splitlines()), piped.stderr
