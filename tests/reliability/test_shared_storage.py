"""The CLI and the running app on one storage folder at once (`docker compose exec app rag ...`):
a rebuild or an ingest by the CLI never leaves the app answering from a collection that is gone."""

from __future__ import annotations

from pathlib import Path

import httpx
from rag_cli import cli_env, rag_command, run

from testkit.app import ChatServer, prepare_home

QUESTION = "When does the ferry to the island leave?"


def ask(server: ChatServer, question: str) -> httpx.Response:
    body = {"model": "general", "messages": [{"role": "user", "content": question}]}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=300)


def cited_files(response: httpx.Response) -> set[str]:
    assert response.status_code == 200, response.text
    return {source["file"] for source in response.json()["sources"]}


def test_the_app_follows_a_rebuild_and_an_ingest_by_the_cli(
    tmp_path: Path, models_cache: Path
) -> None:
    home = prepare_home(tmp_path, models_cache)
    data = home / "data"
    (data / "harbour.md").write_text(
        "# Harbour guide\n\nThe ferry to the island leaves the harbour at noon every day.\n"
    )
    server = ChatServer(home)
    server.start()
    try:
        server.wait_for_sync()
        assert "harbour.md" in cited_files(ask(server, QUESTION))
        env = {**cli_env(), "RAG_STORAGE_DIR": str(home / "storage")}

        # The collection is deleted and built anew by another process while the app holds it.
        rebuilt = run(rag_command("ingest", "--rebuild", data), cwd=home, env=env)
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert "harbour.md" in cited_files(ask(server, QUESTION))

        # A file the CLI adds is found by the app without a restart.
        (home / "more").mkdir()
        (home / "more" / "lighthouse.md").write_text(
            "# Lighthouse\n\nThe lighthouse on the cape opens for visitors at nine on Sundays.\n"
        )
        added = run(rag_command("ingest", home / "more"), cwd=home, env=env)
        assert added.returncode == 0, added.stderr
        answer = ask(server, "When does the lighthouse on the cape open for visitors?")
        assert "lighthouse.md" in cited_files(answer)
        assert "Traceback" not in server.log.read_text()
    finally:
        server.stop()
