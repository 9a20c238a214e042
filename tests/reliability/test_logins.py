"""Logins of the real app (`chainlit run app.py`): a user list that does not parse stops the start,
guessing at the login form is limited, and a user removed from RAG_AUTH_USERS is logged out."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
import socketio

from rag.auth import MAX_FAILED_LOGINS
from testkit.app import ChatServer, prepare_home
from testkit.chainlit import ChatClient

ALICE = ("alice", "alice-Pw-7f3kQ")
BOB = ("bob", "bob-Pw-2q9zR")


def logins(*users: tuple[str, str]) -> str:
    return ",".join(f"{user}:{password}" for user, password in users)


def log_in(server: ChatServer, user: tuple[str, str]) -> httpx.Response:
    return httpx.post(
        f"{server.url}/login", data={"username": user[0], "password": user[1]}, timeout=30
    )


def session_cookie(server: ChatServer, user: tuple[str, str]) -> dict[str, str]:
    response = log_in(server, user)
    assert response.status_code == 200, response.text
    return {"access_token": response.cookies["access_token"]}


def current_user(server: ChatServer, cookies: dict[str, str]) -> httpx.Response:
    return httpx.get(f"{server.url}/user", cookies=cookies, timeout=30)


def test_a_user_list_that_does_not_parse_stops_the_start(
    tmp_path: Path, models_cache: Path
) -> None:
    home = prepare_home(tmp_path, models_cache)
    server = ChatServer(home, settings={"RAG_AUTH_USERS": "alice:secret,bob"})
    with pytest.raises(RuntimeError, match="chat server exited"):
        server.start(timeout=120)
    assert "rag: error: RAG_AUTH_USERS: entry 2 ('bob') has no ':'" in server.log.read_text()


def test_guessing_at_the_login_form_is_refused_with_a_429(
    tmp_path: Path, models_cache: Path
) -> None:
    server = ChatServer(
        prepare_home(tmp_path, models_cache), settings={"RAG_AUTH_USERS": logins(ALICE)}
    )
    server.start()
    try:
        for _ in range(MAX_FAILED_LOGINS):
            assert log_in(server, (ALICE[0], "guess")).status_code == 401
        refused = log_in(server, ALICE)  # while the limit holds, even the right password
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert "too many failed logins" in refused.json()["detail"]
    finally:
        server.stop()


def test_removing_a_user_ends_their_sessions(tmp_path: Path, models_cache: Path) -> None:
    home = prepare_home(tmp_path, models_cache)
    server = ChatServer(home, settings={"RAG_AUTH_USERS": logins(ALICE, BOB)})
    server.start()
    try:
        alice, bob = session_cookie(server, ALICE), session_cookie(server, BOB)
        assert current_user(server, alice).json()["identifier"] == "alice"
    finally:
        server.stop()
    # The same storage (and session secret), alice removed from the list.
    server = ChatServer(home, port=server.port, settings={"RAG_AUTH_USERS": logins(BOB)})
    server.start()
    try:
        assert current_user(server, alice).status_code == 401
        assert current_user(server, bob).json()["identifier"] == "bob"
        with pytest.raises(socketio.exceptions.ConnectionError):  # nor may her chat socket
            asyncio.run(ChatClient(server.url, f"access_token={alice['access_token']}").connect())
    finally:
        server.stop()
