"""The fault suite's report: the figures each scenario measured, and what the leak scanner read.

A plugin loaded by tests/conftest.py, so that the pytest-xdist controller (which collects no
test) has it too: each worker measures its own share and hands it to the controller when it
ends; the controller prints them all once.
Set FAULTS_FIGURES=/path/figures.json to keep them as JSON too (docs/reliability.md quotes them).
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest

from tests.faults.support import EXPOSURE, FIGURES

_WORKER_KEY = "fault_suite_report"


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_CollectFromWorkers(), "fault-suite-figures-from-workers")


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: its share goes to the controller
        workeroutput[_WORKER_KEY] = pickle.dumps(
            {
                "figures": FIGURES,
                "sources": EXPOSURE.sources,
                "characters": EXPOSURE.characters,
                "leaks": EXPOSURE.leaks,
            },
        )


class _CollectFromWorkers:
    """The controller's side: merge what each worker measured."""

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        share = getattr(node, "workeroutput", {}).get(_WORKER_KEY)
        if share is None:
            return
        report = pickle.loads(share)  # noqa: S301 - written by this suite's own workers
        for scenario, values in report["figures"].items():
            merged = FIGURES.setdefault(scenario, {})
            for name, value in values.items():
                merged[name] = _combined(merged.get(name), value)
        EXPOSURE.sources += report["sources"]
        EXPOSURE.characters += report["characters"]
        EXPOSURE.leaks += report["leaks"]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if hasattr(terminalreporter.config, "workeroutput") or (not FIGURES and not EXPOSURE.sources):
        return
    write = terminalreporter.write_line
    terminalreporter.section("fault suite figures")
    for scenario in sorted(FIGURES):
        values = ", ".join(f"{name}={_show(value)}" for name, value in FIGURES[scenario].items())
        write(f"{scenario}: {values}")
    write(f"leak scan: {EXPOSURE.sources} outputs, {EXPOSURE.characters:,} characters, {len(EXPOSURE.leaks)} leaks")
    target = os.environ.get("FAULTS_FIGURES")
    if target:
        body = {
            "scenarios": FIGURES,
            "leak_scan": {"outputs": EXPOSURE.sources, "characters": EXPOSURE.characters, "leaks": EXPOSURE.leaks},
            "database": "TEST_DATABASE_URL" if os.environ.get("TEST_DATABASE_URL") else "embedded",
        }
        Path(target).write_text(json.dumps(body, indent=2, default=str) + "\n", encoding="utf-8")


def _combined(mine: Any, theirs: Any) -> Any:
    """Tallies kept across a worker's tests (answers by status) add up over the workers."""
    if _tally(mine) and _tally(theirs):
        return {key: mine.get(key, 0) + theirs.get(key, 0) for key in sorted({*mine, *theirs})}
    return theirs


def _tally(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(count, int | float) for count in value.values())


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)
