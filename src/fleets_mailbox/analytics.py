"""The analytics consumer: counts messages and active users, off the send path.

It consumes message events on its own consumer group, so it sees every event
whatever push does, and counts each message id once however often the bus
delivers it.
"""

from __future__ import annotations

import datetime
import logging

from .events import ANALYTICS_GROUP, MESSAGE_TOPIC
from .model import ConversationKind, conversation_kind
from .protocols import AnalyticsStore, BusEvent, MessageBus, Subscription

__all__ = ["AnalyticsConsumer", "day_of"]

logger = logging.getLogger(__name__)


def day_of(millis: int) -> str:
    """Returns the UTC day (``YYYY-MM-DD``) of a time in milliseconds."""
    moment = datetime.datetime.fromtimestamp(millis / 1000, tz=datetime.UTC)
    return moment.date().isoformat()


class AnalyticsConsumer:
    """Counts every message event into an `AnalyticsStore`."""

    def __init__(
        self, bus: MessageBus, store: AnalyticsStore, *, group: str = ANALYTICS_GROUP
    ) -> None:
        self.bus = bus
        self.store = store
        self.group = group
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        """Subscribes to the message topic."""
        self._subscription = await self.bus.subscribe(
            MESSAGE_TOPIC, self.group, self.handle
        )

    async def close(self) -> None:
        """Stops consuming."""
        if self._subscription is not None:
            await self._subscription.close()
            self._subscription = None

    async def handle(self, event: BusEvent) -> None:
        """Counts one message event (again-delivered events count once)."""
        message = event.payload.get("message")
        if not isinstance(message, dict):
            logger.warning("ignoring message event without a message: %s", event.key)
            return
        kind = conversation_kind(message["conversation_id"])
        names = {
            ConversationKind.DIRECT: "direct",
            ConversationKind.GROUP: "group",
            ConversationKind.SYSTEM: "system",
        }
        await self.store.record_message(
            message["message_id"],
            day_of(int(message["created_at"])),
            names[kind],
            message["sender_id"],
        )
