"""The error hierarchy: each `RagError` carries one line a user can act on."""

from __future__ import annotations


class RagError(Exception):
    """Base of every error the app expects; `str(error)` is the message shown to the user."""


class ConfigError(RagError):
    """A setting, flag or profile is wrong."""


class FileRefused(RagError):
    """One input file cannot be indexed; names the file and the reason."""

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.file = file
        self.reason = reason


class FileTooLarge(FileRefused):
    """A file over a size limit (the API answers 413 for it)."""


class StoreError(RagError):
    """The index cannot be opened or written (locked, wrong embedder, server down, disk full)."""


class EmbedderMismatch(StoreError):
    """The collection was built with another embedder than the one configured."""


class StorageLocked(StoreError):
    """Another process is writing to the same storage folder."""


class StorageFull(StoreError):
    """The disk holding the storage folder has no room left; what was stored before is intact."""


class StorageReadOnly(StoreError):
    """The storage folder cannot be written (a read-only mount, or no permission to write)."""


class BackendError(RagError):
    """An LLM or embedding backend is unreachable, missing a model, or failed."""


class Busy(RagError):
    """Too many answers are running or waiting; the caller may try again after `retry_after` s."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"the server is busy answering other questions; try again in {retry_after} s"
        )
        self.retry_after = retry_after
