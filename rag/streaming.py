"""Answers in worker threads, bounded: the admission queue, and the one bridge (`AnswerStream`)
that hands an answer's events to async code (the chat UI and the API alike)."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from rag.engine import Answer
from rag.errors import Busy

# Until answers have been timed, one is assumed to take this long (for Retry-After).
FIRST_ANSWER_ESTIMATE_S = 10.0


class Ticket:
    """One answer's place: waiting in line, then running until it leaves."""

    __slots__ = ("running",)

    def __init__(self) -> None:
        self.running = False


class AnswerQueue:
    """At most `workers` answers run at once and at most `waiting` more wait their turn; beyond
    that an answer is refused at once (Busy), so threads and memory stay bounded under any load.

    The model answers one question at a time anyway (the embedded model has one lock): queueing
    here, before the worker thread does any work, is what keeps a crowd from piling up threads.
    """

    def __init__(self, workers: int, waiting: int) -> None:
        self.workers = workers
        self.waiting = waiting
        self._running = 0
        self._line: deque[Ticket] = deque()
        self._changed = threading.Condition()
        self._answer_s = FIRST_ANSWER_ESTIMATE_S  # moving average of how long an answer runs

    def enter(self) -> Ticket:
        """A place in line, or Busy when the line is full."""
        with self._changed:
            ticket = Ticket()
            if self._running < self.workers and not self._line:
                self._running += 1
                ticket.running = True
            elif len(self._line) >= self.waiting:
                raise Busy(self.retry_after())
            else:
                self._line.append(ticket)
            return ticket

    def ahead(self, ticket: Ticket) -> int:
        """How many answers run or wait before this one (0 once it runs)."""
        with self._changed:
            if ticket.running:
                return 0
            return self._running + self._line.index(ticket) if ticket in self._line else 0

    def wait_turn(
        self, ticket: Ticket, stop: threading.Event, on_wait: Callable[[int], None]
    ) -> bool:
        """Block until the ticket may run; `on_wait(ahead)` hears of each change of place.
        False when `stop` was set first (the ticket has then left the line)."""
        told = -1
        with self._changed:
            while not ticket.running:
                if stop.is_set():
                    self._line.remove(ticket)
                    self._changed.notify_all()
                    return False
                if self._running < self.workers and self._line[0] is ticket:
                    self._line.popleft()
                    self._running += 1
                    ticket.running = True
                    break
                ahead = self.ahead(ticket)  # the condition's lock is re-entrant
                if ahead != told:
                    told = ahead
                    on_wait(ahead)
                self._changed.wait(0.5)  # also wakes to look at `stop`
        return True

    def leave(self, ticket: Ticket, seconds: float | None = None) -> None:
        """The answer is over (or was never started): its place goes to the next in line."""
        with self._changed:
            if ticket.running:
                ticket.running = False
                self._running -= 1
            elif ticket in self._line:
                self._line.remove(ticket)
            if seconds is not None:
                self._answer_s = 0.8 * self._answer_s + 0.2 * seconds
            self._changed.notify_all()

    def retry_after(self) -> int:
        """Seconds until a place is likely free: the line ahead, at the measured pace."""
        return max(1, math.ceil(self._answer_s * (len(self._line) + 1) / self.workers))

    def to_json(self) -> dict[str, Any]:
        with self._changed:
            return {
                "running": self._running,
                "waiting": len(self._line),
                "workers": self.workers,
                "max_waiting": self.waiting,
            }


class AnswerStream:
    """Runs one answer in a worker thread and hands its events to the event loop.

    Events: ("queued", answers ahead) while it waits its turn, ("start", Answer) once the evidence
    is found, then ("token", str)..., then ("end", None) or ("error", exception). Entering the
    queue happens in the constructor: a full queue raises Busy before any thread starts.
    `cancel()` stops the answer at the next token (the user pressed Stop, the client went away).
    """

    def __init__(self, queue: AnswerQueue, start: Callable[[], Answer]) -> None:
        self._loop = asyncio.get_running_loop()
        self._events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._stop = threading.Event()
        self._queue = queue
        self._ticket = queue.enter()
        self._start = start
        threading.Thread(target=self._run, name="rag-answer", daemon=True).start()

    def _put(self, kind: str, value: Any) -> None:
        self._loop.call_soon_threadsafe(self._events.put_nowait, (kind, value))

    def _run(self) -> None:
        began: float | None = None
        try:
            if not self._queue.wait_turn(
                self._ticket, self._stop, lambda n: self._put("queued", n)
            ):
                return
            began = time.monotonic()
            answer = self._start()
            self._put("start", answer)
            tokens = answer.stream()
            for token in tokens:
                if self._stop.is_set():
                    tokens.close()  # the embedded model stops generating, remote streams close
                    return
                self._put("token", token)
        except BaseException as error:  # noqa: BLE001 - handed to the event loop, raised there
            self._put("error", error)
        else:
            self._put("end", None)
        finally:
            self._queue.leave(self._ticket, time.monotonic() - began if began else None)

    async def next(self) -> tuple[str, Any]:
        return await self._events.get()

    async def started(self, on_wait: Callable[[int], Any] | None = None) -> Answer:
        """Wait for the answer to start (its evidence found); `on_wait(ahead)` is awaited for
        each change of place in the queue. Raises what the answer raised."""
        while True:
            kind, value = await self.next()
            if kind == "queued":
                if on_wait is not None:
                    await on_wait(value)
            elif kind == "start":
                return value
            elif kind == "error":
                raise value
            else:  # ended before it started: only after cancel()
                raise asyncio.CancelledError

    async def tokens(self) -> AsyncIterator[str]:
        """The answer's tokens (after `started`); raises what the generation raised. Leaving the
        loop early stops the generation."""
        try:
            while True:
                kind, value = await self.next()
                if kind == "token":
                    yield value
                elif kind == "error":
                    raise value
                elif kind == "end":
                    return
        finally:
            self.cancel()

    async def whole(self) -> Answer:
        """Wait for the complete answer; raises what the answer raised."""
        answer = await self.started()
        async for _ in self.tokens():
            pass
        return answer

    def cancel(self) -> None:
        self._stop.set()
