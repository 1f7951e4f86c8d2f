"""structlog, imported with rich hidden from it.

When first imported, structlog looks for rich to format exceptions in its own console renderer.
The daemon writes its lines with its own renderer (`logging.py`), so rich and pygments (66
modules, about 4 MB of an idle daemon) load only in the console commands that draw tables.
The package imports this module first, before any of its modules imports structlog; a test
keeps rich out of the daemon.
"""

from __future__ import annotations

import sys


def _import_structlog_without_rich() -> None:
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]  # `import rich` now raises ImportError
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules["rich"]


_import_structlog_without_rich()
