"""Logins: the user list fails closed, unknown users cost a real check, failures are limited."""

from __future__ import annotations

import asyncio

import bcrypt
import pytest

from rag.auth import FailedLogins, Logins, LoginThrottled, UserStore, parse_users
from rag.errors import ConfigError


def test_a_well_formed_user_list_parses() -> None:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    assert parse_users(f" alice:wonder:land , bob:{hashed},") == {
        "alice": "wonder:land",
        "bob": hashed,
    }


@pytest.mark.parametrize(
    ("entries", "named"),
    [
        ("alice", "entry 1 ('alice') has no ':'"),
        ("alice:pw,bob", "entry 2 ('bob') has no ':'"),
        (":pw", "has no user name"),
        ("alice:", "gives user 'alice' no password"),
        ("alice:a,alice:b", "names user 'alice' a second time"),
        ("alice:$2b$12$tooshort", "bcrypt hash that is not well formed"),
    ],
)
def test_an_entry_that_does_not_parse_stops_the_start(entries: str, named: str) -> None:
    with pytest.raises(ConfigError, match="RAG_AUTH_USERS") as raised:
        parse_users(entries)
    assert named in str(raised.value)


def test_an_unknown_user_is_checked_against_a_hash_of_the_same_cost() -> None:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=5)).decode()
    users = UserStore({"bob": hashed})
    assert not users.check("mallory", "s3cret")
    assert users._decoy_hash().startswith("$2b$05$")  # the same bcrypt work as for bob


def test_a_session_stamp_changes_with_the_password() -> None:
    before = UserStore({"alice": "one"}).fingerprint("alice")
    assert before and before != UserStore({"alice": "two"}).fingerprint("alice")
    assert UserStore({"bob": "one"}).fingerprint("alice") is None


def test_failed_logins_over_the_limit_must_wait() -> None:
    logins = Logins(UserStore({"alice": "secret"}), FailedLogins(limit=2, window_s=60))
    for _ in range(2):
        assert not asyncio.run(logins.check("alice", "guess", "10.0.0.1"))
    with pytest.raises(LoginThrottled) as raised:
        asyncio.run(logins.check("alice", "secret", "10.0.0.1"))  # even the right password
    assert 1 <= raised.value.retry_after <= 60
    assert asyncio.run(logins.check("alice", "secret", "10.0.0.2"))  # another client may


def test_failures_are_forgotten_after_the_window() -> None:
    failures = FailedLogins(limit=1, window_s=0.05)
    failures.failed("10.0.0.1")
    assert failures.retry_after("10.0.0.1") > 0
    asyncio.run(asyncio.sleep(0.1))
    assert failures.retry_after("10.0.0.1") == 0
