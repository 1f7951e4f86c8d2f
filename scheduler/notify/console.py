"""The `--demo` transport: messages are printed as readable blocks instead of being sent."""

from __future__ import annotations

import sys
import uuid
from datetime import datetime
from typing import TextIO

from scheduler.records import OutgoingMessage
from scheduler.redact import mask_email, mask_phone
from scheduler.vocabulary import Channel


class ConsoleTransport:
    """Prints each message (recipient masked) to a stream, stderr unless told otherwise."""

    provider = "console"

    def __init__(self, channel: Channel, stream: TextIO | None = None) -> None:
        self.channel = channel
        self._stream = stream

    async def send(self, message: OutgoingMessage) -> str:
        """Print the message and return a made-up id."""
        message_id = f"console-{uuid.uuid4().hex}"
        to = mask_phone(message.to) if self.channel is Channel.WHATSAPP else mask_email(message.to)
        lines = [
            f"----- {self.channel.value} {message.kind.value} ({message.booking_reference}) -----",
            f"to:       {to}",
        ]
        if message.subject:
            lines.append(f"subject:  {message.subject}")
        if message.content_sid:
            lines.append(f"template: {message.content_sid} {message.content_variables}")
        lines += ["", message.text.rstrip(), f"----- {message_id} -----", ""]
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
