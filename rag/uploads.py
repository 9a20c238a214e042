"""Files users hand over (a chat attachment, an API upload): safe names, the upload limits and
their messages, and keeping the bytes under storage/uploads."""

from __future__ import annotations

import hashlib
from pathlib import Path

from rag.config import Settings
from rag.loaders import SUPPORTED_SUFFIXES, check_file


def safe_name(name: str) -> str:
    """An uploaded file's name for display and identity only: never used as a path."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip().lstrip(".")
    cleaned = "".join(ch for ch in base if ch.isprintable())[:120]
    return cleaned or "upload"


def accepted_types() -> dict[str, list[str]]:
    """What the browser's file picker offers: each MIME type with its suffixes, and every suffix
    under application/octet-stream, as browsers send that for types they do not know."""
    import mimetypes

    by_type: dict[str, list[str]] = {}
    for suffix in sorted(SUPPORTED_SUFFIXES):
        mime = mimetypes.guess_type(f"file{suffix}")[0] or "application/octet-stream"
        by_type.setdefault(mime, []).append(suffix)
    by_type["application/octet-stream"] = sorted(SUPPORTED_SUFFIXES)
    return by_type


def upload_limit(settings: Settings) -> str:
    """The size limit as every message states it."""
    return f"the upload limit of {settings.upload_max_mb:g} MB (RAG_UPLOAD_MAX_MB)"


def upload_max_bytes(settings: Settings) -> int:
    return int(settings.upload_max_mb * 1024 * 1024)


def too_many_files(count: int, settings: Settings) -> str:
    """The message for more attachments in one message than RAG_UPLOAD_MAX_FILES."""
    limit = settings.upload_max_files
    return (
        f"{count} files attached; at most {limit} per message (RAG_UPLOAD_MAX_FILES). "
        f"Only the first {limit} were indexed."
    )


def check_upload(name: str, size: int, settings: Settings) -> None:
    """FileRefused unless a file of this (safe) name and size may be taken. Its content is
    judged when it is parsed, as every file's is."""
    check_file(name, size, upload_max_bytes(settings), upload_limit(settings))


def keep(data: bytes, folder: Path, name: str) -> Path:
    """Write an upload into `folder` under a name made of its content (and the suffix of `name`),
    whole or not at all; the same bytes kept twice are one file."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{hashlib.sha256(data).hexdigest()[:32]}{Path(name).suffix.lower()}"
    if not target.exists():
        partial = target.with_name(target.name + ".part")
        partial.write_bytes(data)
        partial.replace(target)
    return target
