"""Chat load benchmark: N concurrent chats over Chainlit's socket.io, each with its own attachment.

    .venv/bin/python bench/chat_load.py [--chats 20] [--url http://127.0.0.1:8000]
                                        [--max-new-tokens 32] [--format mixed|txt|pdf]
                                        [--timeout 480] [--models-cache DIR] [--keep]
                                        [--duration SECONDS [--think 3] [--seed 7] [--json]]

Without --url it starts the real app (`chainlit run app.py --headless`, testkit.app as the tests
start it) on a free 127.0.0.1 port with its own temp storage and an empty data folder, the embedded LLM
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

With --duration the run is a soak: after their first answer the chats go on until the time is
up (the answer in flight is waited for), each turn after a pause of up to --think seconds: mostly a
follow-up question (condensed with the chat's history), sometimes the same file attached again
(indexed once), one more file with a new code word (up to 4 per chat), or the tab closed and a new
chat opened with its own attachment. The app's VmRSS is sampled every --sample-every seconds.
Reported beside their goals: errors, leaks (over every attachment of the run), chats without an
answer, the RSS at the start, after warm-up (the moment every chat has its first answer: models,
keyword index and the first sessions are in memory), at the end (all chats closed), its peak, and
the growth after warm-up, also per answered question. --json prints all of it as one object (the
tests read it).

Traffic goes to 127.0.0.1 only; every wait is bounded (--timeout per chat, or per question in a
soak; 180 s for start-up).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import re
import sys
import tempfile
import textwrap
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import socketio
from common import add_models_cache_flag, finish_with, goals_table, models_cache, say, verdict

from testkit.app import LOCAL_HOSTS, ChatServer
from testkit.chainlit import login, user_message
from testkit.pdf import pdf_bytes

ROOT = Path(__file__).resolve().parents[1]
CODE_WORD = re.compile(r"\bKX-\d{4}\b")
ATTACHMENT_NAME = re.compile(r"\bloadtest-chat-\d{2,}(?:-\d{3,})?\.(?:pdf|txt)\b")
FILLER = (
    "This note belongs to a load test of the document chat. It describes a fictional storage "
    "room with shelves of archive boxes, a ledger of deliveries, and the opening hours of the "
    "front desk, which are nine to five on weekdays. Visitors sign the ledger on arrival and "
    "return their badges when they leave. The room is kept cool and dry."
)


# --- the attachments ---------------------------------------------------------------------------


def code_word(serial: int) -> str:
    """The code word of attachment `serial` (a chat's first attachment has the chat's number)."""
    return f"KX-{1000 + serial:04d}"


def attachment_text(chat: int, serial: int | None = None) -> str:
    code = code_word(chat if serial is None else serial)
    return f"Chat {chat} code is {code}. {FILLER} Remember: the code of chat {chat} is {code}."


def question(chat: int) -> str:
    return f"What is the code of chat {chat}?"


@dataclass(frozen=True)
class Attachment:
    chat: int
    name: str
    mime: str
    data: bytes
    serial: int | None = None  # unique in a run; None: the chat's first one, numbered as the chat

    @property
    def code(self) -> str:
        return code_word(self.chat if self.serial is None else self.serial)


def make_attachment(chat: int, kind: str, folder: Path, serial: int | None = None) -> Attachment:
    """Chat `chat`'s attachment: its first (serial None) or a later one with its own code word."""
    if kind == "mixed":
        kind = "pdf" if (chat if serial is None else serial) % 2 == 0 else "txt"
    text = attachment_text(chat, serial)
    stem = f"loadtest-chat-{chat:02d}" + ("" if serial is None else f"-{serial:03d}")
    if kind == "pdf":
        name, mime, data = f"{stem}.pdf", "application/pdf", pdf_bytes([textwrap.fill(text, 80)])
    else:
        name, mime, data = f"{stem}.txt", "text/plain", text.encode()
    (folder / name).write_bytes(data)  # kept with --keep, for a look at what was sent
    return Attachment(chat, name, mime, data, serial)


# --- the app -----------------------------------------------------------------------------------


def check_local(url: str) -> str:
    host = urlparse(url).hostname or ""
    if host not in LOCAL_HOSTS:
        raise SystemExit(f"--url must point at this machine (127.0.0.1/localhost), not {host!r}")
    return url.rstrip("/")


