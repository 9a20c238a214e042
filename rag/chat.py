"""Chat sessions for any UI: background sync of data/, per-chat attachments, engine, streaming in threads."""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.llms import LLM

from rag.bounded import BoundedFolder
from rag.coach import FIT_QUESTION
from rag.config import Settings
from rag.engine import Answer, ChatEngine
from rag.errors import FileRefused, RagError
from rag.evidence import Findings
from rag.excerpt import page_excerpt
from rag.index import Index
from rag.ingest import IngestReport, Progress
from rag.llm import build_llm, describe_llm
from rag.logs import internal_error_line
from rag.profiles import Profile, active_profiles
from rag.retrieve import Source
from rag.streaming import AnswerQueue
from rag.uploads import check_upload, keep, safe_name

if TYPE_CHECKING:
    from rag.watch import FolderWatcher

logger = logging.getLogger(__name__)

# Seconds before a failed sync of the data folder is tried again (the last repeats).
SYNC_RETRY_S = (10.0, 30.0, 60.0, 120.0, 300.0)


@dataclass
class SyncStatus:
    """Where the background sync of the data folder is."""

    state: str = "waiting"  # waiting | running | done | failed
    files_total: int = 0
    files_done: int = 0
    message: str = ""
    report: IngestReport | None = None
    retry_in_s: float | None = None  # after a failure: when the sync is tried again

    def note(self) -> str | None:
        """A line for users while the sync is not finished, else None."""
        if self.state in ("waiting", "running"):
            return (
                f"Still indexing your documents ({self.files_done}/{self.files_total} files): "
                "this answer uses what is indexed so far."
            )
        if self.state == "failed":
            again = f" (trying again in {self.retry_in_s:g} s)" if self.retry_in_s else ""
            return f"Indexing the data folder failed: {self.message}{again}"
        return None

    def to_json(self) -> dict[str, Any]:
        report = self.report
        return {
            "state": self.state,
            "files_total": self.files_total,
            "files_done": self.files_done,
            "message": self.message,
            "retry_in_s": self.retry_in_s,
            "failed": [str(f) for f in report.failed] if report else [],
        }


CV_NOTE_WORDS = 8  # a CV sent with more words than this, or a question, gets its text answered


@dataclass
class Attachment:
    """The outcome of one attached file."""

    name: str
    indexed: bool
    message: str


