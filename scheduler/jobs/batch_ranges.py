"""Where each cleanup batch begins and ends: at most DELETE_BATCH_SIZE rows per committed
transaction, in one scan of the table wherever its matching rows are dense.

A batch found exactly scans its range twice: once to find where the next DELETE_BATCH_SIZE
matching rows end, once to delete them (`db/cleanup.exact_batch`). Where the previous batch
found the rows dense, the next range is sized from that density instead, aiming at
`AIM` of a batch, and changed in one scan (`db/cleanup.change_range`); a sized range that holds
more than a batch after all is rolled back and taken exactly. A range is sized only when, full of
matching rows from end to end (at the table's average rows per block, from its statistics), it
would still hold at most `MOST_BATCHES_PER_ATTEMPT` batches, so a rolled-back attempt did about
that much work at most. Sparse rows, the end of the table and a table never analysed are taken
exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scheduler.db.cleanup import START_OF_TABLE, ExactBatch, TableShape, Tid

AIM = 0.9  # of a batch: how full a sized range is meant to be, leaving room for the density to vary
MOST_BATCHES_PER_ATTEMPT = 2  # the most a sized range could hold, full of matching rows


@dataclass(slots=True)
class BatchRanges:
    """The walk's position and the density of matching rows it last saw."""

    batch_size: int
    shape: TableShape
    start: Tid = START_OF_TABLE
    done: bool = False
    _density: float = 0.0  # matching rows per block in the last batch; 0: take the next one exactly

    def sized_stop(self) -> Tid | None:
        """Where the next range ends, sized by density; None when it is to be found exactly."""
        rows_per_block = self.shape.rows_per_block
        if not self._density or rows_per_block is None or self.start[0] >= self.shape.blocks:
            return None
        blocks = max(1, math.floor(AIM * self.batch_size / self._density))
        if blocks * rows_per_block > MOST_BATCHES_PER_ATTEMPT * self.batch_size:
            return None
        return (self.start[0] + blocks, 0)

    def took_sized(self, stop: Tid, changed: int) -> None:
        """A sized range up to `stop` was committed with `changed` rows."""
        self._density = changed / max(1, stop[0] - self.start[0])
        self.start = stop

    def overfull(self) -> None:
        """A sized range held more than a batch and was rolled back: take the next one exactly."""
        self._density = 0.0

    def took_exact(self, batch: ExactBatch) -> None:
        """An exact batch was committed."""
        if batch.last is None or batch.matched < self.batch_size:
            self.done = True
            return
        block, line = batch.last
        self._density = batch.matched / (block - self.start[0] + 1)
        self.start = (block, line + 1)
