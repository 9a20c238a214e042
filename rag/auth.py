"""Logins: the users of RAG_AUTH_USERS, password checks off the event loop, failed-login limits,
sessions that end when their user is removed, and the session-signing secret."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import os
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.config import Settings
from rag.errors import ConfigError, RagError
from rag.web import respond_json

logger = logging.getLogger(__name__)

BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
# Failed logins a client may make in a window before it is refused with 429 (the chat's /login
# and the API alike): enough for typos, far too few for guessing.
MAX_FAILED_LOGINS = 5
FAILED_LOGIN_WINDOW_S = 60.0
# Clients whose failures are remembered at once; beyond it the oldest are forgotten.
MAX_TRACKED_CLIENTS = 10_000


class LoginThrottled(RagError):
    """A client failed to log in too often; it may try again after `retry_after` seconds."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(
            f"too many failed logins from this address; try again in {self.retry_after} s"
        )


def parse_users(text: str) -> dict[str, str]:
    """`alice:secret,bob:$2b$12$...` as {name: password or bcrypt hash}. An entry that does not
    parse stops the start: dropping it could silently turn logins off."""
    passwords: dict[str, str] = {}
    for position, raw in enumerate(text.split(","), 1):
        entry = raw.strip()
        if not entry:
            continue
        name, colon, password = entry.partition(":")
        name = name.strip()
        problem = ""
        if not colon:
            problem = "has no ':' between the user name and the password"
        elif not name:
            problem = "has no user name before ':'"
        elif not password:
            problem = f"gives user {name!r} no password"
        elif name in passwords:
            problem = f"names user {name!r} a second time"
        elif password.startswith(BCRYPT_PREFIXES) and not _is_bcrypt_hash(password):
            problem = f"gives user {name!r} a bcrypt hash that is not well formed"
        if problem:
            shown = name or entry[:20]
            raise ConfigError(
                f"RAG_AUTH_USERS: entry {position} ({shown!r}) {problem}; "
                "expected NAME:PASSWORD or NAME:BCRYPT_HASH, comma-separated"
            )
        passwords[name] = password
    return passwords


def _is_bcrypt_hash(value: str) -> bool:
    # $2b$12$ + 53 characters of salt and digest
    parts = value.split("$")
    return len(value) == 60 and len(parts) == 4 and parts[2].isdigit()


@dataclass
class UserStore:
    """Users allowed to log in. Unknown users take as long to refuse as a wrong password."""

    passwords: dict[str, str]
    _decoy: str | None = field(default=None, init=False, repr=False)

    @property
    def enabled(self) -> bool:
        return bool(self.passwords)

    def check(self, username: str, password: str) -> bool:
        """Whether the password is the user's (slow when bcrypt: call it off the event loop)."""
        stored = self.passwords.get(username)
        if stored is None:
            # Do the same work as for a known user, so timing does not tell who exists.
            _matches(self._decoy_hash(), password)
            return False
        return _matches(stored, password)

    def fingerprint(self, username: str) -> str | None:
        """A short digest of the user's entry: a session signed with another one (the user was
        removed, or the password changed) is over."""
        stored = self.passwords.get(username)
        if stored is None:
            return None
        return hashlib.sha256(f"{username}\0{stored}".encode()).hexdigest()[:16]

    def _decoy_hash(self) -> str:
        """A password entry like the store's own: a bcrypt hash of the same cost, or plain text."""
        if self._decoy is None:
            hashed = next((p for p in self.passwords.values() if p.startswith(BCRYPT_PREFIXES)), "")
            if hashed:
                import bcrypt

                rounds = int(hashed.split("$")[2])
                self._decoy = bcrypt.hashpw(
                    secrets.token_bytes(16), bcrypt.gensalt(rounds)
                ).decode()
            else:
                self._decoy = secrets.token_urlsafe(16)
        return self._decoy


def _matches(stored: str, password: str) -> bool:
    if stored.startswith(BCRYPT_PREFIXES):
        import bcrypt

        return bcrypt.checkpw(password.encode(), stored.encode())
    return hmac.compare_digest(stored.encode(), password.encode())


def user_store(settings: Settings) -> UserStore:
    """The users of RAG_AUTH_USERS (raises ConfigError on an entry that does not parse)."""
    store = UserStore(parse_users(settings.auth_users))
    ensure_auth_secret(settings.storage_dir)
    return store


def ensure_auth_secret(storage_dir: Path) -> None:
    """Chainlit signs its session tokens with CHAINLIT_AUTH_SECRET: keep one stable in storage/."""
    if os.environ.get("CHAINLIT_AUTH_SECRET"):
        return
    path = storage_dir / ".auth_secret"
    if not path.exists():
        storage_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    os.environ["CHAINLIT_AUTH_SECRET"] = path.read_text().strip()


