"""Settings: every env var the code reads is documented, every documented one changes behaviour,
a value that does not parse stops the start, and RAG_TOP_K / RAG_COLLECTION win over the profile the
same way in the chat, the API, `rag ask` and `rag search`. No model is loaded here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml

from rag import cli
from rag.config import Settings, env_names, load_settings
from rag.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "profiles"
ENV_NAME = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b")
# Reads of the environment in code; os.environ.setdefault only sets library flags (offline mode).
ENV_READS = [
    re.compile(r"os\.environ\.get\(\s*[\"']([A-Z0-9_]+)[\"']"),
    re.compile(r"os\.getenv\(\s*[\"']([A-Z0-9_]+)[\"']"),
    re.compile(r"os\.environ\[\s*[\"']([A-Z0-9_]+)[\"']\s*\](?!\s*=[^=])"),
    re.compile(r"[\"']([A-Z0-9_]+)[\"']\s+in\s+os\.environ"),
]
SHELL_READ = re.compile(r"\$\{?([A-Z][A-Z0-9_]*)")
SHELL_OWN = {"SECONDS", "HOME", "PATH", "PWD", "BASH_SOURCE", "RANDOM"}
# Where scripts/run.sh serves the chat: compose publishes the port with them instead of passing them.
PUBLISH_ONLY = {"RAG_HOST", "RAG_PORT"}

# One non-default value per Settings field, as the env var's text and as the parsed value. A new
# field fails test_every_setting_has_a_row until it gets a row here (and docs, and compose).
SAMPLES: dict[str, tuple[str, Any]] = {
    "storage_dir": ("elsewhere/storage", Path("elsewhere/storage")),
    "data_dir": ("docs", Path("docs")),
    "watch_data": ("false", False),
    "watch_quiet_s": ("2.5", 2.5),
    "collection": ("my-docs", "my-docs"),
    "chunk_size": ("512", 512),
    "chunk_overlap": ("64", 64),
    "embed_model": ("ollama:nomic-embed-text", "ollama:nomic-embed-text"),
    "embed_batch_size": ("16", 16),
    "embed_threads": ("2", 2),
    "chroma_host": ("chroma.local", "chroma.local"),
    "chroma_port": ("9000", 9000),
    "chroma_ssl": ("true", True),
    "database_url": ("postgresql://rag@db/rag", "postgresql://rag@db/rag"),
    "max_file_mb": ("5", 5.0),
    "max_file_chunks": ("100", 100),
    "parse_timeout_s": ("30", 30.0),
    "ocr": ("off", False),
    "ocr_languages": ("rus + eng", "rus+eng"),
    "upload_max_mb": ("3", 3.0),
    "upload_max_files": ("2", 2),
    "lock_wait_s": ("5", 5.0),
    "auth_users": ("alice:secret", "alice:secret"),
    "answer_workers": ("2", 2),
    "answer_queue": ("0", 0),
    "elements_max_mb": ("5", 5.0),
    "top_k": ("9", 9),
    "retrieval": ("bm25", "bm25"),
    "llm": ("embedded", "embedded"),
    "gguf_path": ("models/model.gguf", Path("models/model.gguf")),
    "gguf_threads": ("1", 1),
    "ollama_base_url": ("http://gpu-box:11434", "http://gpu-box:11434"),
    "ollama_model": ("qwen3:4b", "qwen3:4b"),
    "llm_timeout_s": ("7", 7.0),
    "openai_base_url": ("http://llm:8080/v1", "http://llm:8080/v1"),
    "openai_model": ("gpt-local", "gpt-local"),
    "openai_api_key": ("sk-test", "sk-test"),
    "bedrock_model": ("anthropic.claude-3-5-sonnet", "anthropic.claude-3-5-sonnet"),
    "bedrock_region": ("eu-west-1", "eu-west-1"),
    "temperature": ("0.7", 0.7),
    "max_new_tokens": ("128", 128),
    "context_window": ("4096", 4096),
    "profile": ("restaurant-menus", "restaurant-menus"),
    "profiles_dir": ("my-profiles", Path("my-profiles")),
    "host": ("0.0.0.0", "0.0.0.0"),
    "port": ("8080", 8080),
}
# Values that must stop the start; the message names the env var.
BAD = [
    ("RAG_TOP_K", "many"),
    ("RAG_TOP_K", "0"),
    ("RAG_COLLECTION", "a"),
    ("RAG_LLM_TIMEOUT_S", "soon"),
    ("RAG_OLLAMA_TIMEOUT_S", "-1"),
    ("RAG_PORT", "http"),
    ("RAG_RETRIEVAL", "fuzzy"),
    ("RAG_CHROMA_SSL", "maybe"),
    ("RAG_CHUNK_SIZE", "big"),
    ("RAG_LLM", "llama"),
    ("RAG_GGUF_THREADS", "-1"),
    ("RAG_OCR", "sometimes"),
    ("RAG_OCR_LANGUAGES", "eng,rus"),
    ("RAG_OCR_LANGUAGES", ""),
    ("RAG_WATCH_DATA", "sometimes"),
    ("RAG_WATCH_QUIET_S", "0"),
]


def settings_env() -> list[tuple[str, str]]:
    """(env var, field) for every name the Settings loader reads, aliases included."""
    return [(name, field) for field in Settings.model_fields for name in env_names(field)]


def code_env_reads() -> set[str]:
    names: set[str] = set()
    for path in [ROOT / "app.py", *sorted((ROOT / "rag").glob("*.py"))]:
        text = path.read_text(encoding="utf-8")
        for pattern in ENV_READS:
            names |= set(pattern.findall(text))
    return names


def read_by_the_app() -> set[str]:
    return {name for name, _ in settings_env()} | code_env_reads()


def readme_settings() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]


def env_example_settings() -> str:
    """.env.example up to its compose-only section (those are not app settings)."""
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    return text.split("# --- docker compose only", 1)[0]


def compose_app() -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    return compose["services"]["app"]


# --- every setting read is documented, and every documented one is read --------------------------


def test_every_setting_has_a_row() -> None:
    assert set(SAMPLES) == set(Settings.model_fields)


def test_the_scan_finds_what_the_code_reads() -> None:
    # Guards the scan itself: these are read outside Settings.
    assert "CHAINLIT_AUTH_SECRET" in code_env_reads()


@pytest.mark.parametrize("name", sorted(read_by_the_app()))
def test_every_setting_read_is_documented(name: str) -> None:
    assert re.search(rf"\b{name}\b", readme_settings()), f"{name}: not in README.md's Settings"
    assert re.search(rf"\b{name}\b", env_example_settings()), f"{name}: not in .env.example"


def test_every_setting_reaches_the_compose_app() -> None:
    app = compose_app()
    primary = {env_names(field)[0] for field in Settings.model_fields} | (
        code_env_reads() - {name for name, _ in settings_env()}
    )
    missing = sorted(primary - set(app["environment"]) - PUBLISH_ONLY)
    assert not missing, f"add to docker-compose.yml's app environment: {missing}"
    assert all(name in app["ports"][0] for name in PUBLISH_ONLY)


def test_every_documented_setting_is_read() -> None:
    documented = set(ENV_NAME.findall(readme_settings())) | set(
        ENV_NAME.findall(env_example_settings())
    )
    assert not documented - read_by_the_app(), "documented but never read"


@pytest.mark.parametrize("script", sorted((ROOT / "scripts").glob("*.sh")), ids=lambda p: p.name)
def test_every_variable_a_script_reads_is_documented(script: Path) -> None:
    text = script.read_text(encoding="utf-8")
    header = "".join(line for line in text.splitlines(keepends=True)[1:] if line.startswith("#"))
    docs = readme_settings() + env_example_settings() + header
    undocumented = {
        name
        for name in set(SHELL_READ.findall(text)) - SHELL_OWN
        if not re.search(rf"\b{name}\b", docs)
    }
    assert not undocumented, f"{script.name} reads undocumented {sorted(undocumented)}"


# --- every documented setting changes behaviour; a bad one stops the start ---------------------------


@pytest.mark.parametrize(("name", "field"), settings_env(), ids=[n for n, _ in settings_env()])
def test_each_env_var_sets_its_field(
    name: str, field: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    text, value = SAMPLES[field]
    assert getattr(Settings(), field) != value, f"{field}: the sample is the default"
    monkeypatch.setenv(name, text)
    assert getattr(load_settings(), field) == value


def test_a_dotenv_file_counts_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("RAG_TOP_K=7  # a comment\nRAG_PORT=9001\n", encoding="utf-8")
    monkeypatch.setenv("RAG_PORT", "9002")
    settings = load_settings()
    assert (settings.top_k, settings.port) == (7, 9002)


def test_the_new_timeout_name_wins_over_the_old_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_OLLAMA_TIMEOUT_S", "30")
    monkeypatch.setenv("RAG_LLM_TIMEOUT_S", "7")
    assert load_settings().llm_timeout_s == 7.0


@pytest.mark.parametrize(("name", "value"), BAD)
def test_a_value_that_does_not_parse_stops_the_start(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings()
    assert cli.main(["status"]) == cli.EXIT_USAGE
    assert name in capsys.readouterr().err


def test_empty_optional_settings_are_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # What compose passes for an unset one (RAG_TOP_K: ${RAG_TOP_K:-}).
    monkeypatch.setenv("RAG_TOP_K", "")
    monkeypatch.setenv("RAG_COLLECTION", "")
    settings = load_settings()
    assert (settings.top_k, settings.collection) == (None, None)


# --- RAG_TOP_K and RAG_COLLECTION win over the profile, everywhere ---------------------------------


@pytest.fixture
def profiles_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shipped profiles (general: default/5, restaurant-menus: menus/6) and a data folder."""
    monkeypatch.setenv("RAG_PROFILES_DIR", str(PROFILES))
    monkeypatch.setenv("RAG_STORAGE_DIR", str(tmp_path / "storage"))
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    return tmp_path


