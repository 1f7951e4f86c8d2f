"""The stand-in Twilio and Resend servers in a process of their own, so a benchmark's memory and
CPU figures are the daemon's alone.

    python bench/provider_servers.py LATENCY_SECONDS TIMES_FILE

Prints {"twilio": URL, "resend": URL} on one line, serves until SIGTERM, then writes the arrival
times of the send requests (and of Resend's batch requests, and how many emails it accepted) to
TIMES_FILE as JSON.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.fixtures import RESEND_API_KEY, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_WHATSAPP_NUMBER
from tests.fakes.providers import FakeResend, FakeTwilio


async def main(latency: float, times_file: Path) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with (
        FakeTwilio(
            account_sid=TWILIO_ACCOUNT_SID,
            auth_token=TWILIO_AUTH_TOKEN,
            whatsapp_number=f"whatsapp:{TWILIO_WHATSAPP_NUMBER}",
            latency_seconds=latency,
        ) as twilio,
        FakeResend(api_key=RESEND_API_KEY, latency_seconds=latency) as resend,
    ):
        print(json.dumps({"twilio": twilio.url, "resend": resend.url}), flush=True)
        await stop.wait()
        times_file.write_text(
            json.dumps(
                {
                    "whatsapp": twilio.times("send"),
                    "email": resend.times("send"),
                    "email_batch": resend.times("batch"),
                    "emails_accepted": len(resend.accepted),
                }
            )
        )


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1]), Path(sys.argv[2])))
