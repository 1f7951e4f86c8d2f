"""What the console's queries share: the schema's name, JSON columns decoded, a listing's conditions.

The console's statements run on a plain asyncpg connection (`db/direct.py`): a console command
must answer within 0.5 s, and loading SQLAlchemy alone takes longer. So they are SQL, composed
only from constant fragments (never from a value: every value is a bind parameter), and this
module holds the little they have in common without importing `db/tables.py`.
"""

from __future__ import annotations

import json
from typing import Any

# tables.OWN_SCHEMA, which cannot be imported here without SQLAlchemy (a test keeps them equal).
SCHEMA = "flavor_scheduler"


def from_json(value: Any) -> Any:
    """A json/jsonb column as asyncpg returns it without a codec (text), decoded."""
    return json.loads(value) if isinstance(value, str) else value


class Where:
    """The conditions of a listing, built from the filters an operator gave: column names are the
    caller's constants, every value a bind parameter (`$1`, `$2`, … in the order bound)."""

    def __init__(self, *conditions: str) -> None:
        self.conditions = list(conditions)
        self.params: list[Any] = []

    def bind(self, value: Any) -> str:
        """The placeholder of one more parameter."""
        self.params.append(value)
        return f"${len(self.params)}"

    def equal(self, column: str, value: Any) -> None:
        """`column = value`, unless the filter was not given (None)."""
        if value is not None:
            self.conditions.append(f"{column} = {self.bind(value)}")

    def since(self, column: str, when: Any) -> None:
        """`column >= when`, unless the filter was not given (None)."""
        if when is not None:
            self.conditions.append(f"{column} >= {self.bind(when)}")

    @property
    def sql(self) -> str:
        return " AND ".join(self.conditions)
