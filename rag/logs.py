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
_handler: logging.Handler | None = None


class _QuietFileHandler(logging.handlers.RotatingFileHandler):
    """A log file that fails quietly: a full disk must not add "Logging error" noise to the one
    line that says the disk is full."""

    def handleError(self, record: logging.LogRecord) -> None:
        return None


def log_to_file(storage_dir: Path) -> Path | None:
    """Send this process's log (warnings and up, with tracebacks) to storage/logs/rag.log, rotated;
    once per process. Returns the file's path, or None when storage cannot take it (read-only, or
    full): the log is then where it was, and nothing else fails for it."""
    global _log_path, _handler
    path = storage_dir / "logs" / LOG_NAME
    if _log_path == path:
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = _QuietFileHandler(
            path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
        )
    except OSError:
        return None
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    if not root.handlers:
        # Without a handler of its own, Python printed warnings to stderr ("last resort"): keep
        # that, now that the file handler would silence it.
        console = logging.StreamHandler()
        console.setLevel(logging.WARNING)
        console.addFilter(lambda record: not record.exc_info)  # tracebacks go to the file only
        root.addHandler(console)
    if _handler is not None:  # another storage folder in the same process (tests): move over
        root.removeHandler(_handler)
        _handler.close()
    root.addHandler(handler)
    _log_path, _handler = path, handler
    return path


def internal_error_line(error: BaseException) -> str:
    """An error the app did not expect, as one line: what it was, and where the details are."""
    text = " ".join(str(error).split())[:200] or "no message"
    where = f"details in {_log_path}" if _log_path else "details in the server log"
    return f"internal error: {type(error).__name__}: {text}; {where}"
