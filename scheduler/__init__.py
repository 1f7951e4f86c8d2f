"""flavor-scheduler: the background jobs of the Flavor Entertainers booking platform."""

from __future__ import annotations

from functools import cache

from scheduler import structlog_plain  # noqa: F401 - first, before any module imports structlog


@cache
def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flavor-scheduler")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0+unknown"


def __getattr__(name: str) -> str:
    # `__version__` is read from the installed metadata when first asked for: importlib.metadata
    # costs more than the rest of `--help` together.
    if name == "__version__":
        return _installed_version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
