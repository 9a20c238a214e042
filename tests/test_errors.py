"""An error nobody expected is one line for the person and a traceback in storage/logs/rag.log."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from rag_cli import cli_env, rag_command, run_rag

from rag import cli


def test_an_unexpected_cli_error_is_one_line_and_the_details_go_to_the_log(
    settings, data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    def broken(index, args):  # type: ignore[no-untyped-def]
        raise KeyError("chroma lost its collection")

    monkeypatch.setitem(cli.COMMANDS, "status", broken)
    code = cli.main(["status", "--storage", str(settings.storage_dir)])
    err = capsys.readouterr().err.strip()
    assert code == cli.EXIT_FAILED
    log = settings.storage_dir / "logs" / "rag.log"
    assert err == (f"rag: internal error: KeyError: 'chroma lost its collection'; details in {log}")
    assert "Traceback" in log.read_text() and "chroma lost its collection" in log.read_text()


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path) -> None:
    # `rag search ... | head`: the pipe is closed before the results are written.
    data = tmp_path / "data"
    data.mkdir()
    (data / "menu.md").write_text("# Bar\n\nChimay Bleue (9°) 3.50 euro\n", encoding="utf-8")
    storage = ["--storage", str(tmp_path / "storage")]
    assert run_rag("ingest", data, *storage, cwd=tmp_path).returncode == 0
    process = subprocess.Popen(
        rag_command("search", "Chimay", *storage),
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait(timeout=300) == cli.EXIT_BROKEN_PIPE
    assert "error" not in err and "Traceback" not in err, err
