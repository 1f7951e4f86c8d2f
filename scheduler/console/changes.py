"""The console's changing commands: `resend` and `cancel` (messages, by id or by booking),
`pause` and `resume` (a job or a group's jobs, in every replica).

Apart from the reads (`reads.py`) because each runs in one transaction that locks what it
changes, and says for every message it names what became of it (changed, or why not).
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from scheduler.console import documents
from scheduler.console.answer import Answer, ConsoleUsageError, Context
from scheduler.db import console_changes as queries
from scheduler.db.console_messages import MessageRow
from scheduler.jobs.catalog import resolve_target
from scheduler.vocabulary import SUPPRESSED, DeliveryStatus

if TYPE_CHECKING:
    import asyncpg
    from rich.console import Console


def _local(ctx: Context, when: datetime | None) -> str:
    """A time for a person: local to TIMEZONE."""
    if when is None:
        return "-"
    return f"{when.astimezone(ctx.tz):%Y-%m-%d %H:%M} {ctx.settings.timezone}"


def _describe(message: MessageRow) -> str:
    address = documents.masked_address(message.channel, message.address) or "no address"
    what = f"{message.booking_reference} {message.kind} {message.channel} to {message.role} {address}"
    return f"{str(message.id)[:8]} ({what})"


async def _targets(conn: asyncpg.Connection, ctx: Context, answer: Answer, *, latest_only: bool) -> list[UUID]:
    """The deliveries the command names: its ids (unknown or ambiguous ones are problems), or the booking's."""
    args = ctx.args
    if args.booking:
        ids = await queries.booking_message_ids(
            conn, args.booking, kind=args.kind, channel=args.channel, latest_only=latest_only
        )
        if not ids:
            answer.problems.append(f"no messages for booking {args.booking!r}" + _filters(args))
        return ids
    resolved = await queries.resolve_ids(conn, args.ids)
    answer.problems += [f"no message with id {token!r}" for token in resolved.unknown]
    answer.problems += [f"id {token!r} matches several messages: give more of it" for token in resolved.ambiguous]
    return list(dict.fromkeys(resolved.ids.values()))


def _filters(args: Any) -> str:
    given = [f"--{name} {getattr(args, name)}" for name in ("kind", "channel") if getattr(args, name)]
    return f" ({', '.join(given)})" if given else ""


def _change_answer(changed: list[str], notes: list[str], problems: list[str], done: str) -> Answer:
    document: dict[str, Any] = {"changed": changed}

    def draw(console: Console) -> None:
        from rich.markup import escape

        console.print(escape(done) if changed else "Nothing changed.")

    return Answer(document, draw, notes=notes, problems=problems)


def _still_suppressed(message: MessageRow, what: str, *, force: bool) -> list[str]:
    """A skipped message to a suppressed address, resent without --force, is skipped again: say so."""
    if message.reason != SUPPRESSED or force:
        return []
    return [
        f"{what}: its address is suppressed, so it is skipped again when it is due; add --force to "
        "send this one anyway, or lift the address (`suppressions lift ADDRESS`)"
    ]


