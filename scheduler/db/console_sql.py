"""What the console's queries share: the schema's name and the decoding of JSON columns.

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
