"""HTTP for the server backends' health checks, and short reasons for what went wrong."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from rag.config import redact_url
from rag.errors import BackendError

# How long a health check may take: short, so a dead server is reported at once.
HEALTH_TIMEOUT_S = 5.0


def get_json(
    url: str,
    timeout: float,
    *,
    unreachable: Callable[[str], str],
    what: str,
    headers: dict[str, str] | None = None,
) -> Any:
    """GET a JSON document; BackendError with `unreachable(reason)` when nothing answers, and
    one line naming `what` for a refused key, an HTTP error or an answer that is not JSON."""
    try:
        response = httpx.get(url, timeout=timeout, headers=headers, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise BackendError(unreachable(reason(exc, timeout))) from exc
    if response.status_code in (401, 403):
        raise BackendError(
            f"{what} at {redact_url(url)} refused the API key (HTTP {response.status_code})"
        )
    if response.status_code >= 400:
        raise BackendError(
            f"{what} at {redact_url(url)} answered HTTP {response.status_code}: "
            f"{one_line(response.text)[:200]}"
        )
    try:
        return response.json()
    except ValueError as exc:
        raise BackendError(
            f"{redact_url(url)} did not answer JSON; is that really {what}?"
        ) from exc


def reason(exc: BaseException, timeout: float | None = None) -> str:
    """A short human reason for a transport failure."""
    if not isinstance(exc, httpx.HTTPError) and isinstance(exc.__context__, httpx.HTTPError):
        exc = exc.__context__  # a client's own wrapper hid the reason (the ollama client does)
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within {timeout:g} s" if timeout else "timed out"
    text = str(exc) or type(exc).__name__
    lowered = text.lower()
    if "refused" in lowered:
        return "connection refused"
    if "name or service not known" in lowered or "nodename nor servname" in lowered:
        return "unknown host"
    return one_line(text)


def one_line(text: str) -> str:
    return " ".join(text.split())
