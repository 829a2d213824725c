"""`create_app`: the HTTP and WebSocket API of docs/http-api.md over a service.

Every call acts as the user of its bearer token and goes straight to the
library (`SendPipeline`, `SyncService`, the group directory, notifications);
the library's errors become the JSON refusals of `fleets_mailbox.server.errors`.
The WebSocket registers each connection in the service's `Presence`, so the
service's `PushConsumer` pushes to it. The app's lifespan starts the service
and closes it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Query, Request, Response, WebSocket
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette import types as asgi
from starlette.websockets import WebSocketDisconnect

from ..adapters.websocket import ConnectionClosed, WebSocketConnection, camel_case
from ..errors import (
    InvalidRange,
    InvalidRequest,
    NotAllowed,
    NotAMember,
    NotFound,
    UnknownConversation,
)
from ..model import (
    ConversationSummary,
    Group,
    Message,
    Notification,
    direct_conversation,
    group_conversation,
    validate_client_msg_id,
    validate_conversation_id,
    validate_id,
)
from ..service import MailboxService
from .auth import TokenSigner, Unauthorized
from .errors import error_body, install_error_handlers
from .schemas import (
    CreateGroupRequest,
    EditRequest,
    LoginRequest,
    MembersRequest,
    ReadRequest,
    SendRequest,
)

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

#: The largest integer a cursor or seq may be; stores keep 64-bit integers.
MAX_CURSOR = 2**62

#: The most members a group request may name at once.
MAX_MEMBERS_PER_REQUEST = 1000

#: The longest group name, in characters.
MAX_GROUP_NAME = 100

_STATIC = resources.files("fleets_mailbox.server") / "static"

_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
}


_bearer = HTTPBearer(auto_error=False, description="The token of POST /api/login.")


async def _current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    signer: TokenSigner = request.app.state.signer
    return signer.user_of(credentials.credentials if credentials else None)


#: The user a request acts as: the one its bearer token names.
User = Annotated[str, Depends(_current_user)]


def create_app(
    service: MailboxService,
    *,
    secret: str,
    title: str = "fleets_mailbox chat",
    max_request_bytes: int | None = None,
) -> FastAPI:
    """Returns the FastAPI app serving ``service`` over HTTP and WebSocket.

    ``secret`` signs the demo bearer tokens. Request bodies above
    ``max_request_bytes`` (by default 1 MiB or eight message bodies, whichever
    is more) are refused with 413 before they are parsed.
    """
    signer = TokenSigner(secret)
    if max_request_bytes is None:
        max_request_bytes = max(1 << 20, 8 * service.pipeline.max_body_bytes)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.close()

    app = FastAPI(
        title=title,
        version=_version(),
        summary="Chat over the fleets_mailbox library: HTTP calls and WebSocket push.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.signer = signer
    install_error_handlers(app)
    app.add_middleware(_BodyLimit, max_bytes=max_request_bytes)

    _add_page_routes(app)

    @app.get("/healthz", tags=["meta"])
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/api/login", tags=["auth"])
    async def login(request: LoginRequest) -> dict[str, str]:
        """Returns a demo token for any valid user id."""
        user_id = validate_id(request.user_id, "user_id")
        return {"userId": user_id, "token": signer.token(user_id)}

    # -- messages ---------------------------------------------------------

    @app.post("/api/messages", status_code=201, tags=["messages"])
    async def send_message(
        request: SendRequest, response: Response, user: User
    ) -> dict[str, Any]:
        """Sends a message as the caller; 201 when new, 200 for a resend."""
        conversation_id = _target(user, request)
        client_msg_id = validate_client_msg_id(request.client_msg_id)
        result = await service.pipeline.submit(
            user, conversation_id, request.body, client_msg_id
        )
        if not result.created:
            response.status_code = 200
        return {"message": _message(result.message)}

    @app.patch("/api/messages/{messageId}", tags=["messages"])
    async def edit_message(
        message_id: Annotated[str, Path(alias="messageId")],
        request: EditRequest,
        user: User,
    ) -> dict[str, Any]:
        """Replaces the body of one of the caller's messages."""
        message = await service.pipeline.edit(user, message_id, request.body)
        return {"message": _message(message)}

    @app.delete("/api/messages/{messageId}", tags=["messages"])
    async def delete_message(
        message_id: Annotated[str, Path(alias="messageId")], user: User
    ) -> dict[str, Any]:
        """Deletes one of the caller's messages for everyone; returns the tombstone."""
        message = await service.pipeline.delete(user, message_id)
        return {"message": _message(message)}

    # -- sync and the conversation list -------------------------------------

    @app.get("/api/sync", tags=["sync"])
    async def sync(
        user: User,
        conversation_id: Annotated[str, Query(alias="conversationId")],
        from_seq: Annotated[int, Query(alias="fromSequence")] = 0,
        limit: int = 100,
    ) -> dict[str, Any]:
        """Returns the caller's messages of a conversation after ``fromSequence``."""
        conversation_id = validate_conversation_id(conversation_id)
        _bounded(from_seq, "from_seq")
        await _check_reader(service, user, conversation_id)
        page = await service.sync.sync(user, conversation_id, from_seq, limit)
        return {
            "conversationId": page.conversation_id,
            "messages": [_message(m) for m in page.messages],
            "holes": list(page.holes),
            "nextFromSequence": page.next_from_seq,
            "hasMore": page.has_more,
            "lastSeq": page.last_seq,
        }

    @app.get("/api/conversations", tags=["sync"])
    async def conversations(
        user: User, since: int = 0, limit: int = 100
    ) -> dict[str, Any]:
        """Returns the caller's conversation summaries changed after ``since``."""
        _bounded(since, "since_version")
        page = await service.sync.conversations_since(user, since, limit)
        return {
            "conversations": [_summary(s) for s in page.summaries],
            "nextVersion": page.next_version,
            "hasMore": page.has_more,
        }

    @app.post("/api/conversations/{conversationId}/read", tags=["sync"])
    async def mark_read(
        conversation_id: Annotated[str, Path(alias="conversationId")],
        request: ReadRequest,
        user: User,
    ) -> dict[str, Any]:
        """Moves the caller's read position forward; returns the summary."""
        _bounded(request.read_seq, "read_seq")
        summary = await service.sync.mark_read(
            user, validate_conversation_id(conversation_id), request.read_seq
        )
        return _summary(summary)

    # -- groups ---------------------------------------------------------------

    @app.post("/api/groups", status_code=201, tags=["groups"])
    async def create_group(request: CreateGroupRequest, user: User) -> dict[str, Any]:
        """Creates a group owned by the caller; invites every other member."""
        group_id = validate_id(request.group_id, "group_id")
        members = _ids(request.members, "members")
        name = request.name.strip() or group_id
        if len(name) > MAX_GROUP_NAME:
            raise InvalidRequest(
                f"a group name has at most {MAX_GROUP_NAME} characters", field="name"
            )
        group = await service.directory.create_group(group_id, user, name, members)
        await _invite(service, group, members - {user}, user)
        logger.info(
            "%s created group %s with %d members", user, group_id, len(group.members)
        )
        return _group(group)

    @app.get("/api/groups", tags=["groups"])
    async def groups(user: User) -> dict[str, Any]:
        """Returns the groups the caller belongs to."""
        return {"groups": [_group(g) for g in await service.directory.groups_of(user)]}

    @app.get("/api/groups/{groupId}", tags=["groups"])
    async def get_group(
        group_id: Annotated[str, Path(alias="groupId")], user: User
    ) -> dict[str, Any]:
        """Returns a group the caller belongs to."""
        group = await service.directory.get_group(validate_id(group_id, "group_id"))
        if user not in group.members:
            raise NotAMember(user, group_conversation(group.group_id))
        return _group(group)

    @app.post("/api/groups/{groupId}/members", tags=["groups"])
    async def change_members(
        group_id: Annotated[str, Path(alias="groupId")],
        request: MembersRequest,
        user: User,
    ) -> dict[str, Any]:
        """Adds and removes members: the owner only; a member may leave."""
        group = await service.directory.get_group(validate_id(group_id, "group_id"))
        if user not in group.members:
            raise NotAMember(user, group_conversation(group.group_id))
        add = _ids(request.add, "add")
        remove = _ids(request.remove, "remove")
        if add & remove:
            raise InvalidRequest(
                f"{sorted(add & remove)} are both added and removed", field="add"
            )
        if user != group.owner_id and (add or remove != {user}):
            raise NotAllowed(
                f"only the owner {group.owner_id!r} manages {group.group_id!r}; "
                "a member may only remove themself",
                user_id=user,
            )
        if group.owner_id in remove:
            raise NotAllowed(
                "the owner cannot leave the group it owns", user_id=group.owner_id
            )

        invited = add - group.members
        if add:
            group = await service.directory.add_members(group.group_id, add)
        if remove:
            group = await service.directory.remove_members(group.group_id, remove)
        await _invite(service, group, invited, user)
        return _group(group)

    # -- notifications ----------------------------------------------------------

    @app.get("/api/notifications", tags=["notifications"])
    async def notifications(
        user: User, after: int = 0, limit: int = 100
    ) -> dict[str, Any]:
        """Returns the caller's notifications after the id ``after``."""
        _bounded(after, "after_id")
        found = await service.notifications.list(user, after, limit)
        return {"notifications": [_notification(n) for n in found]}

    @app.post("/api/notifications/{id}/read", tags=["notifications"])
    async def read_notification(
        notification_id: Annotated[int, Path(alias="id")], user: User
    ) -> dict[str, bool]:
        """Marks one of the caller's notifications read."""
        if not 0 < notification_id <= MAX_CURSOR or not (
            await service.notifications.mark_read(user, notification_id)
        ):
            raise NotFound(f"{user!r} has no notification {notification_id}")
        return {"read": True}

    # -- push -------------------------------------------------------------------

    @app.websocket("/ws")
    async def websocket(websocket: WebSocket) -> None:
        """Pushes the caller's events; answers ``{"type": "ping"}`` with a pong."""
        try:
            user = signer.user_of(websocket.query_params.get("token"))
        except Unauthorized as exc:
            await _deny(websocket, str(exc))
            return
        await websocket.accept()
        await _serve_socket(service, user, websocket)

    return app


