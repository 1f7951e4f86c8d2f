"""Masking of phone numbers and email addresses, and removal of secrets, in anything we print."""

from __future__ import annotations

import re
from collections.abc import Iterable

_EMAIL = re.compile(r"(?<![\w.+-])([\w.+-])[\w.+-]*@([\w-]+(?:\.[\w-]+)+)")
# A run of 8+ digits, optionally with +, spaces, dashes, dots or brackets between them, that is
# not the tail of a longer token (booking references like FE-2026-0042, UUIDs, ctids).
_PHONE = re.compile(r"(?<![\w-])(\+?\(?\d[\d\s().-]{6,}\d)(?![\w-])")
_REDACTED = "[redacted]"


def mask_email(address: str) -> str:
    """`jane@example.com` -> `j***@example.com`."""
    local, at, domain = address.partition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"


def mask_phone(number: str) -> str:
    """`+61412345678` -> `+61 4** *** 678`: country code, first and last three digits kept."""
    digits = re.sub(r"\D", "", number)
    if len(digits) < 7:
        return "***"
    if number.strip().startswith("+") and digits.startswith("61") and len(digits) == 11:
        return f"+61 {digits[2]}** *** {digits[-3:]}"
    prefix = "+" if number.strip().startswith("+") else ""
    return f"{prefix}{digits[:3]}{'*' * (len(digits) - 6)}{digits[-3:]}"


def _mask_phone_match(match: re.Match[str]) -> str:
    text = match.group(1)
    digits = re.sub(r"\D", "", text)
    if len(digits) < 8 or _looks_like_date_or_amount(text):
        return text
    return mask_phone(text)


def _looks_like_date_or_amount(text: str) -> bool:
    # 2026-12-05, 12.50, 1,250.00 and the like are not phone numbers.
    return bool(re.fullmatch(r"\d{4}-\d{2}-\d{2}.*|[\d,]+\.\d{2}|\d+(\.\d+)+", text.strip()))


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove secrets, then mask email addresses and phone numbers, anywhere in the text."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, _REDACTED)
    text = _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)
    return _PHONE.sub(_mask_phone_match, text)


def mask_url(url: str) -> str:
    """`https://hc-ping.com/5f1c…/fail` -> `https://hc-ping.com/***`: a ping URL's path (and any
    user or query) is its token, so only the scheme and host are shown."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    hidden = "/***" if parts.path.strip("/") or parts.query or parts.username else ""
    return f"{parts.scheme}://{host}{port}{hidden}"
