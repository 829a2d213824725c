"""A chat client as a real one behaves: HTTP calls, a WebSocket, a cursor.

`Api` makes the HTTP calls of docs/http-api.md and retries what the server
asks to be retried (503) or what got no answer, as a client on a flaky
network does. `ConversationState` is one conversation on one device: it
drops a message whose seq it has, appends the next seq, buffers what comes
early and says when a gap needs a sync. `UserClient` is one user's device:
it holds a WebSocket while online, feeds pushes, its own acknowledged sends
and sync pages into its states, and catches up from its cursors after
every (re)connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from .check import ViewEntry

__all__ = [
    "Api",
    "ApiError",
    "ConversationState",
    "Offer",
    "ReplayError",
    "UserClient",
    "entry_of",
]

logger = logging.getLogger(__name__)

#: How long a call keeps being retried on 503 or a lost answer, in seconds.
RETRY_FOR = 120.0

#: The page size of the syncs a client makes while running.
LIVE_PAGE = 50

#: How long a client waits for a missing push before it syncs, in seconds.
GAP_GRACE = 0.2


class ReplayError(Exception):
    """The replay cannot go on (server unreachable, unusable answers)."""


class ApiError(ReplayError):
    """The server refused a call with a status that is not worth retrying."""

    def __init__(self, status: int, body: Any, what: str) -> None:
        code = body.get("error") if isinstance(body, Mapping) else None
        super().__init__(f"{what}: HTTP {status} {code or body!r}")
        self.status = status
        self.code = code
        self.body = body


def entry_of(message: Mapping[str, Any]) -> ViewEntry:
    """Returns the view entry of a message as the API spells it."""
    return ViewEntry(
        seq=int(message["seq"]),
        message_id=str(message["messageId"]),
        sender_id=str(message["senderId"]),
        client_msg_id=str(message["clientMsgId"]),
    )


class Api:
    """The HTTP calls, with retries, and the latencies of the sends."""

    def __init__(self, http: httpx.AsyncClient, *, retry_for: float = RETRY_FOR):
        self.http = http
        self.retry_for = retry_for
        self.send_latencies_ms: list[float] = []
        self.retried_calls = 0

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json_body: Any = None,
        params: Mapping[str, str | int] | None = None,
        timed: bool = False,
        retry_for: float | None = None,
    ) -> tuple[int, Any]:
        """Makes one call, retrying on 503 and on a lost answer.

        Returns the status and the JSON body of a 2xx answer; raises
        `ApiError` for any other answer and `ReplayError` when the retries
        run out.
        """
        headers = {"Authorization": f"Bearer {token}"} if token else None
        patience = self.retry_for if retry_for is None else retry_for
        deadline = time.monotonic() + patience
        delay = 0.02
        what = f"{method} {path}"
        while True:
            started = time.perf_counter()
            try:
                response = await self.http.request(
                    method, path, headers=headers, json=json_body, params=params
                )
            except httpx.TransportError as exc:
                failure = f"{what}: {exc!r}"
            else:
                if timed:
                    self.send_latencies_ms.append(
                        (time.perf_counter() - started) * 1000
                    )
                body = _json(response)
                if response.is_success:
                    return response.status_code, body
                if response.status_code != 503:
                    raise ApiError(response.status_code, body, what)
                failure = f"{what}: HTTP 503 {body!r}"
            if time.monotonic() + delay > deadline:
                raise ReplayError(f"gave up after {patience:.0f} s: {failure}")
            self.retried_calls += 1
            logger.debug("retrying %s", failure)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def login(self, user_id: str) -> str:
        """Returns a token for ``user_id``."""
        _, body = await self.call("POST", "/api/login", json_body={"userId": user_id})
        return str(body["token"])

    async def sync_pages(
        self, token: str, conversation_id: str, from_seq: int, limit: int
    ) -> AsyncIterator[Mapping[str, Any]]:
        """Yields the sync pages of a conversation from ``from_seq`` on."""
        while True:
            _, page = await self.call(
                "GET",
                "/api/sync",
                token=token,
                params={
                    "conversationId": conversation_id,
                    "fromSequence": from_seq,
                    "limit": limit,
                },
            )
            yield page
            following = int(page["nextFromSequence"])
            if not page["hasMore"]:
                return
            if following <= from_seq:
                logger.warning(
                    "sync of %s did not move past %d; stopping",
                    conversation_id,
                    from_seq,
                )
                return
            from_seq = following


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


class Offer(enum.Enum):
    """What a client did with a message it was given."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    BUFFERED = "buffered"
    CONFLICT = "conflict"


