"""A real chat server (`chainlit run app.py`) on 127.0.0.1 with its own storage, for any test."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import socketio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from chat_load import user_message  # noqa: E402 - bench/chat_load.py speaks Chainlit's protocol

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ChatServer:
    """One `chainlit run app.py` process with its own storage and data folders."""

    home: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    settings: dict[str, str] = field(default_factory=dict)  # extra env, e.g. RAG_AUTH_USERS

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.home / "server.log"

    @property
    def app_root(self) -> Path:
        """Chainlit's APP_ROOT for this server: the project's UI files, but its own `.files/`.

        Chainlit keeps uploads in APP_ROOT/.files and deletes that whole folder when a server
        stops; with the checkout as APP_ROOT, stopping one server (ours, or a colleague's
        `chainlit run` in the same checkout) breaks the uploads of every other one.
        """
        root = self.home / "app-root"
        root.mkdir(exist_ok=True)
        for name in (".chainlit", "public", "chainlit.md"):
            link = root / name
            if (ROOT / name).exists() and not link.is_symlink():
                link.symlink_to(ROOT / name)
        return root

    def env(self) -> dict[str, str]:
        # Chainlit reads CI, HEADLESS, DEBUG, WATCH... unprefixed (CI=true fakes an OpenAI key).
        chainlit_flags = {"CI", "HEADLESS", "DEBUG", "WATCH", "NO_CACHE", "RUN_TARGET"}
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RAG_", "CHAINLIT_")) and k not in chainlit_flags
        }
        env.update(
            RAG_STORAGE_DIR=str(self.home / "storage"),
            RAG_DATA_DIR=str(self.home / "data"),
            RAG_PROFILES_DIR=str(ROOT / "profiles"),
            RAG_LLM="embedded",
            RAG_MAX_NEW_TOKENS="40",
            RAG_TEMPERATURE="0",
            HF_HUB_OFFLINE="1",
            CHAINLIT_APP_ROOT=str(self.app_root),
        )
        env.update(self.settings)
        return env

    def start(self, timeout: float = 180.0) -> None:
        chainlit = Path(sys.executable).parent / "chainlit"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    str(chainlit),
                    "run",
                    str(ROOT / "app.py"),
                    "--headless",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                cwd=ROOT,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"chat server exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"chat server did not answer /healthz:\n{self.log.read_text()[-3000:]}")

    def health(self) -> dict:
        return httpx.get(f"{self.url}/healthz", timeout=10).json()

    def wait_for_sync(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while self.health()["index"]["sync"]["state"] != "done":
            if time.monotonic() > deadline:
                raise TimeoutError("data folder sync did not finish")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def prepare_home(home: Path, models_cache: Path) -> Path:
    """Empty storage/ (sharing models/: the embedder's ONNX graph) and data/ folders for one
    ChatServer."""
    (home / "storage").mkdir(parents=True)
    (home / "storage" / "models").symlink_to(models_cache, target_is_directory=True)
    (home / "data").mkdir()
    return home


@dataclass
class Browser:
    """A Playwright page whose requests may only go to this machine."""

    page: object
    outside: list[str]
    shots: Path
    count: int = 0
    dialogs: list[str] = field(default_factory=list)  # native alert/confirm/prompt, dismissed

    def shot(self, name: str) -> None:
        self.count += 1
        self.page.screenshot(path=str(self.shots / f"{self.count:02d}-{name}.png"), full_page=True)  # type: ignore[attr-defined]


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

    async def ask(self, question: str, *attachments: tuple[str, bytes]) -> None:
        references = []
        async with httpx.AsyncClient(timeout=60) as http:
            for name, data in attachments:
                upload = await http.post(
                    f"{self.url}/project/file",
                    params={"session_id": self.session_id},
                    files={"file": (name, data, "text/plain")},
                    headers={"Cookie": self.cookie},
                )
                upload.raise_for_status()
                references.append({"id": upload.json()["id"]})
        message = user_message(question)
        self.done.clear()
        self.started = False
        await self.sio.emit("client_message", {"message": message, "fileReferences": references})
        await asyncio.wait_for(self.done.wait(), 240)

    async def close(self) -> None:
        await self.sio.disconnect()
