"""An OpenAI-compatible HTTP API beside the chat UI: chat completions, models, document uploads.

Routes (all under `/v1`, mounted ahead of the UI's catch-all route by `install_api`):

- `POST /v1/chat/completions`: `model` names a profile; the last user message is the question,
  earlier user/assistant turns are the conversation (follow-ups are condensed); system messages
  from the client are ignored, the profile's own prompt rules. `stream: true` answers with
  server-sent `chat.completion.chunk` events and `data: [DONE]`. The answer's sources come as an
  extra top-level field `sources: [{file, page, score, text}]` (in the last chunk when streaming).
- `GET /v1/models` and `GET /v1/models/{id}`: the profiles, as OpenAI model objects.
- `POST /v1/documents`: a multipart upload (field `file`, optional `profile` as query or form
  field) indexed as a document of the profile's collection, owned by the uploading user: every
  question reads it (like data/), only its owner may replace (same name) or delete it.
- `GET /v1/documents`: the caller's own uploads; `DELETE /v1/documents/{id}`: delete one of them.

When logins are configured (RAG_AUTH_USERS), every route needs `Authorization: Bearer USER:PASSWORD`
(so `OpenAI(api_key="alice:secret")` works) or HTTP Basic with the same login.
Errors use OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.

Nothing here imports the UI: any Starlette/FastAPI app can mount these routes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from rag.auth import Logins, LoginThrottled, client_address
from rag.chat import ChatService, ChatSession, history_from_turns
from rag.engine import Answer
from rag.errors import (
    BackendError,
    Busy,
    ConfigError,
    FileRefused,
    FileTooLarge,
    RagError,
    StoreError,
)
from rag.ingest import document_id
from rag.llm import limit_output
from rag.logs import internal_error_line
from rag.manifest import FileRecord
from rag.profiles import Profile
from rag.streaming import AnswerStream
from rag.uploads import check_upload, keep, safe_name, upload_limit, upload_max_bytes

logger = logging.getLogger(__name__)

# A chat request is a few messages; anything far bigger is a mistake or an attack.
MAX_JSON_BYTES = 4 * 1024 * 1024
# Multipart framing around the file (boundaries, headers, the `profile` field).
MULTIPART_SLACK = 64 * 1024

Handler = Callable[[Request], Any]


# --- errors --------------------------------------------------------------------------------------


class ApiError(Exception):
    """An error answered in OpenAI's format."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.headers = dict(headers or {})
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param

    def payload(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        headers = dict(self.headers)
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="rag"'
        return JSONResponse(self.payload(), status_code=self.status, headers=headers)


def api_error_of(error: BaseException) -> ApiError:
    """Any error as the API answers it: a RagError by its kind, anything else as a 500 line."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, RagError):
        return from_rag_error(error)
    return ApiError(500, internal_error_line(error), "server_error")


def try_again_later(error: Busy | LoginThrottled, code: str) -> ApiError:
    """A 429 that says when to come back (`Retry-After`, in seconds)."""
    headers = {"Retry-After": str(error.retry_after)}
    return ApiError(429, str(error), "rate_limit_error", code, headers=headers)


def from_rag_error(error: RagError) -> ApiError:
    """A status for each kind of RagError: the backend failing is 502, a busy index 503, too
    many answers at once 429."""
    if isinstance(error, Busy):
        return try_again_later(error, "busy")
    if isinstance(error, BackendError):
        return ApiError(502, str(error), "server_error", "backend_error")
    if isinstance(error, StoreError):
        return ApiError(503, str(error), "server_error", "index_unavailable")
    if isinstance(error, FileTooLarge):
        return file_too_large(str(error))
    if isinstance(error, FileRefused):
        return ApiError(422, str(error), "invalid_request_error", "file_refused")
    if isinstance(error, ConfigError):
        return ApiError(500, str(error), "server_error", "config_error")
    return ApiError(500, str(error), "server_error", "rag_error")


def file_too_large(message: str) -> ApiError:
    return ApiError(413, message, "invalid_request_error", "file_too_large", "file")


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", "invalid_request", param)


# --- auth ----------------------------------------------------------------------------------------


def credentials(header: str) -> tuple[str, str] | None:
    """(user, password) from `Bearer USER:PASSWORD` or `Basic base64(USER:PASSWORD)`."""
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "basic":
        try:
            value = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
    elif scheme.lower() != "bearer":
        return None
    user, sep, password = value.partition(":")
    return (user, password) if sep and user and password else None


async def authenticate(request: Request, logins: Logins) -> str | None:
    """The user making the request; raises 401 unless logins are off or the login checks out."""
    if not logins.users.enabled:
        return None
    login = credentials(request.headers.get("authorization", ""))
    try:
        verified = login is not None and await logins.check(*login, client_address(request.scope))
    except LoginThrottled as error:
        raise try_again_later(error, "too_many_failed_logins") from None
    if not verified:
        raise ApiError(
            401,
            "Incorrect or missing credentials: send `Authorization: Bearer USER:PASSWORD` "
            "with a login from RAG_AUTH_USERS (the OpenAI client's api_key='USER:PASSWORD').",
            "authentication_error",
            "invalid_api_key",
        )
    return login[0]


def endpoint(logins: Logins, handler: Handler) -> Handler:
    """Wrap a handler: auth first, then any ApiError or RagError becomes an OpenAI-style error."""

    async def wrapped(request: Request) -> Response:
        try:
            # Who asks: the login's user, or "" when logins are off (the one local user).
            request.state.user = await authenticate(request, logins) or ""
            return await handler(request)
        except Exception as error:
            if not isinstance(error, ApiError | RagError):  # unexpected: the traceback is logged
                logger.exception("API request %s %s failed", request.method, request.url.path)
            return api_error_of(error).response()

    return wrapped


# --- request parsing -----------------------------------------------------------------------------


async def json_body(request: Request) -> dict[str, Any]:
    too_large = ApiError(413, f"request body over {MAX_JSON_BYTES // 2**20} MB", code="too_large")
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_JSON_BYTES:
        raise too_large
    # The read itself is bounded: a chunked body declares no length.
    data = bytearray()
    try:
        async for chunk in limited(request.stream(), MAX_JSON_BYTES):
            data += chunk
    except TooLarge:
        raise too_large from None
    try:
        body = json.loads(bytes(data))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise bad_request(f"the request body is not valid JSON ({error})") from None
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    return body


def message_text(content: Any, index: int) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        ]
        if all(isinstance(part, str) for part in parts):
            return "".join(parts)
    raise bad_request(f"messages[{index}].content must be a string or text parts", "messages")


def question_and_history(messages: Any) -> tuple[str, list[tuple[str, str]]]:
    """The last user message, and the user/assistant turns before it. System messages are dropped:
    the profile's system prompt and the ground rules are the only instructions the model gets."""
    if not isinstance(messages, list) or not messages:
        raise bad_request("`messages` must be a non-empty list", "messages")
    turns: list[tuple[str, str]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise bad_request(f"messages[{index}] must be an object with a role", "messages")
        role = message["role"]
        if role not in ("system", "developer", "user", "assistant", "tool", "function"):
            raise bad_request(f"messages[{index}] has an unknown role {role!r}", "messages")
        text = message_text(message.get("content"), index)
        if role in ("user", "assistant"):
            turns.append((role, text))
    last_user = max((i for i, (role, _) in enumerate(turns) if role == "user"), default=None)
    if last_user is None:
        raise bad_request("`messages` has no user message to answer", "messages")
    question = turns[last_user][1].strip()
    if not question:
        raise bad_request("the last user message is empty", "messages")
    return question, turns[:last_user]


def number(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise bad_request(f"`{name}` must be a number from {low:g} to {high:g}", name)
    return float(value)


# --- answering -----------------------------------------------------------------------------------


def start_answer(session: ChatSession, question: str, max_tokens: int | None) -> Answer:
    """Condense, retrieve and start the answer (blocking: call from a worker thread)."""
    engine = session.engine()
    if max_tokens is not None:
        # Never more than the server allows: the context budget is planned around that.
        allowed = min(max_tokens, session.service.settings.max_new_tokens)
        engine.llm = limit_output(engine.llm, allowed)
        engine.max_new_tokens = allowed
    return session.ask(question)


class Completion:
    """The OpenAI objects for one answer."""

    def __init__(self, profile: Profile, notice: str | None) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = profile.name
        self.notice = notice

    def extras(self, answer: Answer) -> dict[str, Any]:
        extra: dict[str, Any] = {
            "sources": [source.to_json() for source in answer.sources],
            "standalone_question": answer.standalone_question,
            "backend": answer.model,
            "refused": answer.refused,
            "verified": answer.verified,
        }
        if self.notice:
            extra["notice"] = self.notice
        return extra

    def whole(self, answer: Answer) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer.text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            **self.extras(answer),
        }

    def chunk(
        self, delta: dict[str, Any], finish: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            **extra,
        }


def sse(data: dict[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n".encode()


# --- uploads -------------------------------------------------------------------------------------


class TooLarge(Exception):
    pass


async def limited(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """The request body, stopped as soon as it is over `limit` bytes (nothing more is spooled)."""
    seen = 0
    async for chunk in stream:
        seen += len(chunk)
        if seen > limit:
            raise TooLarge
        yield chunk


class DocumentStore:
    """API uploads, each with an owner: each name gets one folder under storage/uploads/api, so a
    new upload of the same name by its owner replaces the old version (same document id); another
    user cannot replace it. Every chat and API question reads them, like the files of data/."""

    OWNER_FILE = "owner"

    def __init__(self, service: ChatService) -> None:
        self.service = service
        self.root = service.settings.storage_dir / "uploads" / "api"
        self._lock = threading.Lock()  # one upload at a time touches the folders

    def folder(self, collection: str, name: str) -> Path:
        key = hashlib.sha256(f"{collection}\0{name}".encode()).hexdigest()[:16]
        return self.root / key

    def owner(self, folder: Path) -> str | None:
        try:
            return (folder / self.OWNER_FILE).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def add(self, data: bytes, name: str, profile: Profile, user: str) -> dict[str, Any]:
        """Store and index one upload as `user`'s document (blocking). Raises FileRefused, or an
        ApiError (409) when another user's document has the name."""
        collection = profile.collection
        folder = self.folder(collection, name)
        with self._lock:
            owner = self.owner(folder)
            if owner is not None and owner != user:
                raise ApiError(
                    409,
                    f"{name}: another user's document has this name; upload yours under another",
                    code="name_taken",
                    param="file",
                )
            try:
                folder.mkdir(parents=True, exist_ok=True)
                (folder / self.OWNER_FILE).write_text(user, encoding="utf-8")
                target = keep(data, folder, name)
            except OSError as error:
                raise FileRefused(name, f"cannot be stored ({error.strerror})") from None
            try:
                report = self.service.index.attach(target, name, chat_id="", collection=collection)
            finally:
                record = self.service.index.manifest.get(
                    collection, document_id(folder.resolve(), name)
                )
                self._prune(folder, Path(record.source) if record else None)
        if report.failed:
            raise report.failed[0]
        chunks = report.chunks_written if report.indexed else (record.chunks if record else 0)
        return {
            "id": record.doc_id if record else None,
            "file": name,
            "indexed": True,
            "chunks": chunks,
            "unchanged": bool(report.unchanged),
            "profile": profile.name,
            "collection": collection,
            "warnings": list(report.warnings),
        }

    def owned(self, user: str) -> list[FileRecord]:
        """The documents `user` uploaded, in every collection."""
        manifest = self.service.index.manifest
        root = self.root.resolve()
        return [
            record
            for collection in manifest.collections()
            for record in manifest.files(collection)
            if Path(record.root).parent == root and self.owner(Path(record.root)) == user
        ]

    def remove(self, doc_id: str, user: str) -> FileRecord:
        """Delete one of `user`'s documents from the index and the disk; 404 for any other id."""
        with self._lock:
            record = next((r for r in self.owned(user) if r.doc_id == doc_id), None)
            if record is None:
                raise ApiError(
                    404, f"you have no document with id {doc_id!r}", code="document_not_found"
                )
            self.service.index.remove_document(record.doc_id, record.collection)
            self._prune(Path(record.root), None)
        return record

    @classmethod
    def _prune(cls, folder: Path, keep: Path | None) -> None:
        """Drop stored copies the index no longer points at (older versions, refused files);
        without a version to keep, the folder goes, owner and all."""
        keep = keep.resolve() if keep else None
        for path in folder.iterdir():
            if path.resolve() != keep and (keep is None or path.name != cls.OWNER_FILE):
                path.unlink(missing_ok=True)
        if keep is None:
            folder.rmdir()


def document_json(record: FileRecord) -> dict[str, Any]:
    return {
        "id": record.doc_id,
        "file": record.file,
        "collection": record.collection,
        "chunks": record.chunks,
        "bytes": record.size,
        "indexed_at": record.indexed_at,
    }


async def read_upload(request: Request, limit: int) -> tuple[UploadFile, dict[str, str]]:
    """The one file in field `file` and the other form fields, refusing bodies over `limit`."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise bad_request("send the document as multipart/form-data with a field `file`", "file")
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + MULTIPART_SLACK:
        raise TooLarge
    parser = MultiPartParser(
        request.headers, limited(request.stream(), limit + MULTIPART_SLACK), max_files=1
    )
    try:
        form = await parser.parse()
    except MultiPartException as error:
        raise bad_request(f"bad multipart upload: {error.message}", "file") from None
    files = [value for key, value in form.multi_items() if isinstance(value, UploadFile)]
    fields = {key: value for key, value in form.multi_items() if isinstance(value, str)}
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or len(files) != 1:
        for file in files:
            await file.close()
        raise bad_request("send exactly one file, in the form field `file`", "file")
    return upload, fields


# --- routes --------------------------------------------------------------------------------------


def api_routes(service: ChatService, logins: Logins, prefix: str = "") -> list[Route]:
    """The /v1 routes over one ChatService; `prefix` is the app's root path, if any."""
    documents = DocumentStore(service)

    def find_profile(name: Any, param: str = "model") -> Profile:
        if not isinstance(name, str) or not name:
            raise bad_request(f"you must provide a `{param}` (a profile name)", param)
        profile = service.profiles.get(name)
        if profile is None:
            raise ApiError(
                404,
                f"The model {name!r} does not exist; available: {', '.join(service.profiles)}",
                "invalid_request_error",
                "model_not_found",
                param,
            )
        return profile

    def model_object(profile: Profile) -> dict[str, Any]:
        return {"id": profile.name, "object": "model", "created": 0, "owned_by": "rag"}

    async def list_models(request: Request) -> Response:
        return JSONResponse(
            {"object": "list", "data": [model_object(p) for p in service.profiles.values()]}
        )

    async def get_model(request: Request) -> Response:
        return JSONResponse(model_object(find_profile(request.path_params["model"])))

    async def chat_completions(request: Request) -> Response:
        body = await json_body(request)
        profile = find_profile(body.get("model"))
        question, turns = question_and_history(body.get("messages"))
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise bad_request("`stream` must be true or false", "stream")
        if body.get("n", 1) != 1:
            raise bad_request("only one choice per request (`n` = 1) is supported", "n")
        temperature = number(body, "temperature", 0.0, 2.0)
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise bad_request("`max_tokens` must be a positive integer", "max_tokens")
        # A fresh chat per request: it sees the shared documents, never a UI chat's attachments.
        session = service.session(
            f"api-{uuid.uuid4().hex}", profile.name, history_from_turns(turns)
        )
        session.temperature = temperature
        completion = Completion(profile, service.sync_status.note())
        # Busy (a 429) when the queue of answers is full, before any work starts.
        producer = AnswerStream(service.answers, lambda: start_answer(session, question, limit))
        if not stream:
            return JSONResponse(completion.whole(await producer.whole()))
        return await stream_completion(producer, completion)

    async def stream_completion(producer: AnswerStream, completion: Completion) -> Response:
        # Wait for the first token before answering, so a failing backend still gets its status.
        tokens = producer.tokens()
        try:
            answer = await producer.started()
            first = await anext(tokens, None)
        except BaseException:
            producer.cancel()
            raise

        async def events() -> AsyncIterator[bytes]:
            try:
                yield sse(completion.chunk({"role": "assistant", "content": ""}))
                if first is not None:
                    yield sse(completion.chunk({"content": first}))
                    async for token in tokens:
                        yield sse(completion.chunk({"content": token}))
            except Exception as error:  # mid-stream: the client has what was sent, then the error
                if not isinstance(error, RagError):
                    logger.error("API answer failed", exc_info=error)
                yield sse(api_error_of(error).payload())
                return
            finally:
                producer.cancel()
            yield sse(completion.chunk({}, "stop", **completion.extras(answer)))
            yield sse("[DONE]")

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def upload_document(request: Request) -> Response:
        settings = service.settings
        try:
            upload, fields = await read_upload(request, upload_max_bytes(settings))
        except TooLarge:
            return file_too_large(f"the file is over {upload_limit(settings)}").response()
        try:
            wanted = request.query_params.get("profile") or fields.get("profile")
            profile = find_profile(wanted, "profile") if wanted else service.default_profile()
            name = safe_name(upload.filename or "")
            check_upload(name, upload.size or 0, settings)
            data = await upload.read()
        finally:
            await upload.close()
        added = await asyncio.to_thread(documents.add, data, name, profile, request.state.user)
        return JSONResponse(added)

    async def list_documents(request: Request) -> Response:
        owned = await asyncio.to_thread(documents.owned, request.state.user)
        return JSONResponse({"object": "list", "data": [document_json(r) for r in owned]})

    async def delete_document(request: Request) -> Response:
        doc_id = request.path_params["doc_id"]
        record = await asyncio.to_thread(documents.remove, doc_id, request.state.user)
        return JSONResponse({**document_json(record), "deleted": True})

    def route(path: str, handler: Handler, method: str) -> Route:
        return Route(prefix + path, endpoint(logins, handler), methods=[method])

    return [
        route("/v1/chat/completions", chat_completions, "POST"),
        route("/v1/models", list_models, "GET"),
        route("/v1/models/{model:path}", get_model, "GET"),
        route("/v1/documents", upload_document, "POST"),
        route("/v1/documents", list_documents, "GET"),
        route("/v1/documents/{doc_id}", delete_document, "DELETE"),
    ]


def install_api(app: Any, service: ChatService, logins: Logins, prefix: str = "") -> None:
    """Mount the API on a Starlette/FastAPI app, ahead of any catch-all route it already has."""
    for route in reversed(api_routes(service, logins, prefix)):
        app.router.routes.insert(0, route)
