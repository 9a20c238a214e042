"""Chat load benchmark: N concurrent chats over Chainlit's socket.io, each with its own attachment.

    .venv/bin/python bench/chat_load.py [--chats 20] [--url http://127.0.0.1:8000]
                                        [--max-new-tokens 32] [--format mixed|txt|pdf]
                                        [--timeout 480] [--models-cache DIR] [--keep]

Without --url it starts the real app (`chainlit run app.py --headless`, as tests/ui/conftest.py
does) on a free 127.0.0.1 port with its own temp storage and an empty data folder, the embedded LLM
(RAG_LLM=embedded, RAG_MAX_NEW_TOKENS=32, temperature 0), and stops it at the end. With --url it
drives an app that is already running (on this machine only) and cannot report its peak RSS.

No browser: each chat is what the Chainlit frontend does, done with python-socketio's asyncio
client (aiohttp websocket transport):

  1. POST /auth/header once (the app's no-login mode: everyone is the local user) for the
     `access_token` cookie (or POST /login with --user/--password when the app has logins);
  2. connect to /ws/socket.io with that cookie and auth {sessionId, clientType: "webapp",
     chatProfile, threadId: null, userEnv: "{}"}, then emit `connection_successful` (the chat
     starts: on_chat_start runs);
  3. upload the chat's attachment with POST /project/file?session_id=... - a small .txt or PDF that
     only this chat has, saying "Chat 7 code is KX-1007." among filler shared by all chats;
  4. emit `client_message` {message: a user_message step asking for that chat's code word,
     fileReferences: [the upload]}, as a user who attaches a file and asks in one message;
  5. wait for the reply: time to first token = the assistant message's `stream_start`; end = the
     `task_end` after the message's `task_start` (the whole on_message handler is done).

All chats start at once (after one untimed warm-up chat, which also leaves one more attachment in
the index that nobody else may see). Per chat the bench keeps every file name the app cites (the
answer's source elements, its "Sources:" line and the Search step's list) and every code word it
shows; a name or a code word of ANOTHER chat's attachment is a cross-chat leak (goal: 0).

Reported: latency percentiles (p50/p95/max) of the first token and of the full answer, measured
from sending the question (the attachment is indexed inside that window, as in the UI), the
time to the end of the Search step, errors (a refused upload, a warning or error message, a
disconnect or a timeout), leaks, how many answers cite their own attachment and say their own code,
and the app's peak RSS (VmHWM of the chainlit process, when the bench started it).

Traffic goes to 127.0.0.1 only; every wait is bounded (--timeout per chat, 180 s for start-up).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import socketio
from common import models_cache, say

ROOT = Path(__file__).resolve().parents[1]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
STARTUP_TIMEOUT_S = 180.0
CODE_WORD = re.compile(r"\bKX-\d{4}\b")
ATTACHMENT_NAME = re.compile(r"\bloadtest-chat-\d{2,}\.(?:pdf|txt)\b")
FILLER = (
    "This note belongs to a load test of the document chat. It describes a fictional storage "
    "room with shelves of archive boxes, a ledger of deliveries, and the opening hours of the "
    "front desk, which are nine to five on weekdays. Visitors sign the ledger on arrival and "
    "return their badges when they leave. The room is kept cool and dry."
)


# --- the attachments ---------------------------------------------------------------------------


def code_word(chat: int) -> str:
    return f"KX-{1000 + chat:04d}"


def attachment_text(chat: int) -> str:
    return (
        f"Chat {chat} code is {code_word(chat)}. {FILLER} "
        f"Remember: the code of chat {chat} is {code_word(chat)}."
    )


def question(chat: int) -> str:
    return f"What is the code of chat {chat}?"


def pdf_bytes(text: str) -> bytes:
    """A one-page PDF with `text` in Helvetica (hand-written objects and xref, no dependency)."""
    words, lines, line = text.split(), [], ""
    for word in words:
        if len(line) + len(word) + 1 > 80:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    escaped = [ln.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") for ln in lines]
    stream = "BT /F1 11 Tf 14 TL 56 760 Td " + " ".join(f"({ln}) Tj T*" for ln in escaped) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n"
    ).encode()
    return bytes(out)


@dataclass(frozen=True)
class Attachment:
    chat: int
    name: str
    mime: str
    data: bytes

    @property
    def code(self) -> str:
        return code_word(self.chat)


def make_attachment(chat: int, kind: str, folder: Path) -> Attachment:
    if kind == "mixed":
        kind = "pdf" if chat % 2 == 0 else "txt"
    text = attachment_text(chat)
    if kind == "pdf":
        name, mime, data = f"loadtest-chat-{chat:02d}.pdf", "application/pdf", pdf_bytes(text)
    else:
        name, mime, data = f"loadtest-chat-{chat:02d}.txt", "text/plain", text.encode()
    (folder / name).write_bytes(data)  # kept with --keep, for a look at what was sent
    return Attachment(chat, name, mime, data)


# --- the app -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def check_local(url: str) -> str:
    host = urlparse(url).hostname or ""
    if host not in LOCAL_HOSTS:
        raise SystemExit(f"--url must point at this machine (127.0.0.1/localhost), not {host!r}")
    return url.rstrip("/")


def prepare_models(storage: Path, cache: Path | None) -> None:
    """storage/models holds the converted embedded model; converting (if needed) in a child process,
    so the app's peak RSS is the one of serving chats, not of converting."""
    sys.path.insert(0, str(ROOT))
    from rag.llm import EMBEDDED_FOLDER, _is_converted, find_embedded_gguf

    models = storage / "models"
    storage.mkdir(parents=True, exist_ok=True)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        models.symlink_to(cache, target_is_directory=True)
    folder = models / EMBEDDED_FOLDER
    if _is_converted(folder, find_embedded_gguf()):
        say(f"converted embedded model reused from {cache}")
        return
    say(f"converting the embedded model once into {cache or 'the temp storage'} (~30 s)")
    script = (
        "import sys; from pathlib import Path; from rag.cli import offline_environment; "
        "offline_environment(); from rag.llm import ensure_embedded_model; "
        "ensure_embedded_model(Path(sys.argv[1]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if done.returncode != 0:
        raise SystemExit(f"converting the embedded model failed:\n{done.stderr[-2000:]}")


@dataclass
class App:
    """One `chainlit run app.py` process with its own storage and (empty) data folder."""

    home: Path
    max_new_tokens: int
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.home / "server.log"

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
            RAG_MAX_NEW_TOKENS=str(self.max_new_tokens),
            RAG_TEMPERATURE="0",
            HF_HUB_OFFLINE="1",
        )
        return env

    def start(self) -> None:
        (self.home / "data").mkdir(parents=True, exist_ok=True)
        chainlit = Path(sys.executable).parent / "chainlit"
        command = [str(chainlit), "run", str(ROOT / "app.py"), "--headless"]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the app exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"the app did not answer /healthz:\n{self.log.read_text()[-3000:]}")

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
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