async def _serve_socket(
    service: MailboxService, user: str, websocket: WebSocket
) -> None:
    connection = WebSocketConnection(websocket)
    await service.presence.connect(user, connection)
    logger.debug("%s connected (%s)", user, connection.connection_id)
    try:
        # Sent once the connection is registered: whatever is committed from
        # now on is pushed, so a client that syncs after "hello" misses nothing.
        await connection.push(
            {
                "type": "hello",
                "user_id": user,
                "connection_id": connection.connection_id,
            }
        )
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            await connection.push(_answer(message))
    except (WebSocketDisconnect, ConnectionClosed):
        pass
    finally:
        connection.mark_closed()
        await service.presence.disconnect(user, connection)
        logger.debug("%s disconnected (%s)", user, connection.connection_id)


def _answer(message: asgi.Message) -> dict[str, Any]:
    """Returns the reply to a client's frame, if it needs one."""
    text = message.get("text")
    if text is None and message.get("bytes") is not None:
        text = message["bytes"].decode("utf-8", "replace")
    try:
        frame = json.loads(text) if isinstance(text, str) else None
    except (ValueError, RecursionError):
        frame = None
    if isinstance(frame, dict) and frame.get("type") == "ping":
        return {"type": "pong"}
    return {
        "type": "error",
        "error": "invalid_request",
        "message": 'the only frame a client sends is {"type": "ping"}',
    }


