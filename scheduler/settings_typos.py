"""Look-alike variables (CONTRACT §4): `SCHEDULE_SEND_BOOKING_REMINDER`, `TWILIO_AUTH_TOKN` and the
like would otherwise be ignored silently, leaving a default in force that the operator meant to change.

The real names and the prefixes they share come from the Settings model (`variable_names`), so a new
setting or job is known here without a second list.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# Variables of other programs that share a prefix with ours and are not mistakes.
FOREIGN_NAMES = frozenset({"HTTP_PROXY"})
# Kubernetes injects `<SERVICE>_SERVICE_HOST`, `<SERVICE>_PORT_5432_TCP_ADDR` and so on for every
# service in the namespace: a service named `database` or `email` must not stop the daemon.
_SERVICE_LINK = re.compile(r"[A-Z0-9_]+_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_\d+_(TCP|UDP|SCTP)(_[A-Z]+)?)?)")


def setting_names() -> frozenset[str]:
    """Every environment variable the daemon reads (SCHEDULE_<JOB> for each job included)."""
    from scheduler.settings import variable_names

    return frozenset(variable_names())


def given_variables(env_file: Any) -> list[str]:
    """The names in the environment and in the `.env` file the settings are read from."""
    names = list(os.environ)
    if isinstance(env_file, str | Path) and Path(env_file).is_file():
        from dotenv import dotenv_values

        names += list(dotenv_values(env_file))
    return names


def prefixes(names: Iterable[str]) -> frozenset[str]:
    """The first word of each name (`SCHEDULE_`, `TWILIO_`, ...), or the whole name when it is one word."""
    return frozenset(name.split("_", 1)[0] + "_" if "_" in name else name for name in names)


def lookalikes(variables: Iterable[str], names: frozenset[str] | None = None) -> list[tuple[str, str]]:
    """(variable, closest real name) for each variable that carries one of our prefixes but is not ours."""
    names = setting_names() if names is None else names
    ours = prefixes(names)
    found = []
    for variable in sorted({variable.upper() for variable in variables}):
        if variable in names or variable in FOREIGN_NAMES or _SERVICE_LINK.fullmatch(variable):
            continue
        if not any(variable.startswith(prefix) for prefix in ours):
            continue
        found.append((variable, closest(variable, names)))
    return found


def closest(variable: str, names: Iterable[str]) -> str:
    """The real name most like `variable`, preferring those with the same prefix."""
    import difflib  # only when there is a look-alike to name

    candidates = sorted(names)
    prefix = variable.split("_", 1)[0]
    same_prefix = [name for name in candidates if name.split("_", 1)[0] == prefix] or candidates
    return difflib.get_close_matches(variable, same_prefix, n=1, cutoff=0.0)[0]


def describe(found: list[tuple[str, str]]) -> str:
    """One clause per look-alike, for the configuration error."""
    return "; ".join(
        f"{variable} is not a setting of flavor-scheduler (did you mean {name}?)" for variable, name in found
    )
