"""WebSocket push through a real uvicorn server, with real `websockets` clients.

The clients follow the rules of docs/http-api.md: a cursor per conversation,
pushed duplicates dropped by ``(conversationId, seq)``, gaps filled with
``/api/sync``, and a catch-up sync after every (re)connect. The cases: a push
arrives (camelCase), a read reaches the user's other device (C09), lost and
repeated pushes are healed (C10/C11 over the wire), a client catches up from
the mailbox after the bus lost its history (C15).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from fleets_mailbox import MailboxService, Stores, direct_conversation
from fleets_mailbox.adapters.local_bus import LocalBus
from fleets_mailbox.adapters.memory import MemoryPresence
from fleets_mailbox.adapters.websocket import (
    ConnectionClosed,
    WebSocketConnection,
    camel_case,
)
from fleets_mailbox.events import message_event
from fleets_mailbox.push import PushConsumer
from fleets_mailbox.server import BackgroundServer, create_app
from fleets_mailbox.server.auth import TokenSigner

SECRET = "ws-secret"
AB = direct_conversation("alice", "bob")
WAIT = 5.0


def token(user: str) -> str:
    return TokenSigner(SECRET).token(user)


class ChatClient:
    """One device of a user: HTTP calls plus a WebSocket, per the API's rules."""

    def __init__(self, server: BackgroundServer, user: str) -> None:
        self.server = server
        self.user = user
        self.http = httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {token(user)}"}
        )
        self.cursor: dict[str, int] = {}
        self.messages: dict[str, dict[int, dict[str, Any]]] = {}
        self.frames: list[dict[str, Any]] = []
        self.duplicates = 0
        self.syncs = 0
        self._ws: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()

    async def connect(self, *, catch_up: bool = True) -> None:
        url = f"{self.server.ws_url}/ws?token={token(self.user)}"
        self._ws = await websockets.connect(url)
        hello = json.loads(await asyncio.wait_for(self._ws.recv(), WAIT))
        assert hello["type"] == "hello"
        assert hello["userId"] == self.user
        self._reader = asyncio.create_task(self._read())
        if catch_up:
            await self.catch_up()

    async def disconnect(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._ws = self._reader = None

    async def close(self) -> None:
        await self.disconnect()
        await self.http.aclose()

    async def send(self, conversation_id: str, body: str, cmid: str) -> dict[str, Any]:
        response = await self.http.post(
            "/api/messages",
            json={"conversationId": conversation_id, "body": body, "clientMsgId": cmid},
        )
        assert response.status_code in (200, 201), response.text
        message: dict[str, Any] = response.json()["message"]
        return message

    async def catch_up(self) -> None:
        """Syncs every conversation of the list from its cursor."""
        listed = (await self.http.get("/api/conversations")).json()
        for summary in listed["conversations"]:
            await self.sync(summary["conversationId"])

    async def sync(self, conversation_id: str) -> None:
        while True:
            self.syncs += 1
            page = (
                await self.http.get(
                    "/api/sync",
                    params={
                        "conversationId": conversation_id,
                        "fromSequence": self.cursor.get(conversation_id, 0),
                    },
                )
            ).json()
            for message in page["messages"]:
                self._remember(message)
            self.cursor[conversation_id] = max(
                self.cursor.get(conversation_id, 0), page["nextFromSequence"]
            )
            if not page["hasMore"]:
                return

    async def summary(self, conversation_id: str) -> dict[str, Any]:
        listed = (await self.http.get("/api/conversations")).json()
        (found,) = [
            s for s in listed["conversations"] if s["conversationId"] == conversation_id
        ]
        result: dict[str, Any] = found
        return result

    def bodies(self, conversation_id: str) -> list[str]:
        known = self.messages.get(conversation_id, {})
        return [known[seq]["body"] for seq in sorted(known)]

    async def wait_for(self, predicate: Any, what: str) -> None:
        async def until() -> None:
            async with self._changed:
                await self._changed.wait_for(predicate)

        try:
            await asyncio.wait_for(until(), WAIT)
        except TimeoutError:
            raise AssertionError(f"{self.user}: timed out waiting for {what}") from None

    def _remember(self, message: Mapping[str, Any]) -> bool:
        known = self.messages.setdefault(message["conversationId"], {})
        if message["seq"] in known:
            self.duplicates += 1
            return False
        known[message["seq"]] = dict(message)
        return True

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self._ws:
                frame = json.loads(raw)
                self.frames.append(frame)
                if frame["type"] == "message":
                    await self._on_message(frame["message"])
                async with self._changed:
                    self._changed.notify_all()

    async def _on_message(self, message: Mapping[str, Any]) -> None:
        conversation_id = message["conversationId"]
        cursor = self.cursor.get(conversation_id, 0)
        if not self._remember(message):
            return
        if message["seq"] == cursor + 1:
            self.cursor[conversation_id] = message["seq"]
        elif message["seq"] > cursor + 1:
            await self.sync(conversation_id)


@pytest.fixture
async def server() -> AsyncIterator[BackgroundServer]:
    service = MailboxService(Stores.memory(), LocalBus(), MemoryPresence())
    async with BackgroundServer(create_app(service, secret=SECRET)) as running:
        yield running


@pytest.fixture
async def clients(server: BackgroundServer) -> AsyncIterator[list[ChatClient]]:
    opened: list[ChatClient] = []
    yield opened
    for client in opened:
        await client.close()


def service_of(server: BackgroundServer) -> MailboxService:
    app = server.config.app
    service: MailboxService = app.state.service
    return service


async def test_push_arrives_with_camel_case_keys(
    server: BackgroundServer, clients: list[ChatClient]
) -> None:
    alice, bob = ChatClient(server, "alice"), ChatClient(server, "bob")
    clients += [alice, bob]
    await bob.connect()

    sent = await alice.send(AB, "hello bob", "c-1")

    await bob.wait_for(lambda: bob.bodies(AB) == ["hello bob"], "the push")
    (frame,) = [f for f in bob.frames if f["type"] == "message"]
    assert frame["message"] == sent
    assert {"messageId", "conversationId", "senderId", "clientMsgId"} <= set(sent)
    assert bob.syncs == 0  # nothing to catch up on, and the push needed no sync


async def test_ping_pong_and_unknown_frames(server: BackgroundServer) -> None:
    async with websockets.connect(f"{server.ws_url}/ws?token={token('bob')}") as ws:
        assert json.loads(await ws.recv())["type"] == "hello"
        await ws.send('{"type": "ping"}')
        assert json.loads(await asyncio.wait_for(ws.recv(), WAIT)) == {"type": "pong"}
        deep = ["[" * 5000, '{"a":' * 3000 + "1" + "}" * 3000]
        for junk in ("not json", '{"type": "send", "body": "x"}', "[]", *deep):
            await ws.send(junk)
            reply = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            assert reply["type"] == "error"
            assert reply["error"] == "invalid_request"
        await ws.send(b'{"type": "ping"}')
        assert json.loads(await asyncio.wait_for(ws.recv(), WAIT)) == {"type": "pong"}


async def test_no_token_reaches_the_server_log() -> None:
    # uvicorn logs every WebSocket handshake with its path, even without the
    # access log; the path holds the bearer token.
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    service = MailboxService(Stores.memory(), LocalBus(), MemoryPresence())
    server = BackgroundServer(create_app(service, secret=SECRET), log_level="info")
    # After the server's logging setup, which drops the logger's handlers.
    keep = Keep()
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.addHandler(keep)
    try:
        async with server as running:
            secret_token = token("bob")
            async with websockets.connect(
                f"{running.ws_url}/ws?token={secret_token}"
            ) as ws:
                assert json.loads(await ws.recv())["type"] == "hello"
    finally:
        uvicorn_log.removeHandler(keep)

    handshakes = [line for line in lines if "WebSocket" in line]
    assert handshakes, lines
    assert all(secret_token not in line for line in lines), handshakes
    assert any("token=[hidden]" in line for line in handshakes), handshakes


@pytest.mark.parametrize(
    "query",
    ["", "?token=", "?token=bob.beef", f"?token={TokenSigner('other').token('bob')}"],
    ids=["missing", "empty", "bad-signature", "other-secret"],
)
async def test_websocket_without_a_valid_token_is_refused(
    server: BackgroundServer, query: str
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(f"{server.ws_url}/ws{query}"):
            pass
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body)["error"] == "unauthorized"
    assert await service_of(server).presence.connections("bob") == []


async def test_c09_read_on_the_laptop_reaches_the_phone(
    server: BackgroundServer, clients: list[ChatClient]
) -> None:
    alice = ChatClient(server, "alice")
    phone, laptop = ChatClient(server, "bob"), ChatClient(server, "bob")
    clients += [alice, phone, laptop]
    await phone.connect()
    await laptop.connect()
    await alice.send(AB, "one", "c-1")
    await alice.send(AB, "two", "c-2")
    for device in (phone, laptop):
        await device.wait_for(lambda d=device: len(d.bodies(AB)) == 2, "two pushes")
    assert (await phone.summary(AB))["unread"] == 2

    read = await laptop.http.post(f"/api/conversations/{AB}/read", json={"readSeq": 2})
    assert read.json()["unread"] == 0

    def read_frame(device: ChatClient) -> dict[str, Any] | None:
        frames = [f for f in device.frames if f["type"] == "read"]
        return frames[-1] if frames else None

    await phone.wait_for(lambda: read_frame(phone) is not None, "the read event")
    frame = read_frame(phone)
    assert frame is not None
    assert frame["conversationId"] == AB
    assert frame["readSeq"] == 2
    assert frame["unread"] == 0
    assert (await phone.summary(AB))["unread"] == 0
    assert (await laptop.summary(AB))["unread"] == 0
    # The sender's devices are not told about bob's reading.
    assert not [f for f in alice.frames if f["type"] == "read"]


async def test_lost_and_repeated_pushes_are_healed_by_sync(
    server: BackgroundServer, clients: list[ChatClient]
) -> None:
    service = service_of(server)
    alice, bob = ChatClient(server, "alice"), ChatClient(server, "bob")
    clients += [alice, bob]
    await bob.connect()

    # The bus loses the event of seq 1: bob learns of it from seq 2's gap.
    bus = service.pipeline.bus
    service.pipeline.bus = None
    await alice.send(AB, "lost push", "c-1")
    service.pipeline.bus = bus
    second = await alice.send(AB, "second", "c-2")
    await bob.wait_for(lambda: bob.bodies(AB) == ["lost push", "second"], "the gap")
    assert bob.cursor[AB] == 2

    # The bus delivers seq 2 again: bob shows it once.
    stored = await service.stores.messages.get(second["messageId"])
    assert stored is not None
    pushed, duplicates = len(bob.frames), bob.duplicates
    await service.bus.publish(message_event(stored, ["alice", "bob"]))
    await bob.wait_for(lambda: len(bob.frames) > pushed, "the repeated push")
    assert bob.bodies(AB) == ["lost push", "second"]
    assert bob.duplicates == duplicates + 1
    assert (await bob.summary(AB))["unread"] == 2


async def test_c15_catch_up_from_the_mailbox_after_the_bus_restarts() -> None:
    stores = Stores.memory()

    def new_app() -> Any:
        # A fresh LocalBus: whatever the old bus held is gone.
        service = MailboxService(stores, LocalBus(), MemoryPresence())
        return create_app(service, secret=SECRET)

    async with BackgroundServer(new_app()) as first:
        alice, bob = ChatClient(first, "alice"), ChatClient(first, "bob")
        await bob.connect()
        await alice.send(AB, "m1", "c-1")
        await bob.wait_for(lambda: bob.bodies(AB) == ["m1"], "m1")
        await bob.disconnect()
        await alice.send(AB, "m2", "c-2")
        await alice.send(AB, "m3", "c-3")
        await alice.close()
        await bob.http.aclose()
    assert bob.cursor[AB] == 1

    async with BackgroundServer(new_app()) as second:
        bob_state = bob
        bob = ChatClient(second, "bob")
        bob.cursor, bob.messages = bob_state.cursor, bob_state.messages
        alice = ChatClient(second, "alice")
        try:
            await bob.connect()  # catches up by sync from its cursor
            assert bob.bodies(AB) == ["m1", "m2", "m3"]
            assert bob.cursor[AB] == 3

            await alice.send(AB, "m4", "c-4")
            await bob.wait_for(lambda: len(bob.bodies(AB)) == 4, "m4")
            assert bob.bodies(AB) == ["m1", "m2", "m3", "m4"]
            assert sorted(bob.messages[AB]) == [1, 2, 3, 4]
            assert bob.duplicates == 0
            assert (await bob.summary(AB))["unread"] == 4
        finally:
            await alice.close()
            await bob.close()


async def test_a_closed_connection_leaves_presence(server: BackgroundServer) -> None:
    presence = service_of(server).presence
    async with websockets.connect(f"{server.ws_url}/ws?token={token('bob')}") as ws:
        await ws.recv()
        assert len(await presence.connections("bob")) == 1
    for _ in range(100):
        if not await presence.connections("bob"):
            break
        await asyncio.sleep(0.02)
    assert await presence.connections("bob") == []


async def test_background_server_reports_a_busy_port(
    server: BackgroundServer,
) -> None:
    service = MailboxService(Stores.memory(), LocalBus(), MemoryPresence())
    second = BackgroundServer(create_app(service, secret=SECRET), port=server.port)
    with pytest.raises(RuntimeError, match="cannot listen"):
        await second.start()
    assert service.push._subscriptions == []  # the lifespan never started
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/healthz")).json() == {"ok": True}


# -- WebSocketConnection on its own ------------------------------------------------


class FakeSocket:
    """Stands in for a Starlette WebSocket: records frames, can fail or stall."""

    def __init__(self, *, fail: bool = False, delay: float = 0.0) -> None:
        self.sent: list[str] = []
        self.fail = fail
        self.delay = delay
        self.closed_with: int | None = None
        self.in_send = 0
        self.overlaps = 0

    async def send_text(self, data: str) -> None:
        self.in_send += 1
        self.overlaps += self.in_send > 1
        try:
            await asyncio.sleep(self.delay)
            if self.fail:
                raise RuntimeError("socket is gone")
            self.sent.append(data)
        finally:
            self.in_send -= 1

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed_with = code


def test_camel_case_converts_nested_keys() -> None:
    frame = {
        "type": "message",
        "message": {"message_id": "m", "read_seq": 1, "payload": {"group_id": "g"}},
        "recipients": [{"user_id": "a"}],
    }
    assert camel_case(frame) == {
        "type": "message",
        "message": {"messageId": "m", "readSeq": 1, "payload": {"groupId": "g"}},
        "recipients": [{"userId": "a"}],
    }


async def test_connection_sends_camel_case_json_one_frame_at_a_time() -> None:
    socket = FakeSocket(delay=0.002)
    connection = WebSocketConnection(socket)  # type: ignore[arg-type]
    await asyncio.gather(
        *(connection.push({"type": "read", "read_seq": n}) for n in range(10))
    )
    await connection.flush()
    assert socket.overlaps == 0
    assert [json.loads(text)["readSeq"] for text in socket.sent] == list(range(10))


async def test_connection_raises_once_the_socket_is_gone() -> None:
    socket = FakeSocket(fail=True)
    connection = WebSocketConnection(socket)  # type: ignore[arg-type]
    await connection.push({"type": "pong"})
    await connection.flush()
    assert connection.closed
    assert socket.closed_with == 1011
    socket.fail = False
    with pytest.raises(ConnectionClosed):
        await connection.push({"type": "pong"})
    await connection.flush()
    assert socket.sent == []


async def test_a_stalled_socket_times_out_and_is_dropped() -> None:
    socket = FakeSocket(delay=5)
    connection = WebSocketConnection(socket, send_timeout=0.05)  # type: ignore[arg-type]
    await connection.push({"type": "pong"})
    await connection.flush()
    assert connection.closed
    with pytest.raises(ConnectionClosed):
        await connection.push({"type": "pong"})


async def test_a_client_too_far_behind_is_closed() -> None:
    socket = FakeSocket(delay=5)
    connection = WebSocketConnection(socket, max_queued=2)  # type: ignore[arg-type]
    await connection.push({"type": "pong"})
    await connection.push({"type": "pong"})
    with pytest.raises(ConnectionClosed):
        await connection.push({"type": "pong"})
    assert connection.closed
    assert socket.closed_with == 1011
    connection.mark_closed()


async def test_a_stalled_client_does_not_hold_up_the_others() -> None:
    presence = MemoryPresence()
    stalled, healthy = FakeSocket(delay=5), FakeSocket()
    slow = WebSocketConnection(stalled)  # type: ignore[arg-type]
    fast = WebSocketConnection(healthy)  # type: ignore[arg-type]
    await presence.connect("bob", slow)
    await presence.connect("carol", fast)
    consumer = PushConsumer(LocalBus(), presence)
    service = MailboxService(Stores.memory(), LocalBus(), presence)
    group = await service.directory.create_group("g", "alice", "G", {"bob", "carol"})
    assert group.members == {"alice", "bob", "carol"}

    async with asyncio.timeout(1):
        for n in range(1, 6):
            message = await service.pipeline.send("alice", "g:g", f"m{n}", f"c-{n}")
            await consumer.handle(message_event(message, ["bob", "carol"]))
        await fast.flush()
    assert [json.loads(t)["message"]["seq"] for t in healthy.sent] == [1, 2, 3, 4, 5]
    assert stalled.sent == []
    slow.mark_closed()
    fast.mark_closed()
