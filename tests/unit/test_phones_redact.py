"""Phone numbers to E.164, and the masking of numbers, addresses and secrets in output."""

from __future__ import annotations

import pytest

from scheduler.phones import InvalidPhoneNumber, to_e164
from scheduler.redact import mask_email, mask_phone, redact_text

# to_e164 ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0412 345 678", "+61412345678"),
        ("0412345678", "+61412345678"),
        ("+61 412 345 678", "+61412345678"),
        ("+61412345678", "+61412345678"),
        ("61412345678", "+61412345678"),
        ("  0412-345-678 ", "+61412345678"),
        ("whatsapp:+61412345678", "+61412345678"),
        ("WhatsApp:0412 345 678", "+61412345678"),
        ("(08) 9222 1234", "+61892221234"),  # a Perth landline
        ("+1 415 523 8886", "+14155238886"),
        ("+44 7911 123456", "+447911123456"),
    ],
)
def test_numbers_become_e164(raw: str, expected: str) -> None:
    assert to_e164(raw) == expected


@pytest.mark.parametrize("raw", ["", "   ", "hello", "0412", "0412 345", "+61 000 000 000", "12"])
def test_numbers_that_cannot_be_dialled_are_refused_without_echoing_them(raw: str) -> None:
    with pytest.raises(InvalidPhoneNumber) as caught:
        to_e164(raw)

    assert isinstance(caught.value, ValueError)
    if raw.strip():
        assert raw.strip() not in str(caught.value)


# mask_phone / mask_email -----------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("+61412345678", "+61 4** *** 678"),
        ("+61 412 345 678", "+61 4** *** 678"),
        ("+14155238886", "+141*****886"),
        ("0412345678", "041****678"),
        ("12", "***"),
        ("", "***"),
    ],
)
def test_mask_phone_keeps_only_the_ends(number: str, masked: str) -> None:
    assert mask_phone(number) == masked


@pytest.mark.parametrize(
    ("address", "masked"),
    [
        ("jane@example.com", "j***@example.com"),
        ("j@example.com.au", "j***@example.com.au"),
        ("not-an-address", "***"),
    ],
)
def test_mask_email_keeps_the_first_letter_and_the_domain(address: str, masked: str) -> None:
    assert mask_email(address) == masked


# redact_text -----------------------------------------------------------------------


def test_secrets_are_removed_before_anything_else() -> None:
    text = "token tw-secret-123 and key re_abc_456 in a URL https://x/?k=tw-secret-123"

    redacted = redact_text(text, secrets=["tw-secret-123", "re_abc_456", ""])

    assert "tw-secret-123" not in redacted
    assert "re_abc_456" not in redacted
    assert redacted.count("[redacted]") == 3


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("call 0412 345 678 now", "call 041****678 now"),
        ("To whatsapp:+61412345678 failed", "To whatsapp:+61 4** *** 678 failed"),
        ("from +61 412 345 678.", "from +61 4** *** 678."),
        ("mail jane.doe+gigs@example.com.au please", "mail j***@example.com.au please"),
        ("<jane@example.com>", "<j***@example.com>"),
    ],
)
def test_numbers_and_addresses_are_masked_in_text(text: str, redacted: str) -> None:
    assert redact_text(text) == redacted


@pytest.mark.parametrize(
    "text",
    [
        "Saturday 5 December 2026, 7:00 pm",
        "balance due $1,250.00",
        "event at 2026-12-05T19:00:00+08:00",
        "cutoff 2026-12-05",
        "deleted 5000 rows in 12.50 s",
        "Twilio error 21211",
        "HTTP 429",
    ],
)
def test_dates_amounts_and_small_numbers_are_left_alone(text: str) -> None:
    assert redact_text(text) == text


@pytest.mark.parametrize(
    "text",
    ["booking FE-2026-0042: whatsapp failed", "delivery 123e4567-e89b-12d3-a456-426614174000"],
)
def test_booking_references_and_ids_are_left_alone(text: str) -> None:
    assert redact_text(text) == text
