"""Phone numbers as WhatsApp wants them: E.164, with Australian national numbers understood."""

from __future__ import annotations

import functools

DEFAULT_REGION = "AU"  # the platform's customers write national numbers like 0412 345 678


class InvalidPhoneNumber(ValueError):
    """A number that cannot be dialled. The message never includes the number itself."""


@functools.lru_cache(maxsize=4096)  # a run plans several messages for each number
def to_e164(raw: str) -> str:
    """`0412 345 678` -> `+61412345678`; raise InvalidPhoneNumber when it cannot be a real number."""
    import phonenumbers  # here: its metadata takes a while to load, and most commands never dial

    text = raw.strip()
    if text.lower().startswith("whatsapp:"):
        text = text[len("whatsapp:") :]
    try:
        parsed = phonenumbers.parse(text, DEFAULT_REGION)
    except phonenumbers.NumberParseException:
        raise InvalidPhoneNumber("not a phone number") from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidPhoneNumber("not a valid phone number")
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))
