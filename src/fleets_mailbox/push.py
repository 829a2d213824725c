"""The push consumer: bus events to the live connections of this node.

For each message, read or notification event it asks `Presence` which of
the event's users are connected here and pushes one frame to each of their
connections. A connection that fails is dropped from presence; the client
catches up with sync when it reconnects. Frames::

    {"type": "message", "message": {...}}
    {"type": "read", "conversation_id": ..., "read_seq": ..., "unread": ...}
    {"type": "notification", "notification": {...}}

Clients dedupe and order messages by ``(conversation_id, seq)`` and fill
gaps with sync: the bus may lose, repeat or reorder events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from .events import MESSAGE_TOPIC, NOTIFICATION_TOPIC, PUSH_GROUP, READ_TOPIC
from .protocols import BusEvent, MessageBus, Presence, Subscription

__all__ = ["PushConsumer"]

logger = logging.getLogger(__name__)


class PushConsumer:
    """Consumes push events as ``group`` and delivers them through ``presence``.

    With several application nodes, give each node its own ``group`` so that
    every node sees every event and pushes to the connections it holds.
    """

    def __init__(
        self, bus: MessageBus, presence: Presence, *, group: str = PUSH_GROUP
    ) -> None:
        self.bus = bus
        self.presence = presence
        self.group = group
        self.pushed = 0
        self.failed = 0
        self._subscriptions: list[Subscription] = []

    async def start(self) -> None:
        """Subscribes to the message, read and notification topics."""
        for topic in (MESSAGE_TOPIC, READ_TOPIC, NOTIFICATION_TOPIC):
            self._subscriptions.append(
                await self.bus.subscribe(topic, self.group, self.handle)
            )

    async def close(self) -> None:
        """Stops consuming."""
        for subscription in self._subscriptions:
            await subscription.close()
        self._subscriptions.clear()

    async def handle(self, event: BusEvent) -> None:
        """Pushes one event to the connections of its users on this node."""
        payload = event.payload
        kind = payload.get("type")
        users: Iterable[str]
        frame: Mapping[str, Any]
        if kind == "message":
            users = payload["recipients"]
            frame = {"type": "message", "message": payload["message"]}
        elif kind == "read":
            users = (payload["user_id"],)
            frame = dict(payload)
        elif kind == "notification":
            users = (payload["notification"]["user_id"],)
            frame = dict(payload)
        else:
            logger.warning("ignoring bus event of unknown type %r", kind)
            return
        await asyncio.gather(*(self._push_user(u, frame) for u in users))

    async def _push_user(self, user_id: str, frame: Mapping[str, Any]) -> None:
        for connection in await self.presence.connections(user_id):
            try:
                await connection.push(frame)
            except Exception:
                self.failed += 1
                logger.debug(
                    "push to %s failed; dropping connection %s",
                    user_id,
                    connection.connection_id,
                    exc_info=True,
                )
                await self.presence.disconnect(user_id, connection)
            else:
                self.pushed += 1
