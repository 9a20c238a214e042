"""The chat server's wiring: settings, the chat service, and the routes and middleware Chainlit's app gets before it starts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rag.api import credentials, install_api
from rag.auth import (
    LoginLimitMiddleware,
    Logins,
    LoginThrottled,
    SessionGuard,
    UserStore,
    client_address,
    user_store,
)
from rag.chat import ChatService
from rag.cli import offline_environment
from rag.config import Settings, load_settings
from rag.elements import LocalFileStore
from rag.errors import RagError
from rag.logs import log_to_file
from rag.threads import ThreadStore, thread_database
from rag.uploads import accepted_types, upload_limit, upload_max_bytes
from rag.web import UploadLimitMiddleware, install_routes

# Multipart framing around an uploaded file: the byte limit allows for it.
MULTIPART_OVERHEAD = 64 * 1024


@dataclass
class ChatServer:
    """What the Chainlit handlers use: the settings, the chat service, its users and stores."""

    settings: Settings
    service: ChatService
    users: UserStore
    logins: Logins
    elements: LocalFileStore

    def data_layer(self) -> ThreadStore:
        """Chainlit's data layer: the saved threads, with their elements in the element store."""
        return ThreadStore(conninfo=thread_database(self.settings), storage_provider=self.elements)

    async def session_user(self, request: Any) -> str | None:
        """Who a request's chat session (cookie or token) belongs to, if it is valid."""
        from chainlit.auth import authenticate_user, reuseable_oauth
        from fastapi import HTTPException

        token = await reuseable_oauth(request)
        if not token:
            return None
        try:
            user = await authenticate_user(token)
        except HTTPException:
            return None
        return user.identifier

    async def may_see_details(self, request: Any) -> bool:
        """With logins on: a chat session, or the API's login (`Authorization: Bearer user:pw`)."""
        if not self.users.enabled or await self.session_user(request):
            return True
        login = credentials(request.headers.get("authorization", ""))
        try:
            address = client_address(request.scope)
            return login is not None and await self.logins.check(*login, address)
        except LoginThrottled:
            return False

    async def may_read_element(self, request: Any, key: str) -> int:
        """A stored element (an attachment, a cited PDF) is for the owner of its thread only:
        200, 401 without a login, 404 for anyone else (see LocalFileStore.install)."""
        from chainlit.data import get_data_layer

        if not self.users.enabled:
            return 200  # one local user owns everything
        user = await self.session_user(request)
        if not user:
            return 401
        layer = get_data_layer()
        owner = await layer.element_owner(key) if isinstance(layer, ThreadStore) else None
        return 200 if user == owner else 404


def wire_chat_server() -> ChatServer:
    """Read the settings and give Chainlit's server its routes and middleware.

    Runs when app.py is imported: Chainlit's server takes middleware only before it starts. A
    setting that does not parse stops the start here, in one line.
    """
    from chainlit.config import config as chainlit_config
    from chainlit.server import app

    offline_environment()
    try:
        settings = load_settings()
        users = user_store(settings)
    except RagError as error:
        raise SystemExit(f"rag: error: {error}") from None
    log_to_file(settings.storage_dir)
    service = ChatService(settings)
    elements = LocalFileStore(
        settings.storage_dir / "elements", int(settings.elements_max_mb * 2**20)
    )
    server = ChatServer(settings, service, users, Logins(users), elements)

    install_routes(app, service.health, server.may_see_details)
    root_path = chainlit_config.run.root_path
    install_api(app, service, server.logins, prefix=root_path)
    if users.enabled:
        # A session of a user no longer in RAG_AUTH_USERS ends; the API checks its login each time.
        app.add_middleware(SessionGuard, users=users, skip_prefixes=(f"{root_path}/v1",))
        app.add_middleware(
            LoginLimitMiddleware, path=f"{root_path}/login", failures=server.logins.failures
        )
    uploads = chainlit_config.features.spontaneous_file_upload
    if uploads is not None:  # the browser enforces what the settings allow
        uploads.max_size_mb = int(settings.upload_max_mb) or 1
        uploads.max_files = settings.upload_max_files
        uploads.accept = accepted_types()
    # ...and the server refuses a bigger upload before reading it.
    app.add_middleware(
        UploadLimitMiddleware,
        path_suffix="/project/file",
        max_bytes=upload_max_bytes(settings) + MULTIPART_OVERHEAD,
        limit_text=upload_limit(settings),
    )
    elements.install(app, server.may_read_element)
    return server