class FailedLogins:
    """Failed logins per client in a sliding window; a client over the limit must wait."""

    def __init__(
        self, limit: int = MAX_FAILED_LOGINS, window_s: float = FAILED_LOGIN_WINDOW_S
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> float:
        """Seconds until the client may try again (0: now)."""
        with self._lock:
            failures = self._recent(client, time.monotonic())
            if len(failures) < self.limit:
                return 0.0
            return failures[0] + self.window_s - time.monotonic()

    def check(self, client: str) -> None:
        """Raise LoginThrottled when the client has failed too often."""
        wait = self.retry_after(client)
        if wait > 0:
            raise LoginThrottled(wait)

    def failed(self, client: str) -> None:
        with self._lock:
            now = time.monotonic()
            self._recent(client, now).append(now)
            while len(self._failures) > MAX_TRACKED_CLIENTS:
                self._failures.pop(next(iter(self._failures)))

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)

    def _recent(self, client: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(client, deque())
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        return failures


class Logins:
    """Checks logins against the UserStore for the chat and the API: off the event loop, limited
    per client, and remembering the ones already verified (bcrypt is slow on purpose and an API
    client sends its login with every request; only a digest is kept)."""

    def __init__(self, users: UserStore, failures: FailedLogins | None = None) -> None:
        self.users = users
        self.failures = failures or FailedLogins()
        self._verified: set[bytes] = set()

    async def check(self, user: str, password: str, client: str = "") -> bool:
        """Whether the login is right; raises LoginThrottled for a client over its limit."""
        key = hashlib.sha256(f"{user}\0{password}".encode()).digest()
        if key in self._verified:
            return True
        self.failures.check(client)
        if await asyncio.to_thread(self.users.check, user, password):
            self._verified.add(key)
            self.failures.succeeded(client)
            return True
        self.failures.failed(client)
        logger.warning("failed login for %r from %s", user, client or "an unknown client")
        return False


def client_address(scope: Any) -> str:
    """The client a request came from (its IP address)."""
    client = scope.get("client")
    return str(client[0]) if client else ""


class LoginLimitMiddleware:
    """Refuses the chat's login form with 429 (and Retry-After) for a client that failed too often.

    Chainlit's own /login route checks the password (our callback, off the event loop); its
    answer says whether the login failed (401), which is counted here per client address."""

    def __init__(self, app: Any, path: str, failures: FailedLogins) -> None:
        self.app = app
        self.path = path
        self.failures = failures

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == self.path:
            client = client_address(scope)
            try:
                self.failures.check(client)
            except LoginThrottled as throttled:
                headers = {"retry-after": str(throttled.retry_after)}
                await respond_json(send, 429, str(throttled), headers)
                return
            status = 0

            async def watch(message: Any) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            await self.app(scope, receive, watch)
            if status == 401:
                self.failures.failed(client)
            elif 200 <= status < 300:
                self.failures.succeeded(client)
            return
        await self.app(scope, receive, send)


class SessionGuard:
    """Ends chat sessions whose user is no longer in RAG_AUTH_USERS, or whose password changed.

    Chainlit's session token (a signed JWT valid for days) does not know the user list; our login
    callback stamps it with the user's `fingerprint`, and every request with a token whose stamp
    is not the current one is answered 401 (a websocket is closed) before it reaches Chainlit."""

    def __init__(self, app: Any, users: UserStore, skip_prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.users = users
        self.skip_prefixes = skip_prefixes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and not scope["path"].startswith(
            self.skip_prefixes
        ):
            identity = session_identity(scope)
            if identity is not None and self.users.fingerprint(identity[0]) != identity[1]:
                logger.info("ended the session of %r: the login is no longer valid", identity[0])
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 4401})
                else:
                    await respond_json(send, 401, "your session has ended; log in again")
                return
        await self.app(scope, receive, send)


def session_identity(scope: Any) -> tuple[str, str | None] | None:
    """(user, login stamp) of the chat session token a request carries, when it has a valid one."""
    import jwt
    from chainlit.auth.cookie import get_token_from_cookies
    from chainlit.auth.jwt import decode_jwt
    from starlette.requests import HTTPConnection

    connection = HTTPConnection(scope)
    token = get_token_from_cookies(dict(connection.cookies))
    if not token:
        authorization = connection.headers.get("authorization", "")
        scheme, _, value = authorization.partition(" ")
        token = value.strip() if scheme.lower() == "bearer" and value.count(".") == 2 else ""
    if not token:
        return None
    try:
        user = decode_jwt(token)
    except (jwt.PyJWTError, TypeError, ValueError):  # not a session token: Chainlit refuses it
        return None
    stamp = (user.metadata or {}).get("login")
    return user.identifier, stamp if isinstance(stamp, str) else None
