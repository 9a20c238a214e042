"""The bundled MiniLM: a BERT sentence embedder on onnxruntime, its graph built from the safetensors (no torch)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr

from rag.calibration import DEFAULT_CALIBRATION, Calibration
from rag.config import Settings
from rag.embeddings.base import InProcessEmbedding
from rag.errors import BackendError
from rag.runtime import MODEL_LOADING

logger = logging.getLogger(__name__)

# Free space, beyond the graph itself, that a disk must keep for the ONNX graph to be stored on it
# (a small storage volume keeps the graph in memory instead: the index needs the room).
GRAPH_ROOM_MARGIN_MB = 256
# The answerability thresholds were chosen on MiniLM's cosines (bench/answers.py): it is the
# reference scale, on which the other embedders' cosines are put (rag.calibration).
CALIBRATION = DEFAULT_CALIBRATION


def build(settings: Settings, name: str, folder: Path) -> OnnxEmbedding:
    return OnnxEmbedding(
        model_name=name,
        model_path=str(folder),
        cache_dir=str(settings.storage_dir / "models" / "onnx"),
        encode_batch_size=settings.embed_batch_size,
        threads=settings.embed_threads,
    )


class OnnxEmbedding(InProcessEmbedding):
    """A BERT sentence embedder run on onnxruntime: the same vectors as sentence-transformers
    (cosine >= 0.999, tests/test_embeddings.py) without importing torch, about twice as fast.

    The ONNX graph is built from the model's safetensors on first use (under 1 s) and kept in
    `cache_dir` (rag.embeddings.onnx_bert); where that folder cannot be written it is built in memory.
    """

    calibration: Calibration = Field(default=CALIBRATION, exclude=True)
    model_path: str
    cache_dir: str
    encode_batch_size: int = 8
    threads: int = 0
    _runtime: Any = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "OnnxEmbedding"

    def load(self) -> Any:
        if self._runtime is None:
            with MODEL_LOADING:
                if self._runtime is None:
                    self._runtime = _OnnxRuntime(
                        Path(self.model_path), Path(self.cache_dir), self.threads
                    )
        return self._runtime

    @property
    def dimension(self) -> int:
        return self.load().dimension

    def _encode(self, texts: list[str]) -> list[list[float]]:
        return self.load().encode(texts, self.encode_batch_size).tolist()


class _OnnxRuntime:
    """The loaded tokenizer and onnxruntime session of one model folder."""

    def __init__(self, model_dir: Path, cache_dir: Path, threads: int) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        from rag.embeddings.onnx_bert import build_onnx, graph_bytes, read_configs

        if not (model_dir / "model.safetensors").is_file():
            raise BackendError(f"cannot load embedder: no model.safetensors in {model_dir}")
        _, _, max_length = read_configs(model_dir)
        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        # tokenizer.json pads every text to 128; like sentence-transformers we truncate at the
        # model's max_seq_length and pad each batch to its own longest text.
        tokenizer.enable_truncation(max_length=max_length)
        tokenizer.no_padding()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads  # 0: one per core
        options.inter_op_num_threads = 1  # one chain of operators: parallelism is inside them
        try:
            graph: str | bytes = str(
                build_onnx(model_dir, cache_dir, spare_bytes=GRAPH_ROOM_MARGIN_MB * 2**20)
            )
        except OSError as error:  # read-only, or a small disk: build it for this process only
            logger.info(
                "cannot keep the ONNX embedder in %s (%s); building it in memory", cache_dir, error
            )
            graph = graph_bytes(model_dir)
        self.session = onnxruntime.InferenceSession(
            graph, options, providers=["CPUExecutionProvider"]
        )
        self.tokenizer = tokenizer
        self.dimension = int(self.session.get_outputs()[0].shape[1])

    def encode(self, texts: Sequence[str], batch_size: int) -> Any:
        import numpy as np

        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=True)
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        # Longest first in batches, each padded only to its own longest text: short texts do not
        # pay for long ones.
        order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            width = len(encodings[batch[0]].ids)
            ids = np.zeros((len(batch), width), dtype=np.int64)  # 0 is [PAD]
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, i in enumerate(batch):
                length = len(encodings[i].ids)
                ids[row, :length] = encodings[i].ids
                mask[row, :length] = 1
            vectors[batch] = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return vectors
