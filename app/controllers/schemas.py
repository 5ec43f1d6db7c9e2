"""Shared request/response field types for the HTTP API (msgspec Structs in and out)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from app.commands.base import Position

Email = Annotated[str, msgspec.Meta(min_length=3, max_length=320, examples=["ana@example.com"])]
Password = Annotated[str, msgspec.Meta(min_length=8, max_length=1024)]
LoginPassword = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
PersonName = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class Body(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of request bodies: an unknown field is a 400 naming it."""


class Token(msgspec.Struct, frozen=True, kw_only=True):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    account_id: str
    position: Position


class AccountChanged(msgspec.Struct, frozen=True, kw_only=True):
    """What a command on one account answers (sign-up, profile, password, activation): the
    account and the log position to wait for (read-your-writes)."""

    account_id: str
    position: Position