# --- one chat ----------------------------------------------------------------------------------


@dataclass
class ChatResult:
    chat: int
    attachment: Attachment
    ttft: float | None = None  # seconds from sending the question
    search: float | None = None  # end of the Search step
    total: float | None = None  # task_end: the handler is done
    answer: str = ""
    cited: set[str] = field(default_factory=set)  # file names the app cited to this chat
    codes: set[str] = field(default_factory=set)  # code words shown to this chat
    errors: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and self.total is not None


def cited_files(text: str) -> set[str]:
    """Attachment names the app showed: source elements, the "Sources:" line, the Search step list.

    Matched anywhere in the text rather than parsed out of one citation format, so a change in how
    citations are written cannot hide a leak.
    """
    return set(ATTACHMENT_NAME.findall(text))


class Chat:
    """One browser tab's worth of protocol, without the browser."""

    def __init__(
        self, url: str, cookie: str, attachment: Attachment, profile: str | None, timeout: float
    ) -> None:
        self.url, self.cookie, self.profile, self.timeout = url, cookie, profile, timeout
        self.result = ChatResult(attachment.chat, attachment)
        self.session_id = str(uuid.uuid4())
        self.sio = socketio.AsyncClient(reconnection=False)
        self.sio.on("*", self.on_event)
        self.sio.on("disconnect", self.on_disconnect)
        self.sent_at: float | None = None
        self.started = False  # task_start of our message seen
        self.reply_id: str | None = None
        self.done = asyncio.Event()
        self.ready = asyncio.Event()  # uploaded, or failed before asking
        self.closing = False
        self.texts: list[str] = []  # everything the app showed after the question

    def elapsed(self) -> float:
        assert self.sent_at is not None
        return time.perf_counter() - self.sent_at

    async def on_disconnect(self, *args: Any) -> None:
        if not self.done.is_set() and not self.closing:
            self.result.errors.append("disconnected before the answer ended")
            self.done.set()

    async def on_event(self, event: str, data: Any = None) -> None:
        if self.sent_at is None:
            return
        result = self.result
        if event == "task_start":
            self.started = True
        elif event == "task_end" and self.started:
            result.total = self.elapsed()
            self.done.set()
        elif event in ("stream_start", "new_message", "update_message") and isinstance(data, dict):
            kind, output = data.get("type"), str(data.get("output") or "")
            if kind == "user_message":
                return
            self.texts.append(output)
            if data.get("isError") or (kind == "assistant_message" and output.startswith("⚠️")):
                result.errors.append(f"message: {output[:200]}")
            if kind == "retrieval" and event == "update_message" and data.get("end"):
                result.search = result.search or self.elapsed()
            if kind == "assistant_message" and event == "stream_start" and result.ttft is None:
                result.ttft, self.reply_id = self.elapsed(), data.get("id")
            if kind == "assistant_message" and data.get("id") == self.reply_id:
                result.answer = output
        elif event == "stream_token" and isinstance(data, dict) and data.get("id") == self.reply_id:
            result.answer += str(data.get("token") or "")
        elif event == "element" and isinstance(data, dict):
            self.texts.append(f"{data.get('name', '')}\n{data.get('content') or ''}")

    async def run(self, http: httpx.AsyncClient, go: asyncio.Event) -> ChatResult:
        result = self.result
        try:
            await asyncio.wait_for(self._run(http, go), self.timeout)
        except TimeoutError:
            result.errors.append(f"timed out after {self.timeout:.0f} s")
        except Exception as error:  # noqa: BLE001 - one chat's failure is a result, not a crash
            result.errors.append(f"{type(error).__name__}: {error}"[:300])
        finally:
            self.ready.set()
            await self.close()
        self.judge()
        return result

    async def _run(self, http: httpx.AsyncClient, go: asyncio.Event) -> None:
        attachment = self.result.attachment
        await self.sio.connect(
            self.url,
            headers={"Cookie": self.cookie},
            auth={
                "sessionId": self.session_id,
                "clientType": "webapp",
                "chatProfile": self.profile,
                "threadId": None,
                "userEnv": "{}",
            },
            transports=["websocket"],
            socketio_path="/ws/socket.io",
            wait_timeout=30,
        )
        await self.sio.emit("connection_successful")
        upload = await http.post(
            f"{self.url}/project/file",
            params={"session_id": self.session_id},
            files={"file": (attachment.name, attachment.data, attachment.mime)},
            headers={"Cookie": self.cookie},
        )
        if upload.status_code != 200:
            raise RuntimeError(f"upload refused: HTTP {upload.status_code} {upload.text[:200]}")
        file_id = upload.json()["id"]
        self.ready.set()
        await go.wait()  # every chat is connected and has uploaded: ask all at once
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        message = {
            "id": str(uuid.uuid4()),
            "threadId": "",
            "name": "User",
            "type": "user_message",
            "output": question(attachment.chat),
            "createdAt": now,
        }
        self.sent_at = time.perf_counter()
        await self.sio.emit(
            "client_message", {"message": message, "fileReferences": [{"id": file_id}]}
        )
        await self.done.wait()

    async def close(self) -> None:
        self.closing = True
        if self.sio.connected:
            try:
                await self.sio.emit("clear_session")  # the app deletes the uploaded copy
                await asyncio.wait_for(self.sio.disconnect(), 10)
            except Exception:  # noqa: BLE001 - closing is best effort
                pass

    def judge(self) -> None:
        result = self.result
        if result.total is not None and result.ttft is None and not result.errors:
            result.errors.append("the answer ended without any token")
        for text in self.texts:
            result.cited |= cited_files(text)
            result.codes |= set(CODE_WORD.findall(text))


