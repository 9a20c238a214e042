"""The answerability decision's thresholds, and what an embedder's cosines mean to it: each embedder carries one."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Calibration:
    """Thresholds of the answerability decision (rag.evidence.select), per embedder.

    Evidence scores mix term coverage with the embedder's cosine of question and span, and the
    threshold was chosen on the bundled MiniLM, whose unrelated texts score near 0. Another
    embedder's cosines sit elsewhere (multilingual-e5's unrelated texts score 0.7-0.8), so each
    embedder declares, next to its model (rag/embeddings/), how its cosines map onto MiniLM's
    scale: the cosine of unrelated text (`similarity_floor`) becomes 0 and `similarity_ceiling`
    becomes 1 (a model whose related texts score lower than MiniLM's has a ceiling below 1), and
    its own threshold. bench/answers.py --calibrate-only measures them per embedder; README
    "Embedders" has the figures.
    """

    min_confidence: float = 0.34
    similarity_floor: float = 0.0  # the typical cosine of unrelated texts, which counts as 0
    similarity_ceiling: float = 1.0  # the cosine that counts as 1 (and above it)
    max_units: int = 6  # evidence spans handed to the model
    max_per_chunk: int = 3
    embed_limit: int = 32  # spans embedded per question (the most promising by keywords and rank)

    def similarity(self, cosine: float) -> float:
        """A cosine on the common scale: 0 at the floor (and below), 1 at the ceiling (and above)."""
        scaled = (cosine - self.similarity_floor) / (
            self.similarity_ceiling - self.similarity_floor
        )
        return min(1.0, max(0.0, scaled))


# MiniLM's (the default embedder's), and the one of an embedder that declares none
# (sentence-transformers models, Ollama).
DEFAULT_CALIBRATION = Calibration()
