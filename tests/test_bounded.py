"""What chats show is kept under a size bound: the oldest stored files go first."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from rag.bounded import BoundedFolder
from rag.elements import LocalFileStore


def write(path: Path, size: int, age: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, ns=(age, age))
    return path


def test_the_oldest_files_go_until_the_folder_fits(tmp_path: Path) -> None:
    folder = BoundedFolder(tmp_path, max_bytes=2500)
    write(tmp_path / "a", 1000, age=1)
    write(tmp_path / "sub" / "b", 1000, age=2)
    newest = write(tmp_path / "c", 1000, age=3)
    folder.added(1000, keep=newest)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["b", "c"]


def test_the_file_just_written_is_kept_even_when_alone_over_the_bound(tmp_path: Path) -> None:
    folder = BoundedFolder(tmp_path, max_bytes=100)
    big = write(tmp_path / "big", 1000, age=1)
    folder.added(1000, keep=big)
    assert big.exists()


def test_the_element_store_stays_under_its_bound(tmp_path: Path) -> None:
    store = LocalFileStore(tmp_path / "elements", max_bytes=3000)

    async def store_answers() -> None:
        for n in range(10):  # ten answers, each storing one 1 KB citation
            await store.upload_file(f"user/thread/{n}.pdf", b"%" * 1000)
            await asyncio.sleep(0.01)  # distinct modification times

    asyncio.run(store_answers())
    kept = sorted(p.name for p in (tmp_path / "elements").rglob("*") if p.is_file())
    assert kept == ["7.pdf", "8.pdf", "9.pdf"]
