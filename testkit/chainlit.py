"""Chainlit's chat protocol as its frontend speaks it: logging in, socket.io, user messages."""

from __future__ import annotations

import asyncio
import mimetypes
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import socketio


def user_message(text: str) -> dict[str, Any]:
    """A user's message as the Chainlit frontend sends it (`client_message` over socket.io)."""
    return {
        "id": str(uuid.uuid4()),
        "threadId": "",
        "name": "User",
        "type": "user_message",
        "output": text,
        "createdAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }


async def login(
    http: httpx.AsyncClient, url: str, user: str | None = None, password: str | None = None
) -> str:
    """The session cookie of a login (`/login`), or of the local user when the app has no logins
    (`/auth/header`); RuntimeError if the app refuses."""
    if user:
        response = await http.post(f"{url}/login", data={"username": user, "password": password})
    else:
        response = await http.post(f"{url}/auth/header")
    if response.status_code != 200:
        raise RuntimeError(f"login failed: HTTP {response.status_code} {response.text[:200]}")
    cookies = [f"{k}={v}" for k, v in response.cookies.items() if k.startswith("access_token")]
    if not cookies:
        raise RuntimeError("login answered without an access_token cookie")
    http.cookies.clear()  # sent explicitly per request, as the browser would
    return "; ".join(cookies)


class ChatClient:
    """What the Chainlit frontend does over socket.io, without a browser: connect, attach, ask."""

    def __init__(self, url: str, cookie: str, thread_id: str | None = None) -> None:
        self.url, self.cookie, self.thread_id = url, cookie, thread_id
        self.session_id = str(uuid.uuid4())
        self.sio = socketio.AsyncClient(reconnection=False)
        self.sio.on("*", self._on_event)
        self.done = asyncio.Event()
        self.started = False
        self.texts: list[str] = []

    async def _on_event(self, event: str, data: Any = None) -> None:
        if event == "task_start":
            self.started = True
        elif event == "task_end" and self.started:
            self.done.set()
        elif isinstance(data, dict):
            self.thread_id = self.thread_id or data.get("threadId") or None
            self.texts.append(f"{data.get('name', '')} {data.get('output') or ''}")
            self.texts.append(str(data.get("content") or data.get("token") or ""))

    async def connect(self) -> None:
        await self.sio.connect(
            self.url,
            headers={"Cookie": self.cookie} if self.cookie else {},
            auth={
                "sessionId": self.session_id,
                "clientType": "webapp",
                "chatProfile": "general",
                "threadId": self.thread_id,
                "userEnv": "{}",
            },
            transports=["websocket"],
            socketio_path="/ws/socket.io",
            wait_timeout=30,
        )
        await self.sio.emit("connection_successful")
        await asyncio.wait_for(self.done.wait(), 120)  # the chat has started (on_chat_start ran)

    async def upload(self, name: str, data: bytes) -> dict[str, str]:
        """Attach a file as the paper clip does; the reference a message then carries."""
        mime = mimetypes.guess_type(name)[0] or "text/plain"
        async with httpx.AsyncClient(timeout=60) as http:
            upload = await http.post(
                f"{self.url}/project/file",
                params={"session_id": self.session_id},
                files={"file": (name, data, mime)},
                headers={"Cookie": self.cookie},
            )
        upload.raise_for_status()
        return {"id": upload.json()["id"]}

    async def send(self, question: str, references: list[dict[str, str]] | None = None) -> None:
        """Send a question (with attached files' references); `answered` waits for the reply."""
        self.done.clear()
        self.started = False
        message = {"message": user_message(question), "fileReferences": references or []}
        await self.sio.emit("client_message", message)

    async def answered(self, timeout: float = 240) -> None:
        await asyncio.wait_for(self.done.wait(), timeout)

    async def ask(self, question: str, *attachments: tuple[str, bytes]) -> None:
        """Attach files (name, bytes) and ask, as one message; returns once it is answered."""
        references = [await self.upload(name, data) for name, data in attachments]
        await self.send(question, references)
        await self.answered()

    async def close(self) -> None:
        await self.sio.disconnect()
