"""Ingest and sync contracts of `rag ingest|search|status|remove` (DESIGN.md), on the real embedder and Chroma."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rag.cli import main
from rag.embeddings import bundled_model_dir
from rag.index import Index
from testkit.pdf import write_pdf


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def chunk_ids(index: Index) -> list[str]:
    return sorted(index.collection().collection.get(include=[])["ids"])


def test_folder_is_indexed_with_file_and_page(index: Index, data_dir: Path) -> None:
    write_pdf(
        data_dir / "guide.pdf",
        ["Introduction to the guide", "The lighthouse keeper feeds the cats at dawn"],
    )
    (data_dir / "notes").mkdir()
    (data_dir / "notes" / "todo.txt").write_text("Buy oat milk and fresh basil for the pesto.")
    report = index.ingest([data_dir])
    assert sorted(report.indexed) == ["guide.pdf", "notes/todo.txt"] and report.ok
    top = index.search("who feeds the cats?", 1)[0]
    assert (top.file, top.page) == ("guide.pdf", 2)
    top = index.search("pesto ingredients", 1)[0]
    assert (top.file, top.page) == ("notes/todo.txt", None)


def test_unchanged_files_are_skipped_without_new_chunks(index: Index, data_dir: Path) -> None:
    (data_dir / "a.txt").write_text("Apples are red and crunchy.")
    index.ingest([data_dir])
    before = chunk_ids(index)
    report = index.ingest([data_dir])
    assert report.unchanged == ["a.txt"] and not report.indexed and report.chunks_written == 0
    assert chunk_ids(index) == before


def test_changed_file_replaces_its_old_chunks(index: Index, data_dir: Path) -> None:
    doc = data_dir / "policy.txt"
    doc.write_text("The office closes at five o'clock on Fridays.")
    index.ingest([data_dir])
    doc.write_text("Remote work is allowed on Mondays and Tuesdays.")
    report = index.ingest([data_dir])
    assert report.indexed == ["policy.txt"]
    texts = [source.text for source in index.search("office hours Friday", 5)]
    assert texts == ["Remote work is allowed on Mondays and Tuesdays."]


def test_files_gone_from_a_folder_are_removed(index: Index, data_dir: Path) -> None:
    (data_dir / "keep.txt").write_text("Keep this document about gardening.")
    (data_dir / "drop.txt").write_text("Drop this document about sailing.")
    index.ingest([data_dir])
    (data_dir / "drop.txt").unlink()
    report = index.ingest([data_dir])
    assert report.removed == ["drop.txt"]
    assert {source.file for source in index.search("sailing", 5)} == {"keep.txt"}


def test_adding_one_file_never_deletes_others(index: Index, data_dir: Path, tmp_path: Path) -> None:
    (data_dir / "first.txt").write_text("The first document is about volcanoes.")
    index.ingest([data_dir])
    extra = tmp_path / "extra.txt"
    extra.write_text("An extra document about glaciers.")
    report = index.ingest([extra])
    assert report.indexed == ["extra.txt"] and not report.removed
    assert {s.file for s in index.search("volcanoes glaciers", 5)} == {"first.txt", "extra.txt"}


def test_node_ids_are_deterministic(settings, embedder, data_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (data_dir / "same.txt").write_text(
        "Deterministic ids mean nothing is ever indexed twice. " * 40
    )
    ids = []
    for run_number in range(2):
        other = settings.model_copy(update={"storage_dir": tmp_path / f"store{run_number}"})
        index = Index(other, embedder=embedder)
        index.ingest([data_dir])
        ids.append(chunk_ids(index))
        index.close()
    assert ids[0] == ids[1] and len(ids[0]) > 1


def test_the_next_changed_file_is_parsed_while_this_one_is_embedded(
    index: Index, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rag.parsing import ParseWorker

    (data_dir / "a.txt").write_text("Apricots ripen in July.")
    (data_dir / "b.txt").write_text("Blueberries like acid soil.")
    (data_dir / "c.txt").write_text("Cherries need a cold winter.")
    index.ingest([data_dir / "b.txt"])  # unchanged in the sync below: never sent to the parser
    events: list[str] = []
    submit, embed = ParseWorker.submit, type(index.embedder).get_text_embedding_batch

    def recorded_submit(worker: ParseWorker, data: bytes, name: str) -> None:
        events.append(f"parse {name}")
        submit(worker, data, name)

    def recorded_embed(embedder, texts, **kwargs):  # type: ignore[no-untyped-def]
        events.append("embed " + texts[0].split("\n")[0])  # a chunk starts with its file's title
        return embed(embedder, texts, **kwargs)

    monkeypatch.setattr(ParseWorker, "submit", recorded_submit)
    monkeypatch.setattr(type(index.embedder), "get_text_embedding_batch", recorded_embed)
    report = index.ingest([data_dir])
    assert report.indexed == ["a.txt", "c.txt"] and report.unchanged == ["b.txt"]
    assert events == ["parse a.txt", "parse c.txt", "embed a", "embed c"]


def test_bad_files_are_reported_and_the_rest_indexed(
    capsys, data_dir: Path, settings, corpus: Path
) -> None:  # type: ignore[no-untyped-def]
    storage = str(settings.storage_dir)
    (data_dir / "good.txt").write_text("Solar panels work best facing south.")
    assert run(capsys, "ingest", str(data_dir), "--storage", storage)[0] == 0
    bad = data_dir.parent / "incoming"
    bad.mkdir()
    for name in [
        "empty-0-bytes.pdf",
        "encrypted-open-password-acrobat.pdf",
        "image-only-photo.pdf",
        "page-tree-cycle.pdf",
    ]:
        shutil.copy(corpus / "pdfs" / "bad" / name, bad / name)
    write_pdf(bad / "fine.pdf", ["Wind turbines need regular maintenance"])
    code, out, err = run(capsys, "ingest", str(bad), "--storage", storage)
    assert code == 1
    failed = [line for line in err.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 4
    assert "failed: encrypted-open-password-acrobat.pdf: the PDF needs a password" in err
    assert "failed: image-only-photo.pdf: the PDF has no extractable text" in err
    assert "1 indexed" in out and "4 failed" in out
    code, out, _ = run(capsys, "search", "solar panels", "--json", "-k", "5", "--storage", storage)
    files = {hit["file"] for hit in json.loads(out)}
    assert files == {"good.txt", "fine.pdf"}


def test_search_json_contract(capsys, data_dir: Path, settings) -> None:  # type: ignore[no-untyped-def]
    write_pdf(data_dir / "menu.pdf", ["Soups", "Tomato soup 4.50 EUR\nOnion soup 5.00 EUR"])
    (data_dir / "about.md").write_text("# About\nWe are a small family restaurant since 1982.")
    storage = str(settings.storage_dir)
    assert run(capsys, "ingest", str(data_dir), "--storage", storage)[0] == 0
    code, out, _ = run(
        capsys, "search", "onion soup price", "-k", "2", "--json", "--storage", storage
    )
    hits = json.loads(out)
    assert code == 0 and len(hits) == 2
    assert set(hits[0]) == {"file", "page", "score", "text"}
    assert (hits[0]["file"], hits[0]["page"]) == ("menu.pdf", 2)
    assert hits[0]["score"] >= hits[1]["score"]
    assert {hit["file"]: hit["page"] for hit in hits}.get("about.md") is None


def test_status_json_contract(capsys, data_dir: Path, settings) -> None:  # type: ignore[no-untyped-def]
    (data_dir / "one.txt").write_text("One small file.")
    storage = str(settings.storage_dir)
    run(capsys, "ingest", str(data_dir), "--storage", storage, "--collection", "notes")
    code, out, _ = run(capsys, "status", "--json", "--storage", storage)
    status = json.loads(out)
    assert code == 0
    assert {"store", "embedder", "collections"} <= set(status)
    assert status["embedder"] == "bundled:all-MiniLM-L6-v2"
    (notes,) = [c for c in status["collections"] if c["name"] == "notes"]
    assert (notes["files"], notes["chunks"]) == (1, 1)


def test_collections_are_separate(index: Index, data_dir: Path) -> None:
    (data_dir / "menu.txt").write_text("Lasagne 12 EUR, tiramisu 6 EUR.")
    index.ingest([data_dir], collection="menus")
    assert index.search("lasagne", 3, collection="menus")
    assert index.search("lasagne", 3, collection="default") == []


def test_remove_drops_one_file(capsys, data_dir: Path, settings) -> None:  # type: ignore[no-untyped-def]
    (data_dir / "a.txt").write_text("Alpha document about owls.")
    (data_dir / "b.txt").write_text("Beta document about foxes.")
    storage = str(settings.storage_dir)
    run(capsys, "ingest", str(data_dir), "--storage", storage)
    code, out, _ = run(capsys, "remove", "a.txt", "--storage", storage)
    assert code == 0 and "removed a.txt" in out
    _, out, _ = run(capsys, "search", "owls", "--json", "--storage", storage)
    assert {hit["file"] for hit in json.loads(out)} == {"b.txt"}
    code, _, err = run(capsys, "remove", "a.txt", "--storage", storage)
    assert code == 1 and "a.txt: not in collection" in err


def test_usage_errors_exit_2(capsys, settings) -> None:  # type: ignore[no-untyped-def]
    storage = str(settings.storage_dir)
    assert run(capsys, "ingest", "/no/such/folder", "--storage", storage)[0] == 2
    assert run(capsys, "search", "x", "--collection", "no way!", "--storage", storage)[0] == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["search"])
    assert exit_info.value.code == 2


def test_size_limit_refuses_big_files(capsys, data_dir: Path, settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    (data_dir / "big.txt").write_text("word " * 300_000)
    (data_dir / "small.txt").write_text("A small file is fine.")
    monkeypatch.setenv("RAG_MAX_FILE_MB", "1")
    code, out, err = run(capsys, "ingest", str(data_dir), "--storage", str(settings.storage_dir))
    assert code == 1
    assert "failed: big.txt: the file is 1.4 MB, over the limit of 1 MB (RAG_MAX_FILE_MB)" in err
    assert "1 indexed" in out


def test_other_embedder_is_refused_until_rebuild(
    capsys, data_dir: Path, settings, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    (data_dir / "doc.txt").write_text("Fingerprints keep vector spaces apart.")
    storage = str(settings.storage_dir)
    assert run(capsys, "ingest", str(data_dir), "--storage", storage)[0] == 0
    # The same weights under another name count as another embedder, as a renamed model would.
    monkeypatch.setenv("RAG_EMBED_MODEL", str(bundled_model_dir("all-MiniLM-L6-v2")))
    code, _, err = run(capsys, "search", "vector spaces", "--storage", storage)
    assert code == 1
    assert "was built with bundled:all-MiniLM-L6-v2 (384 dims)" in err
    assert "rag ingest --rebuild" in err
    code, out, _ = run(capsys, "ingest", "--rebuild", "--storage", storage)
    assert code == 0 and "1 indexed" in out
    code, out, _ = run(capsys, "search", "vector spaces", "--json", "--storage", storage)
    assert code == 0 and json.loads(out)[0]["file"] == "doc.txt"


def test_ingest_without_paths_syncs_the_data_folder(
    capsys, data_dir: Path, settings, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    (data_dir / "x.txt").write_text("The data folder is the default.")
    monkeypatch.setenv("RAG_DATA_DIR", str(data_dir))
    monkeypatch.setenv("RAG_STORAGE_DIR", str(settings.storage_dir))
    code, out, _ = run(capsys, "ingest")
    assert code == 0 and "1 indexed" in out


def test_a_store_that_lost_its_chunks_is_refilled(
    index: Index, data_dir: Path, settings, embedder
) -> None:  # type: ignore[no-untyped-def]
    """Switching to an empty Chroma server (or wiping chroma/) keeps the manifest: re-index."""
    (data_dir / "a.txt").write_text("Lighthouses guide ships along the coast.")
    index.ingest([data_dir])
    index.client.delete_collection("default")
    fresh = Index(settings, embedder=embedder)
    report = fresh.ingest([data_dir])
    assert report.indexed == ["a.txt"] and not report.unchanged
    assert fresh.search("lighthouses", 1)[0].file == "a.txt"
    fresh.close()
