"""Several bundled models as one embedder: a passage is stored once as all their vectors side by side, and a question searches through each model's part."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Any

from pydantic import Field, PrivateAttr

from rag.calibration import Calibration
from rag.embeddings.base import InProcessEmbedding

QUESTIONS_KEPT = 64  # questions whose per-model vectors are kept (a few per chat turn)


def spread_weights(calibrations: list[Calibration]) -> list[float]:
    """Each model's share of the joint cosine, so that each counts alike: a model whose cosines
    spread over a narrow band (e5: unrelated 0.70, related near 1) weighs more than one whose
    cosines spread wide (USE-m: 0 to 0.75). Shares sum to 1."""
    inverse = [1 / (c.similarity_ceiling - c.similarity_floor) for c in calibrations]
    return [value / sum(inverse) for value in inverse]


def joint_calibration(
    calibrations: list[Calibration], shares: list[float], min_confidence: float
) -> Calibration:
    """The joint cosine is the share-weighted sum of the models' cosines, so its floor and ceiling
    are theirs, weighted alike; the threshold is the ensemble's own (measured like a model's)."""
    return Calibration(
        min_confidence=min_confidence,
        similarity_floor=sum(
            s * c.similarity_floor for s, c in zip(shares, calibrations, strict=True)
        ),
        similarity_ceiling=sum(
            s * c.similarity_ceiling for s, c in zip(shares, calibrations, strict=True)
        ),
    )


class EnsembleEmbedding(InProcessEmbedding):
    """Models embedded side by side: a text's vector is each model's unit vector scaled by the
    square root of its share, one after the other (a unit vector again), so the cosine of two
    texts is the share-weighted sum of the models' cosines.

    Search asks each model on its own (`query_views`: a model's question vector in its own slots,
    zeros elsewhere, which ranks stored vectors by that model's cosine alone) and fuses the lists
    by rank (rag.retrieve). Rank fusion keeps what either model finds: bench/retrieval.py measured
    it above the joint cosine across languages (hit@5 0.78 against 0.68 for USE-m with e5).
    The joint vector is what everything else uses (the evidence's question-to-span cosine).
    """

    parts: list[InProcessEmbedding] = Field(exclude=True)
    shares: list[float] = Field(exclude=True)
    _sizes: list[int] | None = PrivateAttr(default=None)
    # The last questions' vectors, per model: search and the evidence ask for the same question.
    _questions: OrderedDict[str, list[list[float]]] = PrivateAttr(default_factory=OrderedDict)
    _questions_lock: Any = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, parts: list[InProcessEmbedding], min_confidence: float, **data: Any) -> None:
        calibrations = [part.calibration for part in parts]
        shares = spread_weights(calibrations)
        data.setdefault("calibration", joint_calibration(calibrations, shares, min_confidence))
        super().__init__(parts=parts, shares=shares, **data)

    @classmethod
    def class_name(cls) -> str:
        return "EnsembleEmbedding"

    def sizes(self) -> list[int]:
        """Each model's vector size (loads them)."""
        if self._sizes is None:
            self._sizes = [part.dimension for part in self.parts]
        return self._sizes

    @property
    def dimension(self) -> int:
        return sum(self.sizes())

    def _join(self, per_part: list[list[list[float]]]) -> list[list[float]]:
        scales = [math.sqrt(share) for share in self.shares]
        return [
            [scale * value for scale, vector in zip(scales, row, strict=True) for value in vector]
            for row in zip(*per_part, strict=True)
        ]

    def _encode(self, texts: list[str]) -> list[list[float]]:
        return self._join([part._encode(texts) for part in self.parts])

    def _encode_queries(self, queries: list[str]) -> list[list[float]]:
        per_query = [self._question(query) for query in queries]
        return self._join([[vectors[n] for vectors in per_query] for n in range(len(self.parts))])

    def query_views(self, query: str) -> list[list[float]]:
        """One search vector per model: its question vector in its slots, zeros in the others'."""
        sizes = self.sizes()
        views = []
        for index, vector in enumerate(self._question(query)):
            before, after = sum(sizes[:index]), sum(sizes[index + 1 :])
            views.append([0.0] * before + vector + [0.0] * after)
        return views

    def _question(self, query: str) -> list[list[float]]:
        """Each model's vector of a question, computed once for the few last ones: a question is
        searched (`query_views`) and then compared with its evidence (the joint vector), and e5
        takes tens of milliseconds a question."""
        with self._questions_lock:
            vectors = self._questions.get(query)
            if vectors is not None:
                self._questions.move_to_end(query)
                return vectors
        vectors = [part._encode_queries([query])[0] for part in self.parts]
        with self._questions_lock:
            self._questions[query] = vectors
            while len(self._questions) > QUESTIONS_KEPT:
                self._questions.popitem(last=False)
        return vectors