def prepare_models(storage: Path, cache: Path | None) -> None:
    """storage/models is `cache` when given, so the embedder's ONNX graph is built once for every
    run (the embedded LLM is read from its package as it is: nothing to prepare)."""
    storage.mkdir(parents=True, exist_ok=True)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        (storage / "models").symlink_to(cache, target_is_directory=True)


# --- one chat ----------------------------------------------------------------------------------


@dataclass
class Turn:
    """One question and its answer."""

    question: str
    ttft: float | None = None  # seconds from sending the question
    search: float | None = None  # end of the Search step
    total: float | None = None  # task_end: the handler is done
    answer: str = ""


@dataclass
class ChatResult:
    chat: int
    attachment: Attachment  # the chat's first attachment
    own: list[Attachment] = field(default_factory=list)  # every attachment this chat sent
    turns: list[Turn] = field(default_factory=list)
    cited: set[str] = field(default_factory=set)  # file names the app cited to this chat
    codes: set[str] = field(default_factory=set)  # code words shown to this chat
    errors: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)

    @property
    def first(self) -> Turn:
        return self.turns[0] if self.turns else Turn("")

    @property
    def ttft(self) -> float | None:
        return self.first.ttft

    @property
    def search(self) -> float | None:
        return self.first.search

    @property
    def total(self) -> float | None:
        return self.first.total

    @property
    def answer(self) -> str:
        return self.first.answer

    @property
    def answered(self) -> int:
        return sum(1 for turn in self.turns if turn.total is not None)

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
    """One browser tab's worth of protocol, without the browser: connect, upload, ask, ask..."""

    def __init__(
        self, url: str, cookie: str, attachment: Attachment, profile: str | None, timeout: float
    ) -> None:
        self.url, self.cookie, self.profile, self.timeout = url, cookie, profile, timeout
        self.result = ChatResult(attachment.chat, attachment)
        self.session_id = str(uuid.uuid4())
        self.sio = socketio.AsyncClient(reconnection=False)
        self.sio.on("*", self.on_event)
        self.sio.on("disconnect", self.on_disconnect)
        self.turn: Turn | None = None  # the question being answered
        self.sent_at: float | None = None
        self.started = False  # task_start of our message seen
        self.reply_id: str | None = None
        self.done = asyncio.Event()
        self.ready = asyncio.Event()  # uploaded, or failed before asking
        self.closing = False
        self.texts: list[str] = []  # everything the app showed after a question

    def elapsed(self) -> float:
        assert self.sent_at is not None
        return time.perf_counter() - self.sent_at

    async def on_disconnect(self, *args: Any) -> None:
        if not self.closing:
            self.result.errors.append("disconnected by the app")
            self.done.set()

    async def on_event(self, event: str, data: Any = None) -> None:
        turn = self.turn
        if turn is None or self.done.is_set():
            return
        if event == "task_start":
            self.started = True
        elif event == "task_end" and self.started:
            turn.total = self.elapsed()
            self.done.set()
        elif event in ("stream_start", "new_message", "update_message") and isinstance(data, dict):
            kind, output = data.get("type"), str(data.get("output") or "")
            if kind == "user_message":
                return
            self.texts.append(output)
            if data.get("isError") or (kind == "assistant_message" and output.startswith("⚠️")):
                self.result.errors.append(f"message: {output[:200]}")
            if kind == "retrieval" and event == "update_message" and data.get("end"):
                turn.search = turn.search or self.elapsed()
            if kind == "assistant_message" and event == "stream_start" and turn.ttft is None:
                turn.ttft, self.reply_id = self.elapsed(), data.get("id")
            if kind == "assistant_message" and data.get("id") == self.reply_id:
                turn.answer = output
        elif event == "stream_token" and isinstance(data, dict) and data.get("id") == self.reply_id:
            turn.answer += str(data.get("token") or "")
        elif event == "element" and isinstance(data, dict):
            self.texts.append(f"{data.get('name', '')}\n{data.get('content') or ''}")

    async def run(self, http: httpx.AsyncClient, go: asyncio.Event) -> ChatResult:
        """The one-shot chat: connect, upload, wait for `go`, ask once, close."""
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
        await self.connect()
        file_id = await self.upload(http, attachment)
        self.ready.set()
        await go.wait()  # every chat is connected and has uploaded: ask all at once
        await self.ask(question(attachment.chat), [file_id])

    async def connect(self) -> None:
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

    async def upload(self, http: httpx.AsyncClient, attachment: Attachment) -> str:
        """Upload a file into this chat's session, as the paper clip does; returns its id."""
        upload = await http.post(
            f"{self.url}/project/file",
            params={"session_id": self.session_id},
            files={"file": (attachment.name, attachment.data, attachment.mime)},
            headers={"Cookie": self.cookie},
        )
        if upload.status_code != 200:
            raise RuntimeError(f"upload refused: HTTP {upload.status_code} {upload.text[:200]}")
        if attachment not in self.result.own:
            self.result.own.append(attachment)
        return str(upload.json()["id"])

    async def ask(self, text: str, file_ids: list[str] | None = None) -> Turn:
        """Send one message (with uploaded files) and wait until its handler is done."""
        turn = Turn(text)
        self.result.turns.append(turn)
        self.turn, self.started, self.reply_id = turn, False, None
        self.done = asyncio.Event()
        message = user_message(text)
        self.sent_at = time.perf_counter()
        references = [{"id": file_id} for file_id in file_ids or []]
        await self.sio.emit("client_message", {"message": message, "fileReferences": references})
        await self.done.wait()
        if turn.total is not None and turn.ttft is None and not self.result.errors:
            self.result.errors.append(f"the answer to {text!r} ended without any token")
        return turn

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
        for text in self.texts:
            result.cited |= cited_files(text)
            result.codes |= set(CODE_WORD.findall(text))


