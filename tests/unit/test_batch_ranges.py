"""How the cleanup walk chooses each batch's range: sized by density only where a wrong guess is cheap."""

from __future__ import annotations

from scheduler.db.cleanup import ExactBatch, TableShape
from scheduler.jobs.batch_ranges import BatchRanges

DENSE = TableShape(blocks=10_000, rows_per_block=50.0)


def after_exact(shape: TableShape, *, matched: int = 1000, last: tuple[int, int] = (19, 49)) -> BatchRanges:
    ranges = BatchRanges(1000, shape)
    ranges.took_exact(ExactBatch(changed=matched, matched=matched, last=last))
    return ranges


def test_the_first_batch_is_found_exactly() -> None:
    assert BatchRanges(1000, DENSE).sized_stop() is None


def test_after_a_dense_batch_the_next_range_aims_at_nine_tenths_of_a_batch() -> None:
    ranges = after_exact(DENSE)  # 1,000 rows in blocks 0 to 19: 50 a block
    assert ranges.start == (19, 50)
    assert ranges.sized_stop() == (19 + 18, 0)  # 900 rows at 50 a block
    ranges.took_sized((37, 0), 900)
    assert ranges.start == (37, 0)
    assert ranges.sized_stop() == (37 + 18, 0)


def test_rows_too_sparse_for_a_cheap_wrong_guess_are_found_exactly() -> None:
    # 1,000 rows over 100 blocks of 50: a range for 900 is 90 blocks, 4,500 rows if all matched.
    assert after_exact(DENSE, last=(99, 1)).sized_stop() is None
    # Over 40 blocks: 36 blocks, 1,800 rows at most, within twice a batch.
    assert after_exact(DENSE, last=(39, 1)).sized_stop() == (39 + 36, 0)


def test_a_table_without_statistics_is_always_found_exactly() -> None:
    assert after_exact(TableShape(blocks=10_000, rows_per_block=None)).sized_stop() is None


def test_past_the_blocks_the_table_had_at_the_start_the_rest_is_found_exactly() -> None:
    ranges = after_exact(TableShape(blocks=30, rows_per_block=50.0))
    assert ranges.sized_stop() == (37, 0)
    ranges.took_sized((37, 0), 500)
    assert ranges.sized_stop() is None


def test_an_empty_or_overfull_range_sends_the_next_batch_back_to_an_exact_one() -> None:
    empty = after_exact(DENSE)
    empty.took_sized((37, 0), 0)
    assert empty.sized_stop() is None
    overfull = after_exact(DENSE)
    overfull.overfull()
    assert overfull.start == (19, 50)
    assert overfull.sized_stop() is None


def test_an_exact_batch_short_of_a_batch_ends_the_walk() -> None:
    ranges = BatchRanges(1000, DENSE)
    ranges.took_exact(ExactBatch(changed=999, matched=999, last=(19, 48)))
    assert ranges.done
    nothing = BatchRanges(1000, DENSE)
    nothing.took_exact(ExactBatch(changed=0, matched=0, last=None))
    assert nothing.done
