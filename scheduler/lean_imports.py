"""Keep SQLAlchemy's ORM out of the process.

The daemon uses SQLAlchemy Core on an async engine, never the ORM. `sqlalchemy.ext.asyncio`'s
package module imports its ORM session classes too (and so the whole ORM: about 6 MB of the idle
daemon's memory and a tenth of a second of every start). Installed before anything imports it,
this stands the package module in without running its `__init__`: `AsyncEngine`,
`create_async_engine` and the rest come from their submodules as first asked for, and
`AsyncSession` still works (it loads the ORM then). Anything unexpected (another SQLAlchemy
layout) leaves the ordinary import in place.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType
from typing import Any

PACKAGE = "sqlalchemy.ext.asyncio"
# The package's public names (as its __init__ imports them) and the submodule each comes from.
_NAMES: dict[str, tuple[str, ...]] = {
    "engine": (
        "async_engine_from_config",
        "AsyncConnection",
        "AsyncEngine",
        "AsyncTransaction",
        "create_async_engine",
        "create_async_pool_from_url",
    ),
    "result": ("AsyncMappingResult", "AsyncResult", "AsyncScalarResult", "AsyncTupleResult"),
    "scoping": ("async_scoped_session",),
    "session": (
        "async_object_session",
        "async_session",
        "async_sessionmaker",
        "AsyncAttrs",
        "AsyncSession",
        "AsyncSessionTransaction",
        "close_all_sessions",
    ),
}
_SUBMODULE_OF = {name: submodule for submodule, names in _NAMES.items() for name in names}


def _lazy_names(package: ModuleType) -> Any:
    def __getattr__(name: str) -> Any:  # noqa: N807 - a module's attribute hook (PEP 562)
        submodule = _SUBMODULE_OF.get(name)
        if submodule is None:  # a submodule (`from . import exc`) or no such name: the import system's business
            raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{PACKAGE}.{submodule}"), name)
        setattr(package, name, value)
        return value

    return __getattr__


def keep_orm_out() -> bool:
    """Install the stand-in package module; False when it is not (already imported, or unexpected)."""
    if PACKAGE in sys.modules:
        return False
    try:
        import sqlalchemy.ext
        from sqlalchemy.util import concurrency

        spec = importlib.util.find_spec(PACKAGE)
        if spec is None or spec.submodule_search_locations is None:
            return False
        package = importlib.util.module_from_spec(spec)
        package.__getattr__ = _lazy_names(package)  # type: ignore[method-assign]
        sys.modules[PACKAGE] = package
        sqlalchemy.ext.asyncio = package
        importlib.import_module(f"{PACKAGE}.engine")  # the part we use loads, or we undo this
        initialize = getattr(getattr(concurrency, "_concurrency_shim", None), "_initialize", None)
        if callable(initialize):  # what the package's __init__ does besides importing (greenlet)
            initialize()
    except Exception:
        for name in [name for name in sys.modules if name == PACKAGE or name.startswith(PACKAGE + ".")]:
            del sys.modules[name]
        return False
    return True