def judge_leaks(results: list[ChatResult], others: dict[str, Attachment]) -> None:
    """A chat shown a file name or a code word of any other chat's attachment has a leak."""
    names = {a.name: a for a in others.values()}
    codes = {a.code: a for a in others.values()}
    for result in results:
        own = result.attachment
        for name in sorted(result.cited):
            if name in names and name != own.name:
                result.leaks.append(f"cites {name} (chat {names[name].chat})")
        for code in sorted(result.codes):
            if code in codes and code != own.code:
                result.leaks.append(f"shows {code} (chat {codes[code].chat})")


# --- the run -----------------------------------------------------------------------------------


async def login(http: httpx.AsyncClient, url: str, user: str | None, password: str | None) -> str:
    if user:
        response = await http.post(f"{url}/login", data={"username": user, "password": password})
    else:
        response = await http.post(f"{url}/auth/header")
    if response.status_code != 200:
        raise SystemExit(f"login failed: HTTP {response.status_code} {response.text[:200]}")
    cookies = [f"{k}={v}" for k, v in response.cookies.items() if k.startswith("access_token")]
    if not cookies:
        raise SystemExit("login answered without an access_token cookie")
    http.cookies.clear()  # sent explicitly per request, as the browser would
    return "; ".join(cookies)


async def run_chats(
    url: str, cookie: str, attachments: list[Attachment], args: argparse.Namespace
) -> list[ChatResult]:
    limits = httpx.Limits(max_connections=len(attachments) + 4)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        go = asyncio.Event()
        chats = [Chat(url, cookie, a, args.profile, args.timeout) for a in attachments]
        tasks = [asyncio.create_task(chat.run(http, go)) for chat in chats]

        async def release() -> None:
            # Ask together once every chat has uploaded (or failed to), at most 60 s from now.
            waits = [asyncio.create_task(chat.ready.wait()) for chat in chats]
            await asyncio.wait(waits, timeout=60)
            for wait in waits:
                wait.cancel()
            go.set()

        releaser = asyncio.create_task(release())
        results = list(await asyncio.gather(*tasks))
        await releaser
        return results


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def line(label: str, values: list[float], total: int) -> str:
    if not values:
        return f"{label:<22} n=0/{total}"
    return (
        f"{label:<22} n={len(values)}/{total}  p50 {percentile(values, 50):6.2f} s  "
        f"p95 {percentile(values, 95):6.2f} s  max {max(values):6.2f} s"
    )


