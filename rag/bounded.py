"""Folders of files the app derives and can lose (shown elements, cited-page excerpts), kept under a
size bound by dropping the oldest files first."""

from __future__ import annotations

import logging
import stat
import threading
from pathlib import Path

logger = logging.getLogger(__name__)


class BoundedFolder:
    """A folder whose files together stay under `max_bytes`: after each write the oldest files
    (by modification time) go until it fits. Its size is counted once, then kept up to date."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._size: int | None = None  # counted on first use

    def _files(self) -> list[tuple[int, int, Path]]:
        """(modified, size, path) of every file; one that vanishes meanwhile is left out."""
        found = []
        for path in self.root.rglob("*"):
            try:
                info = path.stat()
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):  # from the one stat: no second look at the disk
                found.append((info.st_mtime_ns, info.st_size, path))
        return found

    def added(self, size: int, keep: Path | None = None) -> None:
        """A file of `size` bytes was written (`keep` is never dropped by this call)."""
        with self._lock:
            if self._size is None:
                self._size = sum(size for _, size, _ in self._files())
            else:
                self._size += size
            if self._size <= self.max_bytes:
                return
            dropped = 0
            for _, length, path in sorted(self._files()):  # oldest first
                if self._size <= self.max_bytes:
                    break
                if path == keep:
                    continue
                path.unlink(missing_ok=True)
                self._size -= length
                dropped += 1
            logger.info(
                "%s: dropped the %d oldest files to stay under %.0f MB",
                self.root,
                dropped,
                self.max_bytes / 2**20,
            )

    def removed(self, size: int) -> None:
        with self._lock:
            if self._size is not None:
                self._size = max(0, self._size - size)
