"""Questions beyond what the model can answer at once wait their turn, told their place in line,
and beyond the queue are told the server is busy (the real app, the embedded model)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from testkit.app import ChatServer, prepare_home
from testkit.chainlit import ChatClient


def test_a_waiting_question_hears_its_place_and_one_too_many_hears_busy(
    tmp_path: Path, models_cache: Path
) -> None:
    home = prepare_home(tmp_path, models_cache)
    (home / "data" / "harbour.md").write_text(
        "# Harbour guide\n\nThe ferry to the island leaves the harbour at noon every day.\n"
    )
    # One answer at a time, one more may wait: of three questions asked at once, one runs, one
    # waits, one is turned away. Long answers keep the first one busy meanwhile.
    server = ChatServer(
        home,
        settings={"RAG_ANSWER_QUEUE": "1", "RAG_MAX_NEW_TOKENS": "200", "RAG_TEMPERATURE": "0"},
    )
    server.start()

    async def three_chats() -> list[str]:
        # Without logins the page gets its session from the header login, as a browser does.
        token = httpx.post(f"{server.url}/auth/header", timeout=30).cookies["access_token"]
        clients = [ChatClient(server.url, cookie=f"access_token={token}") for _ in range(3)]
        for client in clients:
            await client.connect()
        try:
            await asyncio.gather(
                *(client.ask("When does the ferry to the island leave?") for client in clients)
            )
        finally:
            for client in clients:
                await client.close()
        return [" ".join(client.texts) for client in clients]

    try:
        server.wait_for_sync()
        seen = asyncio.run(three_chats())
    finally:
        server.stop()
    assert sum("answer ahead of yours" in text for text in seen) == 1, seen
    assert sum("the server is busy" in text for text in seen) == 1, seen
    assert sum("noon" in text for text in seen) >= 2  # the running and the waiting one answered