async def _deny(websocket: WebSocket, reason: str) -> None:
    """Refuses a WebSocket handshake with 401, or close code 1008 if it can't."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(
            JSONResponse(error_body(Unauthorized.code, reason), status_code=401)
        )
    else:
        await websocket.close(code=1008, reason="unauthorized")


def _add_page_routes(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=str(_STATIC)), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(_STATIC / "index.html"), headers=_PAGE_HEADERS)


def _target(user: str, request: SendRequest) -> str:
    """Returns the conversation a send goes to: ``conversationId`` or ``to``."""
    if (request.conversation_id is None) == (request.to is None):
        raise InvalidRequest(
            "give exactly one of conversationId and to", field="conversation_id"
        )
    if request.to is not None:
        to = validate_id(request.to, "to")
        if to == user:
            raise InvalidRequest("a direct chat needs two different users", field="to")
        return direct_conversation(user, to)
    return validate_conversation_id(request.conversation_id)


async def _check_reader(
    service: MailboxService, user: str, conversation_id: str
) -> None:
    """Lets members and past members (who have a summary) sync a conversation."""
    try:
        members = await service.directory.members(conversation_id)
    except UnknownConversation:
        if await service.stores.conversations.get(user, conversation_id) is None:
            raise
        return
    if user in members:
        return
    if await service.stores.conversations.get(user, conversation_id) is None:
        raise NotAMember(user, conversation_id)


async def _invite(
    service: MailboxService, group: Group, user_ids: Iterable[str], by: str
) -> None:
    for user_id in sorted(user_ids):
        await service.notifications.notify(
            user_id,
            "group_invite",
            {
                "group_id": group.group_id,
                "conversation_id": group_conversation(group.group_id),
                "name": group.name,
                "invited_by": by,
            },
        )


def _ids(values: Iterable[str], name: str) -> set[str]:
    ids = {validate_id(v, name) for v in values}
    if len(ids) > MAX_MEMBERS_PER_REQUEST:
        raise InvalidRequest(
            f"{name} names at most {MAX_MEMBERS_PER_REQUEST} users", field=name
        )
    return ids


def _bounded(value: int, name: str) -> None:
    if value > MAX_CURSOR:
        raise InvalidRange(f"{name} must be at most {MAX_CURSOR}", field=name)


def _message(message: Message) -> dict[str, Any]:
    result: dict[str, Any] = camel_case(message.to_dict())
    return result


def _summary(summary: ConversationSummary) -> dict[str, Any]:
    result: dict[str, Any] = camel_case(summary.to_dict())
    return result


def _group(group: Group) -> dict[str, Any]:
    result: dict[str, Any] = camel_case(group.to_dict())
    return result


def _notification(notification: Notification) -> dict[str, Any]:
    result: dict[str, Any] = camel_case(notification.to_dict())
    return result


def _version() -> str:
    from .. import __version__

    return __version__


class _BodyLimit:
    """Refuses request bodies above ``max_bytes`` with 413 before parsing them.

    The body is read into memory (at most ``max_bytes``) and replayed to the
    app, so a body sent without a Content-Length is bounded too.
    """

    def __init__(self, app: asgi.ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(
        self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return

        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break

        body = b"".join(chunks)
        replayed = False

        async def replay() -> asgi.Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(
        self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send
    ) -> None:
        response = JSONResponse(
            error_body(
                "request_too_large",
                f"the request body is larger than {self.max_bytes} bytes",
                limit=self.max_bytes,
            ),
            status_code=413,
        )
        await response(scope, receive, send)
