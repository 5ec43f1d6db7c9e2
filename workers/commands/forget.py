"""``streamshop forget <account>``: forget a customer for real (crypto-shredding).

``<account>`` is an account id, or the customer's email (looked up by its keyed digest, or by its old unkeyed one for an account from before keyed digests).
The same path as ``DELETE /accounts/{id}``: ``CustomerForgotten`` is appended (the email's
reservation released), then the account's key is destroyed.
"""

from __future__ import annotations

import argparse
import sys

from app.commands.accounts import email_owner, normalize_email
from app.commands.errors import DomainError
from app.commands.profile import ForgetCustomer, forget_customer
from app.settings import Settings
from events.store import EventStore, Metadata

META = Metadata(actor="cli:forget", source="cli")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("account", help="account id, or the customer's email")


async def account_id_of(store: EventStore, account: str) -> str | None:
    if "@" not in account:
        return account.removeprefix("account:")
    owner, _ = await email_owner(store, normalize_email(account))
    return owner.removeprefix("account:") if owner else None


async def run(args: argparse.Namespace, settings: Settings) -> int:
    redis = settings.redis.connect()
    try:
        store = EventStore(redis, settings.redis.keys)
        await store.load_functions()
        account_id = await account_id_of(store, args.account)
        if account_id is None:
            print("no account has that email", file=sys.stderr)
            return 1
        try:
            position = await forget_customer(store, ForgetCustomer(account_id=account_id), META)
        except DomainError as exc:
            print(f"refused: {exc.detail}", file=sys.stderr)
            return 1
        print(f"account {account_id} forgotten (position {position})")
        return 0
    finally:
        await redis.aclose()
