"""What a daemon loads before it has anything to do: not the providers' SDKs, Jinja, Alembic or rich.

Each costs megabytes of an idle daemon and milliseconds of every `--run-once`; they load when
first needed (a message to send, a template to fill, a schema to migrate, a table to draw).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

LOADED_LATER = ("twilio.rest", "resend", "jinja2", "alembic", "rich", "pygments")


def test_a_daemon_built_with_both_channels_loads_none_of_what_it_needs_only_later() -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from scheduler.app import build
        from scheduler.daemon import Daemon
        from scheduler.settings import Settings

        settings = Settings(
            _env_file=None,
            database_url="postgresql://nobody@127.0.0.1:1/none",
            twilio_account_sid="AC" + "0" * 32,
            twilio_auth_token="token-0000",
            twilio_whatsapp_number="+14155238886",
            resend_api_key="re_0000",
        )
        build(settings)
        print("loaded:", *[name for name in {LOADED_LATER!r} if name in sys.modules])
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1].split() == ["loaded:"]


def test_structlog_is_loaded_without_rich_and_rich_still_loads_for_the_console() -> None:
    script = (
        "import scheduler, structlog.dev, sys; print(structlog.dev.rich); "
        "import rich.table; print('rich.table' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["None", "True"]
