"""The live data folder: watching it, and asking for a sync once a burst of changes has settled."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from rag.ingest import skipped

logger = logging.getLogger(__name__)

# How often the watcher looks at its changes and at its stop event (milliseconds).
STEP_MS = 50
# Seconds between looks for a data folder that is missing, or after the watcher failed.
ABSENT_POLL_S = 2.0


class FolderWatcher:
    """Watches a folder (recursively) in a thread of its own and calls `on_change` once no file in
    it has changed for `quiet_s`. Hidden and temporary files (rag.ingest.skipped) and paths under
    `exclude` are not changes. A missing folder is looked for again; its appearing, vanishing or
    being replaced counts as a change.

    `on_change` runs in the watcher's thread: it should only ask for a sync, not run one.
    """

    def __init__(
        self,
        folder: Path,
        on_change: Callable[[], None],
        quiet_s: float = 1.0,
        exclude: tuple[Path, ...] = (),
    ) -> None:
        self.folder = folder.resolve()
        self.on_change = on_change
        self.quiet_ms = max(1, round(quiet_s * 1000))
        self.exclude = tuple(path.resolve() for path in exclude)
        self.changes_seen = 0  # bursts reported to on_change
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._polling: bool | None = None  # None: as watchfiles decides (WATCHFILES_FORCE_POLLING)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="rag-watch", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop watching; returns once the thread has ended (or `timeout` has passed)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until changes are being watched (or the folder was found missing): a change
        from then on is reported."""
        return self._ready.wait(timeout)

    def is_set(self) -> bool:
        """The stop event as watchfiles sees it: it asks from its first step on, once it is
        watching, which is when this watcher is ready."""
        self._ready.set()
        return self._stop.is_set()

    def wanted(self, _change: object, path: str) -> bool:
        """Whether a change of `path` can change what a sync of the folder does."""
        target = Path(path)
        if any(target == root or root in target.parents for root in self.exclude):
            return False
        try:
            relative = target.relative_to(self.folder)
        except ValueError:
            return True
        return not relative.parts or not skipped(relative)

    def _identity(self) -> tuple[int, int] | None:
        """The folder's device and inode, None while it is missing."""
        try:
            stat = os.stat(self.folder)
        except OSError:
            return None
        return (stat.st_dev, stat.st_ino) if os.path.isdir(self.folder) else None

    def _changed(self) -> None:
        self.changes_seen += 1
        logger.info("data folder changed: syncing %s", self.folder)
        try:
            self.on_change()
        except Exception:  # the watcher must outlive whatever the callback does
            logger.exception("data folder watcher: asking for a sync failed")

    def _run(self) -> None:
        identity = self._identity()
        # Whether to sync once watching: not at first (the start-up sync sees what is there);
        # after the folder appeared or was replaced, or after watching failed for a while.
        announce = False
        while not self._stop.is_set():
            if identity is None:
                self._ready.set()
                self._stop.wait(ABSENT_POLL_S)
                identity, announce = self._identity(), True
                continue
            try:
                self._watch(identity, announce)
                announce = False
            except (OSError, RuntimeError) as error:  # e.g. no inotify watches left
                if self._identity() == identity and not self._polling:
                    logger.warning("watching %s: %s; polling it instead", self.folder, error)
                    self._polling = True
                else:
                    logger.debug("watching %s: %s", self.folder, error)
                self._ready.set()
                self._stop.wait(ABSENT_POLL_S)
                announce = True
            now = self._identity()
            if now != identity and not self._stop.is_set():
                if now is None:
                    self._changed()  # gone: the sync says so, and keeps the index as it is
                identity, announce = now, True

    def _watch(self, identity: tuple[int, int], announce: bool) -> None:
        """Report each burst of changes once it has settled (and, with `announce`, that the
        watch began); return when stopped, or when the folder is no longer the one watched."""
        from watchfiles import watch

        pending = announce
        for changes in watch(
            self.folder,
            watch_filter=self.wanted,
            step=STEP_MS,
            # A wait of quiet_ms with no change ends in an empty set: the burst has settled.
            rust_timeout=self.quiet_ms,
            yield_on_timeout=True,
            stop_event=self,  # see is_set
            raise_interrupt=False,
            force_polling=self._polling,
        ):
            self._ready.set()
            if changes:
                pending = True
                continue
            if pending:
                pending = False
                self._changed()
            if self._identity() != identity:
                return
