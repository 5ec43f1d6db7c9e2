"""``streamshop create-admin``: open an admin account through the same command path as sign-up."""

from __future__ import annotations

import argparse
import os
import sys

import msgspec

from app.commands import execute
from app.commands.accounts import SignUp, email_owner, normalize_email
from app.commands.errors import DomainError, DuplicateEmail
from app.passwords import Passwords
from app.settings import Settings
from events.store import EventStore, Metadata


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--email", default=os.environ.get("ADMIN_EMAIL"), help="(or ADMIN_EMAIL)")
    parser.add_argument(
        "--password", default=os.environ.get("ADMIN_PASSWORD"), help="(or ADMIN_PASSWORD)"
    )
    parser.add_argument("--name", default="Admin")


async def _existing(store: EventStore, email: str) -> int | None:
    """Exit code when the email is already taken: 0 if it is an admin, else 1."""
    owner, _ = await email_owner(store, email)
    if owner is None:
        return None
    if (await store.state(owner)).get("role") == "admin":
        print(f"{email} is already an admin ({owner})")
        return 0
    print(f"{email} belongs to a non-admin account ({owner}); not changed", file=sys.stderr)
    return 1


async def run(args: argparse.Namespace, settings: Settings) -> int:
    if not args.email or not args.password:
        print("create-admin needs --email and --password", file=sys.stderr)
        return 2
    if not 8 <= len(args.password) <= 1024:
        print("the password must have 8 to 1024 characters", file=sys.stderr)
        return 2
    email = normalize_email(args.email)
    redis = settings.redis.connect()
    try:
        store = EventStore(redis, settings.redis.keys)
        await store.load_functions()
        if (code := await _existing(store, email)) is not None:
            return code
        password_hash = await Passwords(settings.auth).hash(args.password)
        command = SignUp(email=email, name=args.name, password_hash=password_hash, role="admin")
        meta = Metadata(actor="cli:create-admin", source="cli")
        try:
            result = await execute(store, command, meta)
        except DuplicateEmail:
            return await _existing(store, email) or 1
        except DomainError as exc:
            print(f"refused: {exc.detail}", file=sys.stderr)
            return 1
        account_id = msgspec.json.decode(result.result)["account_id"]
        print(f"admin {email} created: account {account_id}")
        return 0
    finally:
        await redis.aclose()