def report(
    results: list[ChatResult], wall: float, app: App | None, warm: ChatResult | None, args: Any
) -> int:
    n = len(results)
    errors = [(r.chat, e) for r in results for e in r.errors]
    leaks = [(r.chat, leak) for r in results for leak in r.leaks]
    if warm is not None:
        leaks += [(0, leak) for leak in warm.leaks]
    own_cited = sum(1 for r in results if r.attachment.name in r.cited)
    own_code = sum(1 for r in results if r.attachment.code in r.answer)
    print(
        f"chat load: {n} concurrent chats, one attachment each ({args.format}), "
        f"max_new_tokens={args.max_new_tokens if app else 'app default'}"
    )
    if warm is not None:
        warm_state = f"{warm.total:.2f} s" if warm.total is not None else "FAILED"
        print(f"warm-up chat (untimed, its attachment stays in the index): {warm_state}")
    print(line("first token", [r.ttft for r in results if r.ttft is not None], n))
    print(line("full answer", [r.total for r in results if r.ok], n))
    print(line("search step done", [r.search for r in results if r.search is not None], n))
    print(f"wall time for the {n} chats: {wall:.1f} s")
    print(f"errors: {len(errors)}")
    for chat, error in errors:
        print(f"  chat {chat}: {error}")
    cites = sum(1 for _, leak in leaks if leak.startswith("cites"))
    print(
        f"cross-chat leaks: {len(leaks)} (goal 0): {cites} citations of another chat's "
        f"attachment, {len(leaks) - cites} code words of another chat shown"
    )
    for chat, leak in leaks:
        print(f"  chat {chat}: {leak}")
    print(
        f"answers citing their own attachment: {own_cited}/{n}; "
        f"answers containing their own code word: {own_code}/{n}"
    )
    if app is not None:
        status = app.status()
        if status:
            print(
                f"app peak RSS (VmHWM): {status['VmHWM'] / 1024:.0f} MB "
                f"(VmRSS now {status['VmRSS'] / 1024:.0f} MB)"
            )
        else:
            print("app peak RSS: unavailable (the process is gone)")
    else:
        print("app peak RSS: not measured (--url: the bench did not start the app)")
    if args.verbose:
        for r in ([warm] if warm is not None else []) + results:
            print(
                f"  chat {r.chat:2d}: ttft {r.ttft} total {r.total} cited {sorted(r.cited)} "
                f"answer {r.answer[:120]!r}"
            )
    return 1 if errors or leaks else 0


