"""The log file (storage/logs/rag.log) and the one line a person sees for an unexpected error."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

LOG_NAME = "rag.log"
LOG_MAX_BYTES = 5 * 1024 * 1024
LOG_BACKUPS = 3
FORMAT = "%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s"

_log_path: Path | None = None


def log_to_file(storage_dir: Path) -> Path:
    """Send this process's log (warnings and up, and tracebacks) to storage/logs/rag.log, rotated;
    once per process. Returns the file's path."""
    global _log_path
    path = storage_dir / "logs" / LOG_NAME
    if _log_path == path:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
    )
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter(FORMAT))
    logging.getLogger().addHandler(handler)
    _log_path = path
    return path


def internal_error_line(error: BaseException) -> str:
    """An error the app did not expect, as one line: what it was, and where the details are."""
    text = " ".join(str(error).split())[:200] or "no message"
    where = f"details in {_log_path}" if _log_path else "details in the server log"
    return f"internal error: {type(error).__name__}: {text}; {where}"
