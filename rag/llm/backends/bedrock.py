"""RAG_LLM=bedrock: Amazon Bedrock's Converse API (the `bedrock` extra and AWS credentials)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rag.config import Settings
from rag.errors import ConfigError, RagError
from rag.llm import Backend, timed_out, unreachable

if TYPE_CHECKING:
    from llama_index.core.llms import LLM


def build_bedrock(settings: Settings) -> LLM:
    """Amazon Bedrock's Converse API (needs the `bedrock` extra and AWS credentials)."""
    try:
        from llama_index.llms.bedrock_converse import BedrockConverse
    except ImportError as exc:
        raise ConfigError(
            "the bedrock backend needs the extra package: pip install .[bedrock] "
            f"(missing: {exc.name or exc})"
        ) from exc
    try:
        return BedrockConverse(
            model=settings.bedrock_model,
            region_name=settings.bedrock_region,
            temperature=settings.temperature,
            max_tokens=settings.max_new_tokens,
            timeout=settings.llm_timeout_s,
            max_retries=2,
        )
    except ImportError as exc:
        raise ConfigError(
            f"the bedrock backend needs boto3: pip install .[bedrock] ({exc})"
        ) from exc


def owns(llm: LLM) -> bool:
    return type(llm).__module__.startswith("llama_index.llms.bedrock_converse")


def error(exc: BaseException, llm: LLM) -> RagError | None:
    from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

    if isinstance(exc, ReadTimeoutError | ConnectTimeoutError):
        return timed_out(llm)
    if isinstance(exc, EndpointConnectionError):
        return unreachable(llm, exc)
    return None


BACKEND = Backend(
    build=build_bedrock,
    owns=owns,
    limit_output=lambda llm, max_tokens: llm.model_copy(update={"max_tokens": max_tokens}),
    error=error,
)
