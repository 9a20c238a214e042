"""Uploads: one set of limits and messages for the chat and the API, and how the bytes are kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.config import Settings
from rag.errors import FileRefused, FileTooLarge
from rag.uploads import check_upload, keep, too_many_files


def test_a_wrong_type_and_a_big_file_are_refused_naming_the_file_and_the_setting(
    tmp_path: Path,
) -> None:
    settings = Settings(storage_dir=tmp_path, upload_max_mb=1)
    with pytest.raises(FileRefused, match=r"^setup\.exe: ") as refused:
        check_upload("setup.exe", 10, settings)
    assert not isinstance(refused.value, FileTooLarge)
    with pytest.raises(
        FileTooLarge,
        match=r"^menu\.pdf: the file is 2\.0 MB, over the upload limit of 1 MB \(RAG_UPLOAD_MAX_MB\)$",
    ):
        check_upload("menu.pdf", 2 * 2**20, settings)
    check_upload("menu.pdf", 2**20, settings)
    assert "at most 3 per message (RAG_UPLOAD_MAX_FILES)" in too_many_files(
        5, Settings(upload_max_files=3)
    )


def test_the_same_bytes_kept_twice_are_one_file_named_by_its_content(tmp_path: Path) -> None:
    first = keep(b"Soup of the day: 4.50", tmp_path / "chat", "../Menu.TXT")
    again = keep(b"Soup of the day: 4.50", tmp_path / "chat", "menu copy.txt")
    assert first == again and first.parent == tmp_path / "chat" and first.suffix == ".txt"
    assert first.read_bytes() == b"Soup of the day: 4.50"
    assert [p.name for p in (tmp_path / "chat").iterdir()] == [first.name]  # no .part left