# (env, default profile's collection and top_k, restaurant-menus' collection and top_k)
PRECEDENCE = [
    ({}, ("default", 5), ("menus", 6)),
    ({"RAG_TOP_K": "9"}, ("default", 9), ("menus", 9)),
    ({"RAG_COLLECTION": "my-docs"}, ("my-docs", 5), ("menus", 6)),
    ({"RAG_PROFILE": "restaurant-menus"}, ("menus", 6), ("menus", 6)),
    (
        {"RAG_PROFILE": "restaurant-menus", "RAG_COLLECTION": "my-menus", "RAG_TOP_K": "3"},
        ("my-menus", 3),
        ("my-menus", 3),
    ),
]


Expected = tuple[tuple[str, int], tuple[str, int]]


@pytest.fixture(params=PRECEDENCE)
def expected(
    request: pytest.FixtureRequest, profiles_env: Path, monkeypatch: pytest.MonkeyPatch
) -> Expected:
    """One row of PRECEDENCE set in the environment; what the two profiles should then use."""
    env, default, menus = request.param
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return default, menus


def test_chat_and_api_use_the_setting_over_the_profile(
    expected: Expected, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rag.chat import ChatService
    from rag.engine import ChatEngine
    from rag.ingest import IngestReport

    default, menus = expected
    service = ChatService(load_settings())
    synced: list[str | None] = []

    def ingest(paths: list[Path], collection: str | None = None, **_: Any) -> IngestReport:
        synced.append(collection)
        return IngestReport()

    monkeypatch.setattr(service.index, "ingest", ingest)
    service.start_sync()
    service.wait_for_sync(30)
    service.stop_sync()
    # The API answers through the same sessions (model = profile name, or the default profile).
    for name, (collection, top_k) in [(None, default), ("restaurant-menus", menus)]:
        session = service.session("chat", name)
        engine = ChatEngine(service.index, None, session.profile)  # type: ignore[arg-type]
        assert (session.profile.collection, engine.top_k) == (collection, top_k), name
    # data/ goes where the default profile reads, which is also what `rag` uses by default.
    assert synced == [default[0]] == [service.index.default_collection]


class Asked(BaseException):
    """Stops `rag ask` once the engine is built: no model runs (a BaseException, so the CLI's
    one-line handler of unexpected errors lets it through to the test)."""


def test_rag_ask_and_search_use_the_setting_over_the_profile(
    expected: Expected, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rag.engine
    import rag.index
    import rag.llm

    default, menus = expected
    seen: list[tuple[str | None, int]] = []

    def search(self: Any, query: str, top_k: int, collection: str | None = None) -> list[Any]:
        seen.append((collection or self.default_collection, top_k))
        return []

    def ask(self: Any, question: str) -> None:
        seen.append((self.profile.collection, self.top_k))
        raise Asked

    monkeypatch.setattr(rag.index.Index, "search", search)
    monkeypatch.setattr(rag.engine.ChatEngine, "ask", ask)
    monkeypatch.setattr(rag.llm, "build_llm", lambda settings: None)
    assert cli.main(["search", "lighthouse"]) == cli.EXIT_OK
    with pytest.raises(Asked):
        cli.main(["ask", "when?"])
    with pytest.raises(Asked):
        cli.main(["ask", "when?", "--profile", "restaurant-menus"])
    assert seen == [default, default, menus]
    # A flag wins over both.
    seen.clear()
    assert cli.main(["search", "x", "-k", "2", "--collection", "flagged"]) == cli.EXIT_OK
    with pytest.raises(Asked):
        cli.main(["ask", "when?", "-k", "2", "--collection", "flagged"])
    assert seen == [("flagged", 2), ("flagged", 2)]


def test_a_profile_setting_that_names_no_profile_stops_the_start(
    profiles_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rag.chat import ChatService

    monkeypatch.setenv("RAG_PROFILE", "menu")
    with pytest.raises(ConfigError, match=r"no profile 'menu' \(RAG_PROFILE\)"):
        ChatService(load_settings())


# --- the timeout governs every remote backend --------------------------------------------------------


def test_the_llm_timeout_governs_ollama_openai_and_bedrock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import rag.llm
    from rag.llm.backends import ollama, openai

    monkeypatch.setattr(ollama, "check_ollama", lambda *args, **kwargs: None)
    monkeypatch.setattr(openai, "check_openai", lambda *args, **kwargs: None)
    bedrock: dict[str, Any] = {}
    fake = types.ModuleType("llama_index.llms.bedrock_converse")
    fake.BedrockConverse = lambda **kwargs: bedrock.update(kwargs)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "llama_index.llms.bedrock_converse", fake)
    monkeypatch.setenv("RAG_LLM_TIMEOUT_S", "7")

    ollama = rag.llm.build_llm(load_settings(llm="ollama"))
    openai = rag.llm.build_llm(load_settings(llm="openai"))
    rag.llm.build_llm(load_settings(llm="bedrock"))
    assert (ollama.request_timeout, openai.timeout, bedrock["timeout"]) == (7.0, 7.0, 7.0)  # type: ignore[attr-defined]


# --- settings read outside the Settings object -------------------------------------------------------


def test_chainlit_auth_secret_is_used_when_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rag.auth import ensure_auth_secret

    monkeypatch.setenv("CHAINLIT_AUTH_SECRET", "given")
    ensure_auth_secret(tmp_path / "a")
    assert os.environ["CHAINLIT_AUTH_SECRET"] == "given"
    assert not (tmp_path / "a" / ".auth_secret").exists()
    monkeypatch.delenv("CHAINLIT_AUTH_SECRET")
    ensure_auth_secret(tmp_path / "b")
    assert os.environ["CHAINLIT_AUTH_SECRET"] == (tmp_path / "b" / ".auth_secret").read_text()


@pytest.fixture
def run_sh(tmp_path: Path) -> Path:
    """scripts/run.sh in a copy of the tree whose setup is a no-op and whose chainlit prints its
    arguments; its python is the real one, so the real settings loader reads .env."""
    home = tmp_path / "home"
    (home / "scripts").mkdir(parents=True)
    (home / "scripts" / "run.sh").write_text((ROOT / "scripts" / "run.sh").read_text())
    (home / "scripts" / "setup.sh").write_text("exit 0\n")
    bin_dir = home / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bin_dir / "chainlit").write_text('#!/bin/sh\necho "$@"\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return home


def run(home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(home / "scripts" / "run.sh")],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_run_sh_serves_on_rag_host_and_port(run_sh: Path) -> None:
    assert run(run_sh).stdout.split()[-4:] == ["--host", "127.0.0.1", "--port", "8000"]
    (run_sh / ".env").write_text("RAG_HOST=0.0.0.0   # all interfaces\nRAG_PORT='9000'\n")
    assert run(run_sh).stdout.split()[-4:] == ["--host", "0.0.0.0", "--port", "9000"]
    assert run(run_sh, RAG_PORT="9100").stdout.split()[-2:] == ["--port", "9100"]


def test_run_sh_stops_on_a_bad_setting(run_sh: Path) -> None:
    result = run(run_sh, RAG_PORT="http")
    assert result.returncode != 0 and result.stdout == ""
    assert "RAG_PORT" in result.stderr
