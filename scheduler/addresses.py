"""Addresses as the suppression list keeps them: normalised (email lower-cased, phone in E.164)
so every spelling of one address matches, hashed so the list holds no address in clear, and
masked for the operator's listing."""

from __future__ import annotations

import hashlib

from scheduler.phones import to_e164
from scheduler.redact import mask_email, mask_phone
from scheduler.vocabulary import AddressKind


def kind_of_address(address: str) -> AddressKind:
    """An operator's ADDRESS: an email address when it has an @, else a phone number."""
    return AddressKind.EMAIL if "@" in address else AddressKind.PHONE


def normalised(address: str, kind: AddressKind) -> str:
    """The form writers and the send-time check both hash. Raises InvalidPhoneNumber (a ValueError)."""
    if kind is AddressKind.EMAIL:
        return address.strip().lower()
    return to_e164(address)


def address_hash(address: str, kind: AddressKind) -> str:
    """SHA-256 (hex) of the normalised address; PostgreSQL computes the same from the outbox's address."""
    return hashlib.sha256(normalised(address, kind).encode("utf-8")).hexdigest()


def masked(address: str, kind: AddressKind) -> str:
    """`j***@example.com`, `+61 4** *** 678`: how the listing shows a (normalised) address."""
    return mask_email(address) if kind is AddressKind.EMAIL else mask_phone(address)
