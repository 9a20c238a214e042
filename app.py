"""Chainlit entry point: thin UI handlers that call into `rag` (run with `chainlit run app.py`)."""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import chainlit as cl
from chainlit.data import get_data_layer
from chainlit.input_widget import Slider

from rag.chat import Attachment, ChatSession, describe_search, history_from_turns
from rag.errors import RagError
from rag.logs import internal_error_line
from rag.retrieve import Source
from rag.server import wire_chat_server
from rag.streaming import AnswerStream
from rag.threads import ThreadStore
from rag.uploads import too_many_files

logger = logging.getLogger("rag.app")
server = wire_chat_server()  # Chainlit's server takes its routes and middleware before it starts
settings, service, users = server.settings, server.service, server.users


@cl.on_app_startup
async def startup() -> None:
    # Answers run in their own bounded threads (rag.streaming); this pool serves Chainlit's file
    # I/O (aiofiles), /healthz and attachments waiting for the write lock. The default (CPUs + 4
    # threads) let a few waiting attachments starve the rest; this bound keeps threads finite.
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=32, thread_name_prefix="app"))
    service.start_sync()  # and, with RAG_WATCH_DATA, the live folder
    loop.run_in_executor(None, service.warm_up)


@cl.on_app_shutdown
async def shutdown() -> None:
    # Stop watching data/; a sync under way is not waited for long (its thread is a daemon, and
    # a sync killed half-way is rolled back at the next start).
    await asyncio.to_thread(service.stop_sync, 5.0)


def profile_icon(name: str) -> str:
    """A local icon (public/NAME.svg, or the general one): never a URL on another host."""
    return f"/public/{name}.svg" if Path(f"public/{name}.svg").is_file() else "/public/general.svg"


@cl.set_chat_profiles
async def chat_profiles(current_user: cl.User | None = None) -> list[cl.ChatProfile]:
    return [
        cl.ChatProfile(
            name=profile.name,
            # With an icon, the description is the welcome text shown above the starters.
            icon=profile_icon(profile.name),
            markdown_description=profile.welcome or profile.description,
            starters=[cl.Starter(label=text, message=text) for text in profile.starters],
            default=profile.name == service.default_profile().name,
        )
        for profile in service.profiles.values()
    ]


if users.enabled:

    @cl.password_auth_callback
    async def login(username: str, password: str) -> cl.User | None:
        # bcrypt is slow on purpose: checked in a thread, the other chats go on meanwhile.
        if not await asyncio.to_thread(users.check, username, password):
            return None
        # The stamp ties the session to this login: see rag.auth.SessionGuard.
        return cl.User(identifier=username, metadata={"login": users.fingerprint(username)})

else:

    @cl.header_auth_callback
    def local_user(headers: Any) -> cl.User:
        # No login configured: everyone on this machine is the one local user, whose threads
        # are listed in the sidebar.
        return cl.User(identifier="local")


@cl.data_layer
def data_layer() -> ThreadStore:
    return server.data_layer()


async def send_settings(session: ChatSession) -> None:
    await cl.ChatSettings(
        [
            Slider(
                id="top_k",
                label="Passages retrieved per question",
                initial=session.top_k or session.profile.top_k,
                min=1,
                max=20,
                step=1,
            ),
            Slider(
                id="temperature",
                label="Temperature (creativity of the answer)",
                initial=session.temperature
                if session.temperature is not None
                else settings.temperature,
                min=0,
                max=1.5,
                step=0.1,
            ),
        ]
    ).send()


def current_session() -> ChatSession:
    session = cl.user_session.get("rag")
    if session is None:
        session = service.session(cl.context.session.thread_id, cl.user_session.get("chat_profile"))
        cl.user_session.set("rag", session)
    return session


@cl.on_chat_start
async def start() -> None:
    session = current_session()
    await send_settings(session)


@cl.on_chat_resume
async def resume(thread: dict[str, Any]) -> None:
    turns = [
        ("user" if step.get("type") == "user_message" else "assistant", step.get("output") or "")
        for step in thread.get("steps", [])
        if step.get("type") in ("user_message", "assistant_message")
    ]
    metadata = thread.get("metadata") or {}
    if isinstance(metadata, str):  # SQLite gives it back as JSON text
        metadata = json.loads(metadata or "{}")
    profile = metadata.get("chat_profile") or cl.user_session.get("chat_profile")
    session = service.session(thread["id"], profile, history_from_turns(turns))
    cl.user_session.set("rag", session)
    await send_settings(session)


