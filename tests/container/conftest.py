"""Podman for the container tests, set up as these machines need it, and the app image built once.

The recipe (issue 6): Debian's podman 4.3 as root with runc and a containers.conf of our own
(runtime, ulimits the host allows), a base image made with debootstrap because no image registry is
reachable, the host's CA bundle mounted into the build. All of it lives in
scripts/container-build.sh, which these fixtures call, so a developer can run the same build.

Skipped only when podman is missing and CI is not set; under CI a missing podman fails the run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT.parent / "shared" / "corpus"
ARTIFACTS = ROOT / "test-artifacts" / "container"
IMAGE = os.environ.get("RAG_TEST_IMAGE", "localhost/rag:test")
BASE_IMAGE = os.environ.get("RAG_BASE_IMAGE", "localhost/rag-base:bookworm")
BUILD_TIMEOUT_S = 2400
HEALTHY_TIMEOUT_S = 240

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
"""

# Name prefix of everything the tests create, unique per run so parallel runs never collide.
PREFIX = f"rag-ct-{os.getpid()}"


@dataclass
class Podman:
    """The podman command with this run's CONTAINERS_CONF, logging every call."""

    env: dict[str, str]
    log: Path
    timings: dict[str, float] = field(default_factory=dict)

    def run(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["podman", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        with self.log.open("a", encoding="utf-8") as out:
            out.write(f"$ podman {' '.join(args)}\n-> {result.returncode}\n{result.stdout[-4000:]}")
            out.write(f"{result.stderr[-4000:]}\n")
        if check and result.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(args)} failed ({result.returncode}): {result.stderr[-2000:]}"
            )
        return result

    def exec_json(self, container: str, *args: str, timeout: float = 600) -> Any:
        result = self.run("exec", container, *args, timeout=timeout)
        return json.loads(result.stdout)

    def healthy(self, container: str) -> bool:
        """One run of the image's HEALTHCHECK (no systemd here, so nothing runs it on a timer)."""
        return self.run("healthcheck", "run", container, check=False, timeout=60).returncode == 0

    def wait_healthy(self, container: str, url: str, timeout: float = HEALTHY_TIMEOUT_S) -> float:
        """Seconds until the healthcheck passes and /healthz says the startup sync is done."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            state = self.run("inspect", "--format", "{{.State.Status}}", container, check=False)
            if state.stdout.strip() in {"exited", "stopped"}:
                logs = self.run("logs", "--tail", "40", container, check=False)
                pytest.fail(f"{container} exited:\n{logs.stdout}{logs.stderr}")
            if self.healthy(container):
                sync = httpx.get(f"{url}/healthz", timeout=10).json()["index"]["sync"]
                if sync["state"] == "done":
                    return time.monotonic() - start
            time.sleep(2)
        logs = self.run("logs", "--tail", "40", container, check=False)
        pytest.fail(f"{container} not healthy after {timeout:.0f} s:\n{logs.stdout}{logs.stderr}")

    def remove(self, *containers: str) -> None:
        for name in containers:
            self.run("rm", "--force", "--time", "10", name, check=False, timeout=60)


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    if shutil.which("podman") is None:
        if os.environ.get("CI"):
            pytest.fail("podman is not installed; .ci/run installs podman, runc and debootstrap")
        pytest.skip(
            "podman is not installed (apt-get install podman runc debootstrap docker-compose)"
        )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    conf = tmp_path_factory.mktemp("podman") / "containers.conf"
    conf.write_text(CONTAINERS_CONF, encoding="utf-8")
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    log = ARTIFACTS / "podman.log"
    log.write_text("", encoding="utf-8")
    tool = Podman(env=env, log=log)
    tool.run("info", "--format", "{{.Host.OCIRuntime.Name}}")
    return tool


@pytest.fixture(scope="session")
def image(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The app image, built from this checkout (layers cached by podman between runs)."""
    log = ARTIFACTS / "build.log"
    base_cached = podman.run("image", "exists", BASE_IMAGE, check=False).returncode == 0
    start = time.monotonic()
    with log.open("w", encoding="utf-8") as out:
        result = subprocess.run(
            ["bash", str(ROOT / "scripts" / "container-build.sh"), IMAGE],
            cwd=ROOT,
            env={
                **podman.env,
                "RAG_BASE_IMAGE": BASE_IMAGE,
                "RAG_WORK_DIR": str(tmp_path_factory.mktemp("container-build")),
            },
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=BUILD_TIMEOUT_S,
        )
    podman.timings["build_s"] = time.monotonic() - start
    podman.timings["base_cached"] = float(base_cached)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(encoding="utf-8").splitlines()[-40:])
        pytest.fail(f"the image build failed (full log: {log}):\n{tail}")
    return IMAGE


@pytest.fixture(scope="session")
def documents(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small data/ folder: the shipped welcome note and a two-page menu PDF from the corpus."""
    menu = CORPUS / "menus" / "fosdem-bar-menu.pdf"
    if not menu.is_file():
        pytest.fail(f"the shared corpus is missing: expected {menu}")
    folder = tmp_path_factory.mktemp("documents") / "data"
    folder.mkdir()
    shutil.copy(ROOT / "data" / "welcome.md", folder / "welcome.md")
    shutil.copy(menu, folder / menu.name)
    for path in [folder, *folder.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
        if os.geteuid() == 0:  # the app's user in the image owns its volumes (uid 1000)
            os.chown(path, 1000, 1000)
    return folder


@pytest.fixture(scope="session")
def timings(podman: Podman) -> Iterator[dict[str, float]]:
    """Measured seconds per step, written to test-artifacts/container/timings.json at the end."""
    yield podman.timings
    (ARTIFACTS / "timings.json").write_text(
        json.dumps(podman.timings, indent=2) + "\n", encoding="utf-8"
    )
