"""The real chat server (`chainlit run app.py`) on 127.0.0.1, with its own storage and data."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}


def free_port(host: str = "127.0.0.1") -> int:
    """A port on `host` that nothing listens on now (connecting to it is refused)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
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

    def status(self) -> dict[str, int]:
        """VmRSS/VmHWM (kB) of the app process: `chainlit` runs the app in its own process."""
        values: dict[str, int] = {}
        if self.process is None:
            return values
        try:
            text = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return values
        for line in text.splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                values[key] = int(value.split()[0])
        return values

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
