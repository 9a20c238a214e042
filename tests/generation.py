"""Waiting for an in-process model's generation threads to end, for the LLM tests."""

from __future__ import annotations

import threading
import time


def generation_threads(name: str) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == name]


def no_generation_within(name: str, seconds: float) -> bool:
    """Whether every thread called `name` has ended within `seconds`."""
    deadline = time.monotonic() + seconds
    while generation_threads(name) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not generation_threads(name)