class ChatService:
    """What all chats of one app process share: the index, the LLM, the profiles, the sync."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.index = Index(settings)
        # With RAG_TOP_K / RAG_COLLECTION applied, so chat and API follow the same rule as `rag`.
        self.profiles: dict[str, Profile] = active_profiles(settings)
        self.sync_status = SyncStatus()
        self._sync_thread: threading.Thread | None = None
        self._sync_settled = threading.Event()
        self._sync_wanted = threading.Event()  # set: one more sync when the current one ends
        self._sync_stopping = threading.Event()
        self.watcher: FolderWatcher | None = None  # the live data folder (RAG_WATCH_DATA)
        self.sync_retry_s: tuple[float, ...] = SYNC_RETRY_S
        self._llm_lock = threading.Lock()
        self._backend_error = ""  # why the last build of the LLM failed, for /healthz
        self.answers = AnswerQueue(settings.answer_workers, settings.answer_queue)
        self.excerpts = BoundedFolder(
            settings.storage_dir / "excerpts", int(settings.elements_max_mb * 2**20)
        )

    @cached_property
    def llm(self) -> LLM:
        """The LLM, built on first use; a failed build is tried again on the next use."""
        with self._llm_lock:
            try:
                llm = build_llm(self.settings)
            except RagError as error:
                self._backend_error = str(error)
                raise
            self._backend_error = ""
            return llm

    def backend_health(self) -> dict[str, Any]:
        """The LLM backend as /healthz reports it, from what is known: never a network probe."""
        state: dict[str, Any] = {"name": self.settings.llm, "ok": None}  # None: not used yet
        if "llm" in self.__dict__:
            state.update(ok=True, model=describe_llm(self.llm))
        elif self._backend_error:
            state.update(ok=False, reason=self._backend_error)
        return state

    def default_profile(self) -> Profile:
        return self.profiles[self.settings.profile]  # active_profiles checked it exists

    def profile(self, name: str | None) -> Profile:
        return self.profiles.get(name or "") or self.default_profile()

    def warm_up(self) -> None:
        """Load the embedder and the LLM now, so the first question does not pay for it."""
        self.index.embedder.get_query_embedding("warm up")
        warm = getattr(self.llm, "warm_up", None)
        if callable(warm):
            warm()

    # --- background sync of the data folder --------------------------------------------------------

    def start_sync(self) -> None:
        """Sync the data folder into the default profile's collection, in a thread (once); a
        failed sync is tried again, later and later, until it succeeds. With RAG_WATCH_DATA the
        folder is watched too: each settled burst of changes asks that thread for one more sync
        (rag.watch), so two syncs never run at once."""
        if self._sync_thread is not None:
            return
        if self.settings.watch_data:
            from rag.watch import FolderWatcher

            self.watcher = FolderWatcher(
                self.settings.data_dir,
                self.request_sync,
                self.settings.watch_quiet_s,
                exclude=(self.settings.storage_dir,),  # a storage folder inside data/: not news
            )
            self.watcher.start()  # before the first sync: a change during it is not missed
        self._sync_thread = threading.Thread(target=self._sync_loop, name="rag-sync")
        self._sync_thread.daemon = True
        self._sync_thread.start()

    def request_sync(self) -> None:
        """Ask for one more sync of the data folder, after the one under way if any: requests
        made meanwhile all come to that one sync. A failed sync waiting to retry retries now."""
        self._sync_wanted.set()

    def stop_sync(self, timeout: float | None = 10.0) -> None:
        """Stop watching the data folder and syncing it (a sync under way finishes first; the
        thread is a daemon, so this waits at most `timeout`)."""
        self._sync_stopping.set()
        self._sync_wanted.set()
        if self.watcher is not None:
            self.watcher.stop(timeout)
        if self._sync_thread is not None:
            self._sync_thread.join(timeout)

    def wait_for_sync(self, timeout: float | None = None) -> None:
        """Wait until the first sync attempt has ended (done, or failed and waiting to retry)."""
        if self._sync_thread is not None:
            self._sync_settled.wait(timeout)

    def _sync_loop(self) -> None:
        """Sync until a sync succeeds; then, while the folder is watched, once per request."""
        if self.watcher is not None:  # so that a change during the first sync is not missed
            self.watcher.wait_ready(5.0)
        failures = 0
        while not self._sync_stopping.is_set():
            self._sync_wanted.clear()  # a change from now on asks for the next sync
            delay: float | None = None
            if self._sync():
                failures = 0
                if self.watcher is None:
                    return
            else:
                delay = self.sync_retry_s[min(failures, len(self.sync_retry_s) - 1)]
                failures += 1
                self.sync_status.retry_in_s = delay
                self._sync_settled.set()
            self._sync_wanted.wait(delay)

    def _sync(self) -> bool:
        """One sync of the data folder; whether it ended (a file that cannot be read is in the
        report, not a failure of the sync)."""
        status = self.sync_status
        status.state, status.retry_in_s = "running", None
        data = self.settings.data_dir
        if not data.is_dir():
            status.state, status.message = "done", f"no data folder at {data}"
            self._sync_settled.set()
            return True

        def progress(state: Progress) -> None:
            status.files_total, status.files_done = state.files_total, state.files_done

        try:
            status.report = self.index.ingest(
                [data],
                collection=self.default_profile().collection,  # where the chat reads by default
                progress=progress,
                wait_s=self.settings.lock_wait_s,
            )
        except RagError as error:
            status.state, status.message = "failed", str(error)
            logger.error("data folder sync failed: %s", error)
            return False
        except Exception as error:  # a store or HTTP library error: the sync must not die silently
            status.state, status.message = "failed", internal_error_line(error)
            logger.exception("data folder sync failed")
            return False
        status.state, status.message = "done", ""
        report = status.report
        if report.indexed or report.removed:
            logger.info(
                "data folder synced: %d indexed, %d removed, %d unchanged",
                len(report.indexed),
                len(report.removed),
                len(report.unchanged),
            )
        for failure in report.failed:
            logger.warning("data folder: %s", failure)
        self._sync_settled.set()
        return True

    # --- sessions ----------------------------------------------------------------------------------

    def session(
        self,
        chat_id: str,
        profile_name: str | None = None,
        history: list[ChatMessage] | None = None,
    ) -> ChatSession:
        return ChatSession(self, chat_id, self.profile(profile_name), history or [])

    def source_path(self, collection: str, source: Source) -> Path | None:
        """Where the file a source came from lives now (for showing the PDF), if it still does."""
        record = self.index.manifest.get(collection, source.file_id)
        path = Path(record.source) if record else None
        return path if path and path.is_file() else None

    def cited_page(self, collection: str, source: Source) -> Path | None:
        """A one-page PDF of a cited PDF page with its quote highlighted, for showing it; None
        for other files, or when the PDF cannot be read now (the passage is shown instead)."""
        path = self.source_path(collection, source)
        if path is None or path.suffix.lower() != ".pdf" or not source.page:
            return None
        try:
            return page_excerpt(
                path,
                source.page,
                source.quote or "",
                self.excerpts.root,
                lambda made: self.excerpts.added(made.stat().st_size, keep=made),
            )
        except (ValueError, OSError) as error:
            logger.warning("no excerpt of %s, page %s: %s", source.file, source.page, error)
            return None

    def health(self) -> dict[str, Any]:
        """Liveness with details: cheap (the manifest, not the store; no model built or probed),
        and any trouble is reported as data, never raised."""
        index: dict[str, Any] = {"sync": self.sync_status.to_json()}
        try:
            manifest = self.index.manifest
            index["collections"] = {
                name: {
                    "files": len(records := manifest.files(name)),
                    "chunks": sum(record.chunks for record in records),
                }
                for name in manifest.collections()
            }
        except (RagError, sqlite3.Error, OSError) as error:
            logger.warning("health: the manifest cannot be read: %s", error)
            index.update(ok=False, reason=str(error))
        return {
            "status": "ok",
            "backend": self.backend_health(),
            "embedder": self.settings.embed_model,
            "store": self.settings.store_location,
            "index": index,
        }


@dataclass
class ChatSession:
    """One conversation: its profile, memory, attachments (scoped to `chat_id`) and settings."""

    service: ChatService
    chat_id: str
    profile: Profile
    history: list[ChatMessage] = field(default_factory=list)
    top_k: int | None = None
    temperature: float | None = None

    def __post_init__(self) -> None:
        self._engine: ChatEngine | None = None

    @property
    def where(self) -> dict[str, Any]:
        """Shared documents plus this chat's own attachments; never another chat's."""
        return {"chat_id": {"$in": ["", self.chat_id]}}

    def engine(self) -> ChatEngine:
        if self._engine is None:
            llm = self.service.llm
            if self.temperature is not None and hasattr(llm, "temperature"):
                llm = llm.model_copy(update={"temperature": self.temperature})
            self._engine = ChatEngine(
                self.service.index, llm, self.profile, top_k=self.top_k, where=self.where
            )
            for message in self.history:
                self._engine.memory.put(message)
        return self._engine

    def update_settings(self, top_k: int | None = None, temperature: float | None = None) -> None:
        """New retrieval depth or temperature; the conversation so far is kept."""
        history = self._engine.memory.get_all() if self._engine else self.history
        self.top_k, self.temperature = top_k or self.top_k, temperature
        self.history, self._engine = list(history), None

    def ask(self, question: str) -> Answer:
        return self.engine().ask(question)

    def question_for(self, text: str, attached: list[Attachment]) -> str:
        """What a message asks: its text; or, when a CV comes in a job coach's chat (a profile
        whose records are postings) alone or with a few words that ask nothing ("Here is my
        CV"), how it fits the postings."""
        text = text.strip()
        coach = self.profile.records is not None and self.profile.records.kind == "posting"
        if not coach or "?" in text or len(text.split()) > CV_NOTE_WORDS:
            return text
        names = {a.name for a in attached if a.indexed}
        cvs = [
            r
            for r in self.engine().records()
            if r.fields.get("kind") == "cv" and r.chat_id == self.chat_id and r.file in names
        ]
        return FIT_QUESTION if cvs else text

    def attach(self, path: Path, name: str, size: int | None = None) -> Attachment:
        """Index one uploaded file for this chat only; refusals come back as a readable reason."""
        settings = self.service.settings
        name = safe_name(name)
        try:
            check_upload(name, path.stat().st_size if size is None else size, settings)
            # Kept under a name made of its content, in its chat's folder: the user's file name
            # is display only, never part of a path we write.
            chat_folder = hashlib.sha256(self.chat_id.encode()).hexdigest()[:16]
            with self.service.index.storage_faults():  # a full disk says so, as indexing would
                stored = keep(
                    path.read_bytes(), settings.storage_dir / "uploads" / chat_folder, name
                )
            report = self.service.index.attach(
                stored, name, chat_id=self.chat_id, collection=self.profile.collection
            )
        except FileRefused as refused:
            return Attachment(name, False, str(refused))
        except OSError as error:
            return Attachment(name, False, f"{name}: cannot be stored ({error.strerror})")
        except RagError as error:
            return Attachment(name, False, f"{name}: {error}")
        if report.failed:
            return Attachment(name, False, str(report.failed[0]))
        if report.unchanged:
            return Attachment(name, True, f"{name} is already indexed in this chat")
        warnings = f" ({'; '.join(report.warnings)})" if report.warnings else ""
        return Attachment(name, True, f"{name} indexed: {report.chunks_written} passages{warnings}")


def history_from_turns(turns: list[tuple[str, str]]) -> list[ChatMessage]:
    """(role, text) pairs of a saved thread -> chat messages for the memory."""
    roles = {"user": MessageRole.USER, "assistant": MessageRole.ASSISTANT}
    return [ChatMessage(role=roles[r], content=t) for r, t in turns if r in roles and t.strip()]


def describe_search(findings: Findings) -> str:
    """The Search step: what was searched, and the evidence found (or why nothing answers)."""
    lines = [f"Searched for: {findings.question}", ""]
    if findings.answerable:
        lines.append(f"Evidence (confidence {findings.confidence:.2f}):")
        spans = findings.evidence
    else:
        lines.append(f"Nothing answers it ({findings.reason}). Closest passages:")
        spans = findings.closest
    lines += [
        f"{n}. “{e.display()}” ({e.citation()}, score {e.score:.3f})"
        for n, e in enumerate(spans, 1)
    ]
    return (
        "\n".join(lines)
        if spans
        else f"Searched for: {findings.question}\n\nNothing relevant found."
    )
