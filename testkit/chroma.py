"""A real `chroma run` server for tests and benches: started from the venv's own `chroma`, on a free local port."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from testkit.app import free_port

HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ChromaServer:
    host: str
    port: int
    path: Path
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def heartbeat(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/api/v2/heartbeat", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False


def chroma_executable() -> Path:
    """The `chroma` command installed next to this interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / "chroma"
    if beside.is_file():
        return beside
    found = shutil.which("chroma")
    if found is None:
        raise RuntimeError("no `chroma` executable next to the interpreter or on PATH")
    return Path(found)


def _log_tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextmanager
def run_chroma_server(directory: Path, host: str = HOST) -> Iterator[ChromaServer]:
    """Start `chroma run` with its data under `directory`, wait for its heartbeat, stop it after."""
    data = directory / "chroma-data"
    log = directory / "chroma-server.log"
    port = free_port(host)
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False", "NO_COLOR": "1"}
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [
                str(chroma_executable()),
                "run",
                "--path",
                str(data),
                "--host",
                host,
                "--port",
                str(port),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # a Ctrl-C of the test run does not reach it before teardown
        )
    server = ChromaServer(host, port, data, log, process)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.heartbeat():
            if process.poll() is not None:
                raise RuntimeError(
                    f"`chroma run` exited with code {process.returncode} before answering:\n"
                    + _log_tail(log)
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"`chroma run` did not answer {server.url}/api/v2/heartbeat within "
                    f"{START_TIMEOUT_S:g} s:\n" + _log_tail(log)
                )
            time.sleep(0.2)
        yield server
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `grace_s`."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace_s)
