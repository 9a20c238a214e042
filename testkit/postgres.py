"""A real PostgreSQL server for tests and benches: Debian's `postgresql` binaries, a fresh cluster on a free local port."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from testkit.app import free_port

HOST = "127.0.0.1"
USER = "rag"
DEBIAN_BINARIES = Path("/usr/lib/postgresql")


@dataclass(frozen=True)
class PostgresServer:
    port: int
    data: Path
    log: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@{HOST}:{self.port}/{database}"


def postgres_bin() -> Path:
    """The folder of initdb and pg_ctl: Debian keeps them out of PATH, under its version."""
    versions = sorted(DEBIAN_BINARIES.glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if versions:
        return versions[-1].parent
    found = shutil.which("initdb")
    if found is None:
        raise RuntimeError("no PostgreSQL: install Debian's `postgresql` package (.ci/run does)")
    return Path(found).parent


def _as_server_user(command: list[str]) -> list[str]:
    """Postgres refuses to run as root: as root (CI), run it as the package's `postgres` user."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@contextmanager
def run_postgres(directory: Path) -> Iterator[PostgresServer]:
    """initdb a cluster under `directory` (trust logins for USER, on 127.0.0.1 only), start it,
    stop it after."""
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(directory, owner.pw_uid, owner.pw_gid)
    binaries = postgres_bin()
    data, log, port = directory / "data", directory / "postgres.log", free_port(HOST)
    initdb = [str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", USER]
    subprocess.run(
        _as_server_user([*initdb, "-E", "UTF8", "--no-sync"]), check=True, capture_output=True
    )
    options = f"-p {port} -c listen_addresses={HOST} -k {directory} -c fsync=off"
    ctl = [str(binaries / "pg_ctl"), "-D", str(data), "-l", str(log)]
    subprocess.run(
        _as_server_user([*ctl, "-o", options, "-w", "start"]), check=True, capture_output=True
    )
    try:
        yield PostgresServer(port, data, log)
    finally:
        subprocess.run(
            _as_server_user([*ctl, "-m", "immediate", "-w", "stop"]), capture_output=True
        )


def create_database(server: PostgresServer, name: str) -> str:
    """A new, empty database on the server; its URL."""
    import psycopg

    with psycopg.connect(server.url(), autocommit=True) as db:
        db.execute(f'CREATE DATABASE "{name}"')
    return server.url(name)