def judge_leaks(results: list[ChatResult], everyone: dict[str, Attachment]) -> None:
    """A chat shown a file name or a code word of any other chat's attachment has a leak."""
    names = {a.name: a for a in everyone.values()}
    codes = {a.code: a for a in everyone.values()}
    for result in results:
        own = result.own or [result.attachment]
        own_names, own_codes = {a.name for a in own}, {a.code for a in own}
        for name in sorted(result.cited):
            if name in names and name not in own_names:
                result.leaks.append(f"cites {name} (chat {names[name].chat})")
        for code in sorted(result.codes):
            if code in codes and code not in own_codes:
                result.leaks.append(f"shows {code} (chat {codes[code].chat})")


# --- the run -----------------------------------------------------------------------------------


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
    results: list[ChatResult],
    wall: float,
    app: ChatServer | None,
    warm: ChatResult | None,
    args: Any,
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


# --- the soak ----------------------------------------------------------------------------------

# What a chat does after its first answer, until the time is up (the rest: a follow-up question).
P_NEW_CHAT = 0.10  # close the tab and open a new chat, with a new attachment of its own
P_REATTACH = 0.15  # attach the same file again: indexed once, "already indexed in this chat"
P_NEW_FILE = 0.15  # attach one more file, with a new code word
MAX_FILES_PER_CHAT = 4
FOLLOW_UPS = (
    "Can you repeat that code?",
    "Which file says so?",
    "What are the opening hours of the front desk?",
    "What do visitors do when they arrive?",
)
# RSS growth after warm-up the soak must stay under. Measured with 20 chats for 300 s on 2 cores:
# +15 MB over 28 answers, samples swinging by ~65 MB around that (generation buffers, GC).
GOAL_GROWTH_MB = 150.0


@dataclass
class Sample:
    seconds: float  # since the chats started asking
    rss_mb: float  # VmRSS of the app process
    answered: int  # questions answered so far, over all chats


@dataclass
class Soak:
    """What the chats of a soak share: the clock, numbering, every attachment given out, RSS."""

    args: argparse.Namespace
    app: ChatServer | None
    folder: Path
    started: float = 0.0
    everyone: dict[str, Attachment] = field(default_factory=dict)
    results: list[ChatResult] = field(default_factory=list)
    next_chat: int = 0
    next_serial: int = 0
    answered: int = 0
    uploaded: int = 0  # chats ready to ask their first question (or failed before)
    first_round: int = 0  # chats whose first question is over
    reattached: int = 0
    new_files: int = 0
    warm: Sample | None = None  # when every chat had its first answer
    samples: list[Sample] = field(default_factory=list)

    @property
    def deadline(self) -> float:
        return self.started + self.args.duration

    def time_left(self) -> bool:
        return time.perf_counter() < self.deadline

    def sample(self) -> Sample | None:
        status = self.app.status() if self.app else {}
        if "VmRSS" not in status:
            return None
        seconds = time.perf_counter() - self.started
        sample = Sample(round(seconds, 1), status["VmRSS"] / 1024, self.answered)
        self.samples.append(sample)
        return sample

    def attachment(self, chat: int, first: bool) -> Attachment:
        serial = None
        if not first:
            self.next_serial += 1
            serial = self.next_serial
        attachment = make_attachment(chat, self.args.format, self.folder, serial)
        self.everyone[attachment.name] = attachment
        return attachment

    def new_chat(self, url: str, cookie: str, number: int | None = None) -> Chat:
        if number is None:
            self.next_chat += 1
            number = self.next_chat
        attachment = self.attachment(number, first=True)
        chat = Chat(url, cookie, attachment, self.args.profile, self.args.timeout)
        self.results.append(chat.result)
        return chat

    async def ask(self, chat: Chat, text: str, file_ids: list[str] | None = None) -> bool:
        """One question, bounded by --timeout; False once this chat has an error."""
        try:
            turn = await asyncio.wait_for(chat.ask(text, file_ids), self.args.timeout)
        except TimeoutError:
            chat.result.errors.append(f"{text!r}: no answer within {self.args.timeout:.0f} s")
            return False
        if turn.total is not None:
            self.answered += 1
        return not chat.result.errors