class ConversationState:
    """One conversation as one device holds it.

    ``cursor`` is the highest seq up to which the device has every message
    or a declared hole; ``timeline`` is what it shows, in order. A message
    whose seq is held is dropped (``conflicts`` records it if it is another
    message); the next seq is appended; a later one waits in ``pending``
    until a sync fills the gap before it.
    """

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        self.cursor = 0
        self.timeline: list[ViewEntry] = []
        self.pending: dict[int, ViewEntry] = {}
        self.holes: set[int] = set()
        self.conflicts: list[tuple[ViewEntry, str]] = []
        self.skipped: list[int] = []
        self._held: dict[int, ViewEntry] = {}

    @property
    def has_gap(self) -> bool:
        """Whether messages wait for an earlier seq to arrive."""
        return bool(self.pending)

    def offer(self, entry: ViewEntry) -> Offer:
        """Takes one message from a push, an acknowledgement or a sync page."""
        held = self._held.get(entry.seq) or self.pending.get(entry.seq)
        if held is not None:
            if held.message_id == entry.message_id:
                return Offer.DUPLICATE
            self.conflicts.append((entry, f"seq {entry.seq} is {held.message_id}"))
            return Offer.CONFLICT
        if entry.seq <= self.cursor:
            reason = "a declared hole" if entry.seq in self.holes else "skipped"
            self.conflicts.append((entry, f"seq {entry.seq} was {reason}"))
            return Offer.CONFLICT
        if entry.seq == self.cursor + 1:
            self._append(entry)
            self._advance()
            return Offer.APPLIED
        self.pending[entry.seq] = entry
        return Offer.BUFFERED

    def add_holes(self, seqs: Collection[int]) -> None:
        """Records burned seqs, which the cursor moves over."""
        self.holes.update(s for s in seqs if s > self.cursor and s not in self._held)
        self._advance()

    def skip_gap(self) -> list[int]:
        """Gives up on the gap: shows what waits and returns the seqs skipped."""
        missing: list[int] = []
        for seq in sorted(self.pending):
            missing.extend(range(self.cursor + 1, seq))
            self.cursor = seq - 1
            self._advance()
        self.skipped.extend(missing)
        return missing

    def _append(self, entry: ViewEntry) -> None:
        self.timeline.append(entry)
        self._held[entry.seq] = entry
        self.cursor = entry.seq

    def _advance(self) -> None:
        while True:
            following = self.cursor + 1
            if following in self.pending:
                self._append(self.pending.pop(following))
            elif following in self.holes:
                self.cursor = following
            else:
                return


