"""The program's name and exit codes (CONTRACT §3: 0 success, 1 the job reported errors or the
database could not be reached, 2 usage or configuration error), and the one line on stderr that
every failure of the command line ends with; shared by the CLI's modules."""

from __future__ import annotations

import sys

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PROG = "flavor-scheduler"


def fail(message: str, code: int) -> int:
    """`message` on stderr after the program's name; returns `code` for the caller to exit with."""
    print(f"{PROG}: {message}", file=sys.stderr)
    return code
