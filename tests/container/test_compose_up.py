"""docker-compose brings up the `app` service against podman's Docker API socket.

Ollama's and Chroma's images cannot be pulled here, so `app` runs alone (--no-deps) on the embedded
model; their wiring is checked statically in tests/test_compose.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from testkit.app import free_port

from .conftest import ROOT, Podman

pytestmark = [pytest.mark.container, pytest.mark.timeout(3600)]

PROJECT = f"ragct{os.getpid()}"


@pytest.fixture(scope="module")
def docker_host(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`podman system service` on a socket of our own, for as long as this module runs."""
    if shutil.which("docker-compose") is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is not installed; .ci/run installs it")
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    socket_path = tmp_path_factory.mktemp("podman-api") / "podman.sock"
    log = (podman.log.parent / "podman-service.log").open("w", encoding="utf-8")
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{socket_path}"],
        env=podman.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        transport = httpx.HTTPTransport(uds=str(socket_path))
        deadline = time.monotonic() + 30
        while True:
            try:
                with httpx.Client(transport=transport, timeout=5) as client:
                    if client.get("http://podman/_ping").text == "OK":
                        break
            except httpx.TransportError:
                pass
            if service.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"podman system service did not answer on {socket_path}")
            time.sleep(0.5)
        yield f"unix://{socket_path}"
    finally:
        service.terminate()
        try:
            service.wait(timeout=20)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
        log.close()


def test_compose_brings_up_the_app_service(
    podman: Podman,
    image: str,
    documents: Path,
    docker_host: str,
    tmp_path: Path,
    timings: dict[str, float],
) -> None:
    empty_env = tmp_path / "empty.env"  # no developer's .env leaks in: the defaults are tested
    empty_env.touch()
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DOCKER_HOST": docker_host,
        "RAG_IMAGE": image,
        "HOST_DATA_DIR": str(documents),
        "RAG_HOST": "127.0.0.1",
        "RAG_PORT": str(port),
    }

    def compose(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["docker-compose", "--env-file", str(empty_env), "--project-name", PROJECT, *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        with podman.log.open("a", encoding="utf-8") as out:
            out.write(f"$ docker-compose {' '.join(args)}\n-> {result.returncode}\n")
            out.write(result.stdout[-4000:] + result.stderr[-4000:] + "\n")
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    container = f"{PROJECT}_app_1"
    start = time.monotonic()
    try:
        compose("up", "--detach", "--no-build", "--no-deps", "app")
        timings["compose_up_to_healthy_s"] = podman.wait_healthy(
            container, f"http://127.0.0.1:{port}"
        )
        timings["compose_up_total_s"] = time.monotonic() - start
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json()
        assert health["status"] == "ok"
        assert health["index"]["collections"]["default"]["files"] == 2
        env_lines = podman.run("exec", container, "env").stdout.split()
        assert "OLLAMA_BASE_URL=http://ollama:11434" in env_lines
        assert "RAG_STORAGE_DIR=/app/storage" in env_lines
        # The compose file's healthcheck (not only the image's) is what podman runs.
        check = podman.run("inspect", "--format", "{{json .Config.Healthcheck.Test}}", container)
        assert "CMD-SHELL" in check.stdout and "/healthz" in check.stdout
        status = compose("ps", "app").stdout
        assert "Up" in status, status
    finally:
        compose("down", "--volumes", "--timeout", "20")
    assert podman.run("container", "exists", container, check=False).returncode == 1
