"""The files shown in chats (cited PDFs, passages): stored under storage/elements, bounded in size, served to their owners."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rag.bounded import BoundedFolder


class LocalFileStore:
    """Keeps the files shown in chats (cited PDFs, passages) under storage/elements.

    It has the methods Chainlit's data layer calls on a storage client, so saved threads show their
    sources again after a restart; `GET /elements/KEY` serves them back to the browser.
    """

    url_prefix = "/elements"

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.bound = BoundedFolder(self.root, max_bytes)  # every answer stores its citations

    def path(self, key: str) -> Path:
        """The file for a key; keys never escape the folder."""
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ValueError(f"bad element key {key!r}")
        return path

    async def upload_file(
        self,
        object_key: str,
        data: bytes | str,
        mime: str = "application/octet-stream",
        overwrite: bool = True,
        content_disposition: str | None = None,
    ) -> dict[str, Any]:
        path = self.path(object_key)
        path.parent.mkdir(parents=True, exist_ok=True)
        content = data.encode() if isinstance(data, str) else data
        path.write_bytes(content)
        self.bound.added(len(content), keep=path)
        return {"object_key": object_key, "url": f"{self.url_prefix}/{object_key}"}

    async def delete_file(self, object_key: str) -> bool:
        path = self.path(object_key)
        if path.is_file():
            self.bound.removed(path.stat().st_size)
        path.unlink(missing_ok=True)
        return True

    async def get_read_url(self, object_key: str) -> str:
        return f"{self.url_prefix}/{object_key}"

    async def close(self) -> None:
        return None

    def install(self, app: Any, may_read: Callable[[Any, str], Awaitable[int]]) -> None:
        """Serve stored elements, ahead of the UI's catch-all route. `may_read(request, key)`
        answers with a status: 200 (the reader owns the element), 401 (no login), or 404 (a login
        that does not own it: the same answer as for a key that does not exist, so ids of other
        users cannot be probed)."""
        from starlette.responses import FileResponse, Response
        from starlette.routing import Route

        async def serve(request: Any) -> Response:
            key = request.path_params["key"]
            status = await may_read(request, key)
            if status != 200:
                return Response(status_code=status)
            try:
                path = self.path(key)
            except ValueError:
                return Response(status_code=404)
            if not path.is_file():
                return Response(status_code=404)
            return FileResponse(path)

        app.router.routes.insert(0, Route(self.url_prefix + "/{key:path}", serve, methods=["GET"]))
