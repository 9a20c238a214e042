"""An error nobody expected is one line for the person and a traceback in storage/logs/rag.log."""

from __future__ import annotations

from pathlib import Path

import pytest

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
