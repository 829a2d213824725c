"""A `Connection` over a Starlette (FastAPI) WebSocket: `WebSocketConnection`.

The push consumer calls `WebSocketConnection.push` with frames of snake_case
keys (see `fleets_mailbox.push`); the connection sends each one as a JSON text
frame with camelCase keys, converted recursively, so the messages inside
frames read as the HTTP API's do. Frames are queued per connection and sent
in order by one writer task (with a lock around the socket), so concurrent
pushes never interleave and a slow client never delays the others. Once a send
fails, takes longer than ``send_timeout`` seconds or the client falls
``max_queued`` frames behind, the connection is closed and every later push
raises `ConnectionClosed`, so the push consumer drops it; the client catches
up with sync when it reconnects.

Needs the ``[server]`` extra (Starlette comes with FastAPI). It does not read
from the socket: the application's WebSocket endpoint owns the receive loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from starlette.websockets import WebSocket

__all__ = ["ConnectionClosed", "WebSocketConnection", "camel_case", "to_camel"]

logger = logging.getLogger(__name__)


class ConnectionClosed(ConnectionError):
    """The WebSocket is closed, or a send to it failed or timed out."""


def to_camel(name: str) -> str:
    """Returns a snake_case name in camelCase (``read_seq`` -> ``readSeq``)."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def camel_case(value: Any) -> Any:
    """Returns ``value`` with every mapping key in camelCase, recursively.

    Lists and tuples are walked too; other values are returned as they are.
    """
    if isinstance(value, Mapping):
        return {
            to_camel(k) if isinstance(k, str) else k: camel_case(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [camel_case(v) for v in value]
    return value


class WebSocketConnection:
    """Pushes JSON frames to one accepted Starlette WebSocket.

    `push` never waits for the network: it queues the frame and one writer
    task sends the queue in order, one frame at a time, so a slow client never
    holds up the push consumer's deliveries to everyone else. A client more
    than ``max_queued`` frames behind, or a send that fails or takes longer
    than ``send_timeout`` seconds, closes the connection (code 1011); from
    then on `push` raises `ConnectionClosed`.
    """

    def __init__(
        self,
        websocket: WebSocket,
        *,
        connection_id: str | None = None,
        send_timeout: float = 10.0,
        max_queued: int = 1000,
    ) -> None:
        if max_queued < 1 or send_timeout <= 0:
            raise ValueError("max_queued and send_timeout must be positive")
        self.websocket = websocket
        self.send_timeout = send_timeout
        self._connection_id = connection_id or uuid.uuid4().hex
        self._queue: asyncio.Queue[str] = asyncio.Queue(max_queued)
        self._lock = asyncio.Lock()  # one send or close on the socket at a time
        self._writer: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def connection_id(self) -> str:
        """A unique id of this connection."""
        return self._connection_id

    @property
    def closed(self) -> bool:
        """Whether the connection is known to be closed."""
        return self._closed

    async def push(self, frame: Mapping[str, Any]) -> None:
        """Queues one frame, keys in camelCase; raises `ConnectionClosed`."""
        if self._closed:
            raise ConnectionClosed(f"connection {self._connection_id} is closed")
        text = json.dumps(camel_case(frame), separators=(",", ":"), ensure_ascii=False)
        try:
            self._queue.put_nowait(text)
        except asyncio.QueueFull:
            await self._abort("the client fell too far behind")
            raise ConnectionClosed(
                f"connection {self._connection_id} fell "
                f"{self._queue.maxsize} frames behind"
            ) from None
        if self._writer is None:
            self._writer = asyncio.create_task(
                self._write(), name=f"push-writer-{self._connection_id}"
            )

    async def flush(self) -> None:
        """Waits until every queued frame is sent or dropped."""
        await self._queue.join()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Closes the socket if it is still open; queued frames are dropped."""
        if self._closed:
            return
        self._closed = True
        self._stop_writer()
        async with self._lock:
            try:
                await self.websocket.close(code, reason)
            except Exception:
                logger.debug(
                    "closing connection %s failed", self._connection_id, exc_info=True
                )

    def mark_closed(self) -> None:
        """Records that the peer went away: later pushes raise at once."""
        self._closed = True
        self._stop_writer()

    async def _write(self) -> None:
        while True:
            text = await self._queue.get()
            try:
                async with self._lock:
                    if self._closed:
                        continue
                    async with asyncio.timeout(self.send_timeout):
                        await self.websocket.send_text(text)
            except Exception as exc:
                logger.debug(
                    "push to connection %s failed: %r", self._connection_id, exc
                )
                await self._abort("push failed")
            finally:
                self._queue.task_done()

    async def _abort(self, reason: str) -> None:
        # A send cut off half way leaves the stream unusable: close it, so the
        # client notices, reconnects and catches up with sync.
        if self._closed:
            return
        self._closed = True
        self._drop_queued()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await self.websocket.close(1011, reason)

    def _stop_writer(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            self._writer = None
        self._drop_queued()

    def _drop_queued(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