async def soak_chat(
    soak: Soak, slot: int, url: str, cookie: str, http: httpx.AsyncClient, go: asyncio.Event
) -> Chat:
    """One tab: the first question with its attachment at `go`, then follow-ups, re-attached and
    new files, and sometimes a new chat, until the time is up (the last answer is waited for)."""
    rng = random.Random(f"{soak.args.seed}-{slot}")
    chat = soak.new_chat(url, cookie, number=slot)
    attachment = chat.result.attachment
    first_done = False
    try:
        await asyncio.wait_for(chat.connect(), 60)
        file_id = await chat.upload(http, attachment)
        soak.uploaded += 1
        await go.wait()
        ok = await soak.ask(chat, question(attachment.chat), [file_id])
        first_done = True
        soak.first_round += 1
        if soak.first_round == soak.args.chats:
            soak.warm = soak.sample()
        while ok and (soak.time_left() or chat.result.answered < soak.args.min_answers):
            await asyncio.sleep(rng.uniform(0, soak.args.think))
            if not soak.time_left() and chat.result.answered >= soak.args.min_answers:
                break
            roll = rng.random() if soak.time_left() else 1.0  # overtime: follow-ups only
            number = chat.result.chat
            if roll < P_NEW_CHAT:
                await chat.close()
                chat.judge()
                chat = soak.new_chat(url, cookie)
                attachment = chat.result.attachment
                await asyncio.wait_for(chat.connect(), 60)
                file_id = await chat.upload(http, attachment)
                ok = await soak.ask(chat, question(attachment.chat), [file_id])
            elif roll < P_NEW_CHAT + P_REATTACH:
                soak.reattached += 1
                file_id = await chat.upload(http, attachment)
                ok = await soak.ask(chat, question(number), [file_id])
            elif roll < P_NEW_CHAT + P_REATTACH + P_NEW_FILE and (
                len(chat.result.own) < MAX_FILES_PER_CHAT
            ):
                soak.new_files += 1
                attachment = soak.attachment(number, first=False)
                file_id = await chat.upload(http, attachment)
                ok = await soak.ask(chat, question(number), [file_id])
            else:
                ok = await soak.ask(chat, rng.choice(FOLLOW_UPS))
    except Exception as error:  # noqa: BLE001 - one chat's failure is a result, not a crash
        chat.result.errors.append(f"{type(error).__name__}: {error}"[:300])
    finally:
        if not go.is_set():
            soak.uploaded += 1
        if not first_done:
            soak.first_round += 1
            if soak.first_round == soak.args.chats:
                soak.warm = soak.sample()
        await chat.close()
        chat.judge()
    return chat


async def run_soak(url: str, cookie: str, soak: Soak) -> None:
    """All chats connect and upload, ask at once, and go on until --duration is over."""
    args = soak.args
    soak.next_chat = args.chats  # later chats are numbered after the first ones
    soak.next_serial = 100 + args.chats  # later attachments' code words, apart from the chats'
    limits = httpx.Limits(max_connections=args.chats + 4)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        go = asyncio.Event()
        tasks = [
            asyncio.create_task(soak_chat(soak, slot, url, cookie, http, go))
            for slot in range(1, args.chats + 1)
        ]
        # Ask together once every chat has uploaded (or failed to), at most 60 s from now.
        deadline = time.perf_counter() + 60
        while time.perf_counter() < deadline and soak.uploaded < args.chats:
            await asyncio.sleep(0.1)
        soak.started = time.perf_counter()
        soak.sample()
        go.set()

        async def sampler() -> None:
            every_minute = max(1, round(60 / args.sample_every))
            while True:
                await asyncio.sleep(args.sample_every)
                last = soak.sample()
                if last is not None and len(soak.samples) % every_minute == 0:
                    say(f"{last.seconds:.0f} s: {last.answered} answers, RSS {last.rss_mb:.0f} MB")

        sampling = asyncio.create_task(sampler())
        await asyncio.gather(*tasks)
        sampling.cancel()
    await asyncio.sleep(2)  # the app lets go of the closed sessions
    soak.sample()


