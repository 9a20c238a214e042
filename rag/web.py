"""HTTP pieces the chat server needs beyond the chat itself: the health route, the upload limit, the page rewrite."""

from __future__ import annotations

import gzip
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger(__name__)

# Decides whether a request may see something; the UI layer knows how its users log in.
RequestCheck = Callable[[Any], Awaitable[bool]]

# Routes web frameworks add on their own: an API explorer that loads its scripts from a CDN and
# publishes every route's schema. Not part of the product.
FRAMEWORK_ROUTES = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})


def install_routes(app: Any, health: Callable[[], dict[str, Any]], may_see: RequestCheck) -> None:
    """Add `GET /healthz` ahead of the UI's catch-all route, and the private-page middleware.

    `health()` returns a JSON-able dict; it runs in a thread so a busy index never stalls the loop.
    Anyone may learn that the app is up (container health checks carry no login); the details
    (model, store, collections) need `may_see(request)`.
    """
    from fastapi.responses import JSONResponse
    from starlette.routing import Route

    async def healthz(request: Any) -> JSONResponse:
        import asyncio

        if not await may_see(request):
            return JSONResponse({"status": "ok"})
        try:
            return JSONResponse(await asyncio.to_thread(health))
        except Exception as error:  # liveness must answer: the process is up, say what broke
            logger.exception("/healthz details failed")
            return JSONResponse({"status": "ok", "error": f"{type(error).__name__}: {error}"})

    app.router.routes[:] = [
        route for route in app.router.routes if getattr(route, "path", None) not in FRAMEWORK_ROUTES
    ]
    app.router.routes.insert(0, Route("/healthz", healthz, methods=["GET"]))
    app.add_middleware(PrivatePageMiddleware)


class UploadLimitMiddleware:
    """ASGI middleware: refuse an upload to `path_suffix` that is too big, without keeping it.

    The UI's upload route reads the whole body into memory before it checks the size, so a huge
    body must be stopped here, from its declared length. A body without a declared length
    (chunked) is refused too: browsers always declare it, and the server never reads more than
    the declared length. The refused body is read and dropped piece by piece (memory stays flat),
    so the client sees the 413 instead of a connection reset. An empty file gets a 422 with its
    reason.
    """

    def __init__(self, app: Any, path_suffix: str, max_bytes: int, limit_text: str) -> None:
        self.app = app
        self.path_suffix = path_suffix
        self.max_bytes = max_bytes
        self.limit_text = limit_text

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        is_upload = scope["type"] == "http" and scope["method"] == "POST"
        if is_upload and scope["path"].endswith(self.path_suffix):
            headers = dict(scope.get("headers", []))
            length = headers.get(b"content-length", b"").decode("latin-1").strip()
            if not length.isdigit():
                await self._refuse(receive, send, 411, "uploads must declare their Content-Length")
                return
            if int(length) > self.max_bytes:
                await self._refuse(receive, send, 413, f"the file is over {self.limit_text}")
                return
            await self._upload(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _upload(self, scope: Any, receive: Any, send: Any) -> None:
        """Pass the upload on; the UI's route fails on an empty file with a ValueError (a 500
        with a traceback): answer 422 with the reason instead, as for any refused file."""
        answered = False

        async def watch(message: Any) -> None:
            nonlocal answered
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except ValueError as error:
            if answered:
                raise
            logger.warning("upload refused: %s", error)
            await self._respond(send, 422, "the file is empty (0 bytes) or could not be read")

    async def _refuse(self, receive: Any, send: Any, status: int, detail: str) -> None:
        while True:  # read and drop the body, so the client gets the answer, not a reset
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        await self._respond(send, status, detail)

    @staticmethod
    async def _respond(send: Any, status: int, detail: str) -> None:
        await respond_json(send, status, detail, {"connection": "close"})


async def respond_json(
    send: Any, status: int, detail: str, headers: dict[str, str] | None = None
) -> None:
    """Answer an ASGI request from a middleware: `{"detail": ...}` with `status` and `headers`."""
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(name.encode(), value.encode()) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


# Tags that make a browser contact another host: web fonts, CDN stylesheets, preconnect hints,
# and social-preview URLs. The chat page must load everything from this server.
EXTERNAL_TAG = re.compile(
    r"""<link\b[^>]*\bhref=["']https?://[^"']*["'][^>]*/?>"""
    r"""|<script\b[^>]*\bsrc=["']https?://[^"']*["'][^>]*>\s*</script>"""
    r"""|<meta\b[^>]*\bcontent=["']https?://[^"']*["'][^>]*/?>""",
    re.IGNORECASE | re.DOTALL,
)

# And the browser enforces it: anything not from this origin is refused.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self' ws: wss:; "
    "media-src 'self' blob: data:; worker-src 'self' blob:; frame-src 'self' blob:; "
    "object-src 'none'; base-uri 'self'"
)


def strip_external(html: str) -> str:
    return EXTERNAL_TAG.sub("", html)


class PrivatePageMiddleware:
    """ASGI middleware: HTML pages lose third-party links and gain a same-origin-only policy."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: dict[str, Any] = {}
        body: list[bytes] = []

        async def rewrite(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", []))
                if headers.get(b"content-type", b"").startswith(b"text/html"):
                    held["start"] = message  # wait for the whole page
                    return
                await send(message)
                return
            if message["type"] == "http.response.body" and "start" in held:
                body.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                start = held["start"]
                page = b"".join(body)
                # Sits outside the UI's gzip middleware, so the page may come compressed.
                if dict(start["headers"]).get(b"content-encoding") == b"gzip":
                    page = gzip.decompress(page)
                page = strip_external(page.decode("utf-8", "replace")).encode()
                headers = [
                    (k, v)
                    for k, v in start["headers"]
                    if k not in (b"content-length", b"content-encoding")
                ]
                headers += [
                    (b"content-length", str(len(page)).encode()),
                    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                ]
                await send({**start, "headers": headers})
                await send({"type": "http.response.body", "body": page})
                return
            await send(message)

        await self.app(scope, receive, rewrite)