@cl.on_settings_update
async def settings_update(values: dict[str, Any]) -> None:
    current_session().update_settings(
        top_k=int(values["top_k"]), temperature=float(values["temperature"])
    )


@cl.on_message
async def on_message(message: cl.Message) -> None:
    session = current_session()
    if not cl.user_session.get("profile_saved"):
        # Saved now, not at disconnect: a resumed chat must find its profile even after a crash.
        layer = get_data_layer()
        if layer is not None:
            await layer.update_thread(
                cl.context.session.thread_id, metadata={"chat_profile": session.profile.name}
            )
        cl.user_session.set("profile_saved", True)
    try:
        attached = await index_attachments(session, message)
        question = await asyncio.to_thread(session.question_for, message.content, attached)
        if question:
            await answer(session, question)
    except RagError as error:
        await cl.Message(content=f"⚠️ {error}").send()
    except Exception as error:  # one readable line in the chat, the traceback in the log
        logger.exception("chat message failed")
        await cl.Message(content=f"⚠️ {internal_error_line(error)}").send()


async def index_attachments(session: ChatSession, message: cl.Message) -> list[Attachment]:
    files = [element for element in message.elements or [] if getattr(element, "path", None)]
    if not files:
        return []
    if len(files) > settings.upload_max_files:
        await cl.Message(content=f"⚠️ {too_many_files(len(files), settings)}").send()
        files = files[: settings.upload_max_files]
    attached = []
    for element in files:
        async with cl.Step(name=f"Indexing {element.name}", type="tool") as step:
            result = await asyncio.to_thread(
                session.attach, Path(element.path), element.name, getattr(element, "size", None)
            )
            step.output = result.message
        if not result.indexed:
            await cl.Message(content=f"⚠️ {result.message}").send()
        attached.append(result)
    return attached


async def answer(session: ChatSession, question: str) -> None:
    stream = AnswerStream(service.answers, lambda: session.ask(question))  # Busy when full
    waiting: cl.Message | None = None

    async def show_place(ahead: int) -> None:
        nonlocal waiting
        text = (
            f"⏳ Waiting for the model: {ahead} answer{'s' if ahead != 1 else ''} ahead of yours."
        )
        if waiting is None:
            waiting = cl.Message(content=text)
            await waiting.send()
        else:
            waiting.content = text
            await waiting.update()

    try:
        async with cl.Step(name="Search", type="retrieval") as step:
            step.input = question
            result = await stream.started(show_place)
            step.output = describe_search(result.findings)
    finally:
        if waiting is not None:
            await waiting.remove()
    note = service.sync_status.note()
    reply = cl.Message(content=f"_{note}_\n\n" if note else "")
    try:
        async for token in stream.tokens():
            await reply.stream_token(token)
    except Exception as error:  # what was streamed stays; the reply says that it stopped
        line = str(error) if isinstance(error, RagError) else internal_error_line(error)
        logger.error("answer stopped: %s", line, exc_info=not isinstance(error, RagError))
        await reply.stream_token(f"\n\n⚠️ _The answer stopped: {line}_")
        await reply.send()
        return
    reply.elements = await asyncio.to_thread(citations, session, result.sources)
    if result.sources:
        names = ", ".join(element.name for element in reply.elements)
        label = "Closest passages" if result.refused else "Sources"
        await reply.stream_token(f"\n\n**{label}:** {names}")
    await reply.send()


def citations(session: ChatSession, sources: list[Source]) -> list[Any]:
    """One element per cited page: a PDF page opens with its quote highlighted, other files show
    the quote above its passage. Names are unique within the message so pages never collide."""
    elements: list[Any] = []
    for number, source in enumerate(sources, 1):
        name = f"[{number}] {source.citation()}"
        excerpt = service.cited_page(session.profile.collection, source)
        if excerpt is not None:
            elements.append(cl.Pdf(name=name, path=str(excerpt), page=1, display="side"))
        else:
            quoted = (
                f"> {' '.join((source.quote or '').split())}\n\n---\n\n" if source.quote else ""
            )
            elements.append(cl.Text(name=name, content=quoted + source.text, display="side"))
    return elements