def soak_summary(soak: Soak) -> dict[str, Any]:
    """Everything the soak measured, as plain data (printed, or --json for the tests)."""
    results = soak.results
    judge_leaks(results, soak.everyone)
    turns = [turn for result in results for turn in result.turns]
    totals = [turn.total for turn in turns if turn.total is not None]
    ttfts = [turn.ttft for turn in turns if turn.ttft is not None]
    first = soak.samples[0] if soak.samples else None
    end = soak.samples[-1] if soak.samples else None
    warm = soak.warm
    peak = soak.app.status().get("VmHWM") if soak.app else None
    summary: dict[str, Any] = {
        "chats": soak.args.chats,
        "duration_s": soak.args.duration,
        "max_new_tokens": soak.args.max_new_tokens,
        "goal_growth_mb": GOAL_GROWTH_MB,
        "sessions": len(results),
        "answered": len(totals),
        "answered_per_chat": {str(r.chat): r.answered for r in results},
        "reattached": soak.reattached,
        "new_files": soak.new_files,
        "attachments": len(soak.everyone),
        "full_answer_s": quantiles(totals),
        "first_token_s": quantiles(ttfts),
        "errors": [f"chat {r.chat}: {error}" for r in results for error in r.errors],
        "leaks": [f"chat {r.chat}: {leak}" for r in results for leak in r.leaks],
        "own_code_answers": sum(
            1 for r in results for t in r.turns if any(a.code in t.answer for a in r.own)
        ),
        "rss_samples": [[s.seconds, round(s.rss_mb, 1), s.answered] for s in soak.samples],
        "rss_start_mb": round(first.rss_mb, 1) if first else None,
        "rss_warm_mb": round(warm.rss_mb, 1) if warm else None,
        "warm_at_s": warm.seconds if warm else None,
        "rss_end_mb": round(end.rss_mb, 1) if end else None,
        "rss_peak_mb": round(peak / 1024, 1) if peak else None,
    }
    if warm and end:
        after = max(end.answered - warm.answered, 0)
        growth = end.rss_mb - warm.rss_mb
        later = [s.rss_mb for s in soak.samples if s.seconds >= warm.seconds]
        summary |= {
            "answered_after_warm": after,
            "growth_mb": round(growth, 1),
            "growth_per_answer_kb": round(growth * 1024 / after, 1) if after else None,
            "max_after_warm_mb": round(max(later), 1),
        }
    return summary


def quantiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "p50": round(percentile(values, 50), 2),
        "p95": round(percentile(values, 95), 2),
        "max": round(max(values), 2),
    }