async def resend(conn: asyncpg.Connection, ctx: Context) -> Answer:
    """Failed, skipped or void messages back to pending; sent ones, with --force, sent again as new ones."""
    answer = Answer({}, lambda _console: None)
    lines: list[str] = []
    changed: list[str] = []
    async with conn.transaction():
        ids = await _targets(conn, ctx, answer, latest_only=True)
        requeue: list[UUID] = []
        again: list[UUID] = []
        described: dict[UUID, MessageRow] = {}
        for message, has_content in await queries.lock_messages(conn, ids):
            described[message.id] = message
            what = _describe(message)
            if message.status in queries.RESENDABLE or message.status == DeliveryStatus.SENT:
                if not has_content:
                    answer.problems.append(
                        f"{what}: its address or text is gone (invalid when owed, or removed after "
                        "MESSAGE_RETENTION_DAYS); nothing to send"
                    )
                elif message.status != DeliveryStatus.SENT:
                    requeue.append(message.id)
                    answer.notes += _still_suppressed(message, what, force=ctx.args.force)
                elif ctx.args.force:
                    again.append(message.id)
                else:
                    sent = _local(ctx, message.sent_at)
                    answer.problems.append(
                        f"{what} was sent at {sent} (provider id {message.provider_id or '-'}); "
                        "add --force to send it again as a new message"
                    )
            elif message.status == DeliveryStatus.SENDING:
                answer.notes.append(f"{what} is being sent now")
            else:
                next_try = _local(ctx, message.next_attempt_at)
                answer.notes.append(f"{what} is already {message.status}: it goes out at {next_try}")
        for delivery_id in await queries.requeue(conn, requeue, now=ctx.now, force=ctx.args.force):
            changed.append(str(delivery_id))
            lines.append(f"back to pending: {_describe(described[delivery_id])}")
        copies = await queries.send_again(conn, again, now=ctx.now)
        for original, copy in copies.items():
            changed.append(str(copy))
            lines.append(f"to be sent again as new message {str(copy)[:8]}: {_describe(described[original])}")
        for original, copy in (await queries.copies_of(conn, [i for i in again if i not in copies])).items():
            answer.notes.append(
                f"{_describe(described[original])} was already sent again as {copy} (see `messages`); "
                "to send it once more, resend that one"
            )
    if changed:
        lines.append(
            "They go out with the next deliver_pending_messages run (or --run-once deliver_pending_messages), "
            "each checked against its booking as it stands then."
        )
    result = _change_answer(changed, answer.notes, answer.problems, "\n".join(lines))
    result.document["copies"] = {str(original): str(copy) for original, copy in copies.items()}
    return result


async def cancel(conn: asyncpg.Connection, ctx: Context) -> Answer:
    """Pending and held messages made void ('cancelled by operator'): they are never sent."""
    answer = Answer({}, lambda _console: None)
    async with conn.transaction():
        ids = await _targets(conn, ctx, answer, latest_only=False)
        cancellable: list[UUID] = []
        described: dict[UUID, MessageRow] = {}
        for message, _ in await queries.lock_messages(conn, ids):
            described[message.id] = message
            if message.status in queries.CANCELLABLE:
                cancellable.append(message.id)
            elif message.status == DeliveryStatus.SENDING:
                answer.problems.append(
                    f"{_describe(message)} is being sent now by {message.claimed_by or 'a sender'}; "
                    "it cannot be stopped"
                )
            elif ctx.args.ids:  # a whole booking's settled messages are not worth a line each
                answer.notes.append(f"{_describe(message)} is already {message.status}")
        cancelled = await queries.cancel(conn, cancellable, now=ctx.now)
    lines = [f"void ({queries.CANCELLED_BY_OPERATOR}): {_describe(described[i])}" for i in cancelled]
    if ctx.args.booking and not cancelled and not answer.problems:
        answer.notes.append(f"booking {ctx.args.booking} has no pending or held message{_filters(ctx.args)}")
    return _change_answer([str(i) for i in cancelled], answer.notes, answer.problems, "\n".join(lines))


def operator_name() -> str:
    """user@host of whoever runs the command, as the pause records it."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _jobs(ctx: Context) -> Sequence[str]:
    jobs = resolve_target(ctx.args.job)
    if jobs is None:  # check_arguments refused it already
        raise ConsoleUsageError(f"unknown job {ctx.args.job!r}")
    return [job.value for job in jobs]


async def pause(conn: asyncpg.Connection, ctx: Context) -> Answer:
    """Pause a job (or a group's jobs) in every replica: its fires are skipped until resumed."""
    jobs = _jobs(ctx)
    async with conn.transaction():
        changed = await queries.pause(conn, jobs, reason=ctx.args.reason, by=operator_name())
    notes = [f"{job} was already paused" for job in jobs if job not in changed]
    done = "\n".join(
        [f"paused: {job}" for job in changed]
        + ["Every replica skips their scheduled runs within seconds; `resume` lifts it."]
    )
    return _change_answer(changed, notes, [], done)


async def resume(conn: asyncpg.Connection, ctx: Context) -> Answer:
    """Lift a job's (or a group's) pause."""
    jobs = _jobs(ctx)
    async with conn.transaction():
        changed = await queries.resume(conn, jobs)
    notes = [f"{job} was not paused" for job in jobs if job not in changed]
    return _change_answer(changed, notes, [], "\n".join(f"resumed: {job}" for job in changed))
