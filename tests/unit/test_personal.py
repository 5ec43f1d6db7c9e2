"""Sealing personal data, the keyed email digest, and the upcast of clear-text account events."""

from __future__ import annotations

import os

import msgspec
import pytest

from events.codec import decode_entry
from events.keys import Keys, digest
from events.personal import (
    CLEAR,
    KEY_BYTES,
    Opener,
    SealBroken,
    email_digest,
    is_sealed,
    seal,
    unseal,
)
from events.types import AccountCreated, AccountProfileChanged
from tests.unit.test_codec import entry

KEY = os.urandom(KEY_BYTES)


def test_a_sealed_value_opens_with_its_subjects_key_and_shows_no_clear_text() -> None:
    sealed = seal(KEY, "a1", "email", "ana@example.com")
    assert is_sealed(sealed) and "ana" not in sealed
    assert unseal(KEY, "a1", "email", sealed) == "ana@example.com"
    assert seal(KEY, "a1", "email", "ana@example.com") != sealed  # a fresh nonce each time


def test_a_destroyed_key_leaves_the_value_unreadable() -> None:
    sealed = seal(KEY, "a1", "name", "Ana")
    assert unseal(None, "a1", "name", sealed) is None
    assert Opener({"a1": None}).open("a1", "name", sealed) is None


def test_a_sealed_value_moved_to_another_account_or_field_does_not_open() -> None:
    sealed = seal(KEY, "a1", "name", "Ana")
    with pytest.raises(SealBroken):
        unseal(KEY, "a2", "name", sealed)
    with pytest.raises(SealBroken):
        unseal(KEY, "a1", "email", sealed)
    with pytest.raises(SealBroken):
        unseal(os.urandom(KEY_BYTES), "a1", "name", sealed)
    with pytest.raises(SealBroken):
        unseal(KEY, "a1", "name", "pii1:not base64!")


def test_clear_legacy_text_opens_as_itself_and_an_unfetched_key_is_an_error() -> None:
    assert CLEAR.open("a1", "name", "Ana") == "Ana"
    with pytest.raises(LookupError):
        CLEAR.open("a1", "name", seal(KEY, "a1", "name", "Ana"))


def test_the_email_digest_is_keyed_by_the_server_secret() -> None:
    one, other = Keys(digest_secret=b"one"), Keys(digest_secret=b"other")
    assert one.email_digest("ana@example.com") == email_digest(b"one", "ana@example.com")
    assert one.email_digest("ana@example.com") != other.email_digest("ana@example.com")
    assert one.email_digest("ana@example.com") != digest("ana@example.com")
    assert "ana" not in one.uniq("email", one.email_digest("ana@example.com"))
    assert "digest_secret" not in repr(one)


def test_a_clear_text_account_created_v1_is_upcast_with_its_old_digest() -> None:
    data = {
        "type": "AccountCreated",
        "account_id": "a1",
        "email": "ana@example.com",
        "name": "Ana",
        "password_hash": "h",
    }
    fields = entry("AccountCreated", msgspec.json.encode(data), 1, aggregate="account:a1")
    event = decode_entry(b"1-0", fields, partition=0).event
    assert isinstance(event, AccountCreated)
    assert (event.email, event.name) == ("ana@example.com", "Ana")
    assert event.email_digest == digest("ana@example.com")
    assert CLEAR.open("a1", "email", event.email) == "ana@example.com"


def test_a_clear_text_profile_change_v1_keeps_its_address_as_json_text() -> None:
    address = {"line1": "Rua A, 1", "city": "Recife", "postal_code": "50000-000"}
    data = {
        "type": "AccountProfileChanged",
        "account_id": "a1",
        "name": "Ana Maria",
        "shipping_address": address,
    }
    fields = entry("AccountProfileChanged", msgspec.json.encode(data), 1, aggregate="account:a1")
    event = decode_entry(b"1-0", fields, partition=0).event
    assert isinstance(event, AccountProfileChanged) and event.shipping_address is not None
    assert event.name == "Ana Maria"
    assert msgspec.json.decode(event.shipping_address) == address