def soak_report(summary: dict[str, Any]) -> int:
    """The soak's numbers, each beside its goal, as the other benches print them."""

    def spread(q: dict[str, float] | None) -> str:
        return f"p50 {q['p50']:.1f} s, p95 {q['p95']:.1f} s, max {q['max']:.1f} s" if q else "-"

    answered = summary["answered"]
    counts = sorted(summary["answered_per_chat"].values())
    print(
        f"chat soak: {summary['chats']} concurrent chats for {summary['duration_s']:.0f} s, "
        f"max_new_tokens={summary['max_new_tokens']}: {summary['sessions']} chats in all "
        f"({summary['sessions'] - summary['chats']} opened later), {summary['attachments']} "
        f"attachments ({summary['new_files']} added later, {summary['reattached']} re-attached)"
    )
    print(
        f"answers: {answered} (per chat min {counts[0] if counts else 0}, "
        f"median {counts[len(counts) // 2] if counts else 0}, max {counts[-1] if counts else 0}); "
        f"full answer {spread(summary['full_answer_s'])}; "
        f"first token {spread(summary['first_token_s'])}"
    )
    growth = summary.get("growth_mb")
    rows = [
        ("errors", str(len(summary["errors"])), "0", verdict(not summary["errors"])),
        ("cross-chat leaks", str(len(summary["leaks"])), "0", verdict(not summary["leaks"])),
        (
            "chats that got answers",
            f"{sum(1 for n in counts if n)}/{len(counts)}",
            "all",
            verdict(all(counts)),
        ),
    ]
    if summary["rss_warm_mb"] is not None:
        rows += [
            ("RSS at the start (models loaded)", f"{summary['rss_start_mb']:.0f} MB", "-", ""),
            (
                "RSS after warm-up",
                f"{summary['rss_warm_mb']:.0f} MB (every chat answered once, "
                f"{summary['warm_at_s']:.0f} s)",
                "-",
                "",
            ),
            ("RSS at the end (chats closed)", f"{summary['rss_end_mb']:.0f} MB", "-", ""),
            ("peak RSS (VmHWM)", f"{summary['rss_peak_mb']:.0f} MB", "-", ""),
        ]
    if growth is not None:
        per = summary["growth_per_answer_kb"]
        rows += [
            (
                "RSS growth after warm-up",
                f"{growth:+.0f} MB over {summary['answered_after_warm']} answers "
                f"({'-' if per is None else f'{per:+.0f} kB'} per answer; "
                f"max after warm-up {summary['max_after_warm_mb']:.0f} MB)",
                f"<= {GOAL_GROWTH_MB:.0f} MB",
                verdict(growth <= GOAL_GROWTH_MB),
            )
        ]
    else:
        rows.append(("RSS", "not measured (--url, or no warm-up point)", "-", ""))
    goals_table(rows)
    over_time = summary["rss_samples"]
    step = max(1, len(over_time) // 12)
    shown = over_time[::step] + ([over_time[-1]] if (len(over_time) - 1) % step else [])
    print(
        "RSS over time (s: MB, answers): "
        + ", ".join(f"{s:.0f}: {mb:.0f} ({n})" for s, mb, n in shown)
    )
    for message in summary["errors"] + summary["leaks"]:
        print(f"  {message}")
    ok = not summary["errors"] and not summary["leaks"] and all(counts)
    return 0 if ok and (growth is None or growth <= GOAL_GROWTH_MB) else 1


async def bench(args: argparse.Namespace, url: str, app: ChatServer | None, folder: Path) -> int:
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
    if args.duration:
        soak = Soak(args, app, folder, everyone=everyone, results=[warm] if warm else [])
        await run_soak(url, cookie, soak)
        summary = soak_summary(soak)
        if args.json:
            print(json.dumps(summary))
            return 0
        return soak_report(summary)
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
    add_models_cache_flag(parser)
    parser.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="soak: every chat keeps asking (follow-ups, re-attached and new files, new chats) "
        "for this many seconds, with the app's RSS sampled over time (default: ask once)",
    )
    parser.add_argument(
        "--think", type=float, default=3.0, help="soak: max pause between turns (3)"
    )
    parser.add_argument(
        "--sample-every", type=float, default=2.0, help="soak: seconds between RSS samples (2)"
    )
    parser.add_argument("--seed", type=int, default=7, help="soak: what each chat does next (7)")
    parser.add_argument(
        "--min-answers",
        type=int,
        default=1,
        help="soak: a chat goes on past --duration until it has this many answers (1)",
    )
    parser.add_argument("--json", action="store_true", help="soak: print one JSON object")
    parser.add_argument("--no-warm-up", action="store_true", help="skip the untimed first chat")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (log, storage)")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per chat")
    args = parser.parse_args(argv)
    if args.chats < 1:
        parser.error("--chats must be at least 1")
    if args.json and not args.duration:
        parser.error("--json goes with --duration (the soak)")

    work = Path(tempfile.mkdtemp(prefix="rag-chat-load-"))
    app = None
    started = time.perf_counter()
    try:
        if args.url:
            url = check_local(args.url)
        else:
            prepare_models(work / "storage", models_cache(args.models_cache))
            (work / "data").mkdir(parents=True, exist_ok=True)
            app = ChatServer(work, settings={"RAG_MAX_NEW_TOKENS": str(args.max_new_tokens)})
            say(f"starting the app on {app.url} (log: {app.log})")
            app.start()
            url = app.url
        code = asyncio.run(bench(args, url, app, work))
        say(f"done in {time.perf_counter() - started:.0f} s")
        return code
    finally:
        if app is not None:
            app.stop()
        finish_with(work, args.keep)


if __name__ == "__main__":
    sys.exit(main())
