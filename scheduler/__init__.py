"""flavor-scheduler: the background jobs of the Flavor Entertainers booking platform."""

from __future__ import annotations

from scheduler import structlog_plain  # noqa: F401 - first, before any module imports structlog

# The one place the version is written: pyproject.toml reads it from here (setuptools' `attr:`),
# so no process pays for importlib.metadata (2 MB and 46 modules) to learn it.
__version__ = "1.0.0"
