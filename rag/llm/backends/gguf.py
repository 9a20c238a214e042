"""RAG_LLM=gguf: any GGUF file (RAG_GGUF_PATH; unset: the shipped SmolLM2 file), in-process."""

from __future__ import annotations

from rag.config import Settings
from rag.errors import ConfigError
from rag.llm.in_process import GGUFLLM, build_in_process, find_embedded_gguf, in_process_backend


def build_gguf(settings: Settings) -> GGUFLLM:
    """The file, loaded on first use; fails now when the file or the runtime is missing."""
    from rag.llm.ik_llama import check_gguf_file

    if settings.gguf_path is None:
        path = find_embedded_gguf()
    else:
        path = settings.gguf_path.expanduser()
        try:
            check_gguf_file(path)
        except ConfigError as exc:
            raise ConfigError(f"RAG_GGUF_PATH: {exc}") from None
    return build_in_process(settings, "gguf", path, path.name)


BACKEND = in_process_backend("gguf", build_gguf)