async def bench(args: argparse.Namespace, url: str, app: App | None, folder: Path) -> int:
    async with httpx.AsyncClient(timeout=30) as http:
        cookie = await login(http, url, args.user, args.password)
        health = (await http.get(f"{url}/healthz")).json()
    say(f"app: {health.get('backend')} {health.get('model')}, index {health.get('index')}")
    everyone: dict[str, Attachment] = {}
    warm = None
    if not args.no_warm_up:
        say("warm-up chat (untimed): loads the models and the keyword index")
        warm_attachment = make_attachment(0, args.format, folder)
        everyone[warm_attachment.name] = warm_attachment
        warm = (await run_chats(url, cookie, [warm_attachment], args))[0]
        if not warm.ok:
            say(f"warm-up chat failed: {warm.errors}")
    attachments = [make_attachment(chat, args.format, folder) for chat in range(1, args.chats + 1)]
    everyone |= {a.name: a for a in attachments}
    say(f"{args.chats} chats: connect, upload, then all ask at once")
    started = time.perf_counter()
    results = await run_chats(url, cookie, attachments, args)
    wall = time.perf_counter() - started
    judge_leaks(results + ([warm] if warm else []), everyone)
    return report(results, wall, app, warm, args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chats", type=int, default=20, help="concurrent chats (20)")
    parser.add_argument(
        "--url", help="use this running app (127.0.0.1 only) instead of starting one"
    )
    parser.add_argument("--max-new-tokens", type=int, default=32, help="for the app started (32)")
    parser.add_argument(
        "--format",
        choices=["mixed", "txt", "pdf"],
        default="mixed",
        help="attachment type: mixed = PDF for even chats, .txt for odd (mixed)",
    )
    parser.add_argument("--profile", default=None, help="chat profile (the app's default)")
    parser.add_argument("--timeout", type=float, default=480.0, help="per chat, seconds (480)")
    parser.add_argument("--user", help="login name, when the app has RAG_AUTH_USERS")
    parser.add_argument("--password", default="", help="login password")
    parser.add_argument(
        "--models-cache",
        type=Path,
        default=None,
        help="folder with (or to receive) the converted embedded model; "
        "default ./storage/models if it exists",
    )
    parser.add_argument("--no-warm-up", action="store_true", help="skip the untimed first chat")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (log, storage)")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per chat")
    args = parser.parse_args(argv)
    if args.chats < 1:
        parser.error("--chats must be at least 1")

    work = Path(tempfile.mkdtemp(prefix="rag-chat-load-"))
    app = None
    started = time.perf_counter()
    try:
        if args.url:
            url = check_local(args.url)
        else:
            prepare_models(work / "storage", models_cache(args.models_cache))
            app = App(work, args.max_new_tokens)
            say(f"starting the app on {app.url} (log: {app.log})")
            app.start()
            url = app.url
        code = asyncio.run(bench(args, url, app, work))
        say(f"done in {time.perf_counter() - started:.0f} s")
        return code
    finally:
        if app is not None:
            app.stop()
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
