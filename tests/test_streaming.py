"""Answers in worker threads: the event loop stays free, a stopped answer stops generating, and
the queue bounds how many answers run and wait."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from rag.engine import Answer
from rag.errors import Busy
from rag.streaming import AnswerQueue, AnswerStream


def slow_answer(closed: threading.Event | None = None, words: int = 200) -> Answer:
    def tokens() -> Iterator[str]:
        try:
            for n in range(words):
                time.sleep(0.01)  # a blocking model
                yield f"w{n} "
        finally:
            if closed is not None:
                closed.set()

    return Answer("q", "q", [], "test", tokens())


def test_tokens_stream_without_blocking_and_stop_early() -> None:
    closed = threading.Event()

    async def consume(limit: int) -> tuple[list[str], int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        beat = asyncio.create_task(ticker())
        stream = AnswerStream(AnswerQueue(1, 0), lambda: slow_answer(closed))
        await stream.started()
        received = []
        async for token in stream.tokens():
            received.append(token)
            if len(received) == limit:
                break
        beat.cancel()
        return received, ticks

    received, ticks = asyncio.run(consume(limit=3))
    assert received == ["w0 ", "w1 ", "w2 "]
    assert ticks >= 3  # the event loop kept running while tokens were produced
    assert closed.wait(5)  # stopping the consumer stopped generation


def test_a_full_queue_refuses_at_once_with_a_retry_time() -> None:
    queue = AnswerQueue(workers=1, waiting=1)
    running, waiting = queue.enter(), queue.enter()
    with pytest.raises(Busy) as busy:
        queue.enter()
    assert busy.value.retry_after >= 1
    assert queue.ahead(running) == 0 and queue.ahead(waiting) == 1
    queue.leave(running)
    assert queue.wait_turn(waiting, threading.Event(), lambda ahead: None)
    assert queue.to_json()["running"] == 1 and queue.to_json()["waiting"] == 0


def test_a_waiting_answer_hears_its_place_then_runs() -> None:
    async def scenario() -> tuple[list[int], str]:
        queue = AnswerQueue(workers=1, waiting=2)
        first = AnswerStream(queue, lambda: slow_answer(words=20))
        second = AnswerStream(queue, lambda: slow_answer(words=2))
        places: list[int] = []

        async def heard(ahead: int) -> None:
            places.append(ahead)

        await first.whole()
        answer = await second.started(heard)
        text = "".join([token async for token in second.tokens()])
        assert answer.question == "q"
        return places, text

    places, text = asyncio.run(scenario())
    assert places == [1]
    assert text == "w0 w1 "


def test_a_cancelled_waiting_answer_leaves_the_line() -> None:
    async def scenario() -> AnswerQueue:
        queue = AnswerQueue(workers=1, waiting=1)
        first = AnswerStream(queue, lambda: slow_answer(words=300))
        second = AnswerStream(queue, lambda: slow_answer(words=1))
        await first.started()
        second.cancel()
        for _ in range(100):
            if queue.to_json()["waiting"] == 0:
                break
            await asyncio.sleep(0.05)
        first.cancel()
        return queue

    queue = asyncio.run(scenario())
    assert queue.to_json()["waiting"] == 0
