"""The job table: every record finds its function, and the groups follow from the records."""

from __future__ import annotations

import inspect

from scheduler.jobs.catalog import GROUPS, JOBS
from scheduler.vocabulary import JobName


def test_every_job_has_a_record_that_finds_its_function() -> None:
    assert set(JOBS) == set(JobName)
    for job in JOBS.values():
        assert inspect.iscoroutinefunction(job.run), job.name
        assert job.run.__name__ == job.name.value


def test_the_groups_follow_from_the_records() -> None:
    assert GROUPS["cleanup"] == tuple(name for name, job in JOBS.items() if job.group == "cleanup")
    assert GROUPS["reminders"] == (JobName.SEND_BOOKING_REMINDERS, JobName.SEND_PAYMENT_REMINDERS)
    assert GROUPS["all"] == (*GROUPS["cleanup"], *GROUPS["reminders"], JobName.DELIVER_PENDING_MESSAGES)
