"""The `--demo` transport: messages are printed as readable blocks instead of being sent."""

from __future__ import annotations

import sys
import textwrap
import uuid
from datetime import datetime
from typing import TextIO

from scheduler.records import OutgoingMessage
from scheduler.redact import mask_email, mask_phone
from scheduler.vocabulary import Channel

BLOCK_WIDTH = 72  # the rule above each printed message


class ConsoleTransport:
    """Prints each message (recipient masked) to a stream, stderr unless told otherwise."""

    provider = "console"

    def __init__(self, channel: Channel, stream: TextIO | None = None) -> None:
        self.channel = channel
        self._stream = stream

    async def send(self, message: OutgoingMessage) -> str:
        """Print the message as a block of its own and return a made-up id."""
        message_id = f"console-{uuid.uuid4().hex[:12]}"
        to = mask_email(message.to) if self.channel is Channel.EMAIL else mask_phone(message.to)
        title = f" {self.channel.value} · {message.kind.value.replace('_', ' ')} · {message.booking_reference} "
        lines = ["", f"┌─{title}{'─' * max(0, BLOCK_WIDTH - len(title) - 2)}", f"│ to:       {to}"]
        if message.subject:
            lines.append(f"│ subject:  {message.subject}")
        if message.content_sid:
            lines.append(f"│ template: {message.content_sid} {message.content_variables}")
        lines.append("│")
        for paragraph in message.text.rstrip().splitlines():
            lines += [f"│ {line}".rstrip() for line in textwrap.wrap(paragraph, BLOCK_WIDTH - 2) or [""]]
        lines += [f"└─ {message_id}", ""]
        stream = self._stream if self._stream is not None else sys.stderr
        stream.write("\n".join(lines) + "\n")
        stream.flush()
        return message_id

    async def find_sent(self, message: OutgoingMessage, since: datetime) -> str | None:
        """Nothing printed is ever ambiguous."""
        return None

    async def check(self) -> str:
        return "console output (demo)"

    async def aclose(self) -> None:
        return None