class UserClient:
    """One user's device: a WebSocket while online and a state per conversation.

    ``pushed`` and ``synced`` hold the message ids this device got over the
    WebSocket and, first, by sync. ``on_frame`` is called for every frame. A
    gap is synced once it has lasted ``gap_grace`` seconds.
    """

    def __init__(
        self,
        api: Api,
        user_id: str,
        token: str,
        ws_url: str,
        *,
        on_frame: Callable[[], None] = lambda: None,
        page_size: int = LIVE_PAGE,
        gap_grace: float = GAP_GRACE,
    ) -> None:
        self.api = api
        self.user_id = user_id
        self.token = token
        self.ws_url = ws_url
        self.on_frame = on_frame
        self.page_size = page_size
        self.gap_grace = gap_grace
        self.states: dict[str, ConversationState] = {}
        self.pushed: set[str] = set()
        self.push_times: dict[str, float] = {}
        self.synced: set[str] = set()
        self.online = False
        self.connects = 0
        self.drops = 0
        self.gap_syncs = 0
        self.errors: list[str] = []
        self.version = 0
        self._socket: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._syncs: dict[str, asyncio.Task[None]] = {}
        self._catch_up: asyncio.Task[None] | None = None
        self._redials: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self._hello: asyncio.Event = asyncio.Event()

    def state(self, conversation_id: str) -> ConversationState:
        """Returns the state of a conversation, new if unknown."""
        state = self.states.get(conversation_id)
        if state is None:
            state = self.states[conversation_id] = ConversationState(conversation_id)
        return state

    # -- connecting ------------------------------------------------------------

    async def connect(self) -> None:
        """Opens the WebSocket, waits for its hello, then catches up by sync."""
        async with self._lock:
            if self.online:
                return
            await self._open()
            self.online = True
            self.connects += 1
            catching_up = self._catch_up = asyncio.create_task(
                self.catch_up(), name=f"catch-up-{self.user_id}"
            )
        # disconnect cancels the catch-up: an offline device syncs nothing
        await asyncio.wait([catching_up])
        failure = None if catching_up.cancelled() else catching_up.exception()
        if failure is not None:
            raise failure

    async def disconnect(self) -> None:
        """Closes the WebSocket and stops the syncs in flight, as going offline."""
        async with self._lock:
            self.online = False
            await self._close()

    async def _open(self) -> None:
        url = f"{self.ws_url}?token={urllib.parse.quote(self.token)}"
        deadline = time.monotonic() + self.api.retry_for
        delay = 0.05
        while True:
            try:
                if await self._dial(url):
                    return
                failure = "closed before it said hello"
            except (OSError, TimeoutError, WebSocketException) as exc:
                failure = repr(exc)
            await self._close()
            if time.monotonic() + delay > deadline:
                raise ReplayError(f"{self.user_id}: WebSocket: {failure}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _dial(self, url: str) -> bool:
        """Connects; returns whether the socket is still open after its hello."""
        self._hello = asyncio.Event()
        socket = await connect(url, max_size=None, open_timeout=20)
        self._socket = socket
        reader = self._reader = asyncio.create_task(
            self._read(socket), name=f"ws-{self.user_id}"
        )
        # The server registers a connection before it reads from it, so its
        # "hello" (or the pong to our ping) means pushes reach us from now on:
        # a catch-up sync made after it misses nothing.
        await socket.send(json.dumps({"type": "ping"}))
        hello = asyncio.create_task(self._hello.wait())
        await asyncio.wait(
            [hello, reader], timeout=20, return_when=asyncio.FIRST_COMPLETED
        )
        hello.cancel()
        if reader.done():
            return False
        if not self._hello.is_set():
            logger.warning("%s: no hello or pong; syncing anyway", self.user_id)
        return True

    async def _close(self) -> None:
        tasks = [
            t
            for t in (self._reader, self._catch_up, *self._syncs.values())
            if t is not None and t is not asyncio.current_task()
        ]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._reader = None
        self._catch_up = None
        self._syncs.clear()
        if self._socket is not None:
            with contextlib.suppress(Exception):
                await self._socket.close()
            self._socket = None

    async def _read(self, socket: ClientConnection) -> None:
        try:
            async for raw in socket:
                self.on_frame()
                try:
                    frame = json.loads(raw)
                except ValueError:
                    logger.warning("%s: a frame that is not JSON", self.user_id)
                    continue
                self._on_frame(frame)
        except WebSocketException as exc:
            logger.debug("%s: WebSocket ended: %r", self.user_id, exc)
        if self.online:
            # The server dropped us (say a push timed out): reconnect as a
            # client does, and catch up from the cursors.
            self.drops += 1
            asyncio.get_running_loop().call_soon(self._redial)

    def _redial(self) -> None:
        task = asyncio.create_task(self._reconnect(), name=f"redial-{self.user_id}")
        self._redials.add(task)
        task.add_done_callback(self._redials.discard)

    async def _reconnect(self) -> None:
        async with self._lock:
            if not self.online or self._socket is None:
                return
            self.online = False
            self._reader = None
            await self._close()
        await asyncio.sleep(0.05)
        await self.connect()

    def _on_frame(self, frame: Any) -> None:
        if not isinstance(frame, Mapping):
            return
        kind = frame.get("type")
        if kind in ("hello", "pong"):
            self._hello.set()
        elif kind == "message" and isinstance(frame.get("message"), Mapping):
            message = frame["message"]
            message_id = str(message["messageId"])
            if message_id not in self.pushed:
                self.pushed.add(message_id)
                self.push_times[message_id] = time.monotonic()
            self.take(str(message["conversationId"]), entry_of(message))

    # -- messages in -----------------------------------------------------------

    def take(self, conversation_id: str, entry: ViewEntry) -> Offer:
        """Takes a pushed or acknowledged message; syncs if it shows a gap."""
        state = self.state(conversation_id)
        offer = state.offer(entry)
        if state.has_gap and self.online:
            self.start_gap_sync(conversation_id)
        return offer

    def start_gap_sync(self, conversation_id: str) -> None:
        """Starts a sync of the conversation unless one is running."""
        running = self._syncs.get(conversation_id)
        if running is None or running.done():
            self._syncs[conversation_id] = asyncio.create_task(
                self._fill_gap(conversation_id, self.gap_grace),
                name=f"sync-{self.user_id}-{conversation_id}",
            )

    async def _fill_gap(self, conversation_id: str, grace: float = 0.0) -> None:
        state = self.state(conversation_id)
        if grace > 0:
            # a push overtaken by an answer or another push is usually a few
            # milliseconds behind: give it a moment before asking the server
            await asyncio.sleep(grace)
            if not state.has_gap:
                return
        self.gap_syncs += 1
        for attempt in range(4):
            try:
                await self.sync_from_cursor(conversation_id)
            except ReplayError as exc:
                self.failed(f"gap sync of {conversation_id}: {exc}")
            if not state.has_gap:
                return
            await asyncio.sleep(0.05 * 2**attempt)
        missing = state.skip_gap()
        logger.warning(
            "%s: sync never filled seqs %s of %s; skipped them",
            self.user_id,
            missing,
            conversation_id,
        )

    async def sync_from_cursor(self, conversation_id: str) -> None:
        """Walks the sync pages of a conversation from the device's cursor."""
        state = self.state(conversation_id)
        pages = self.api.sync_pages(
            self.token, conversation_id, state.cursor, self.page_size
        )
        async for page in pages:
            state.add_holes([int(s) for s in page.get("holes", ())])
            for message in page["messages"]:
                entry = entry_of(message)
                if state.offer(entry) in (Offer.APPLIED, Offer.BUFFERED):
                    self.synced.add(entry.message_id)

    def failed(self, what: str) -> None:
        """Records a call that failed for good (the checker sees the result)."""
        self.errors.append(what)
        logger.warning("%s: %s", self.user_id, what)

    async def catch_up(self) -> None:
        """Syncs every conversation whose list row moved past the cursor.

        Walks ``/api/conversations`` from the device's version cursor, as a
        client does after a reconnect, and moves that cursor only once every
        changed conversation is synced.
        """
        try:
            await self._catch_up_once()
        except ReplayError as exc:
            self.failed(f"catch-up: {exc}")

    async def _catch_up_once(self) -> None:
        version = self.version
        behind = [c for c, state in self.states.items() if state.has_gap]
        while True:
            _, page = await self.api.call(
                "GET",
                "/api/conversations",
                token=self.token,
                params={"since": version, "limit": 100},
            )
            for summary in page["conversations"]:
                conversation_id = str(summary["conversationId"])
                if int(summary["lastSeq"]) > self.state(conversation_id).cursor:
                    behind.append(conversation_id)
            following = int(page["nextVersion"])
            if not page["hasMore"] or following <= version:
                version = max(version, following)
                break
            version = following
        for conversation_id in dict.fromkeys(behind):
            running = self._syncs.get(conversation_id)
            if running is not None and not running.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await running
            await self.sync_from_cursor(conversation_id)
            if self.state(conversation_id).has_gap:
                await self._fill_gap(conversation_id)
        self.version = max(self.version, version)

    async def settle(self) -> None:
        """Waits for the reconnects and gap syncs in flight."""
        while True:
            running = [
                t for t in (*self._redials, *self._syncs.values()) if not t.done()
            ]
            if not running:
                return
            await asyncio.gather(*running, return_exceptions=True)

    async def full_view(self, conversation_id: str, page_size: int) -> list[ViewEntry]:
        """Returns the conversation as a sync from 0 returns it, page by page."""
        entries: list[ViewEntry] = []
        pages = self.api.sync_pages(self.token, conversation_id, 0, page_size)
        async for page in pages:
            entries.extend(entry_of(m) for m in page["messages"])
        return entries

    async def close(self) -> None:
        """Goes offline for good."""
        redials = list(self._redials)
        for task in redials:
            task.cancel()
        await asyncio.gather(*redials, return_exceptions=True)
        await self.disconnect()
