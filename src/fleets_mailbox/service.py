"""`MailboxService`: the services wired over one set of stores and a bus."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs

from .analytics import AnalyticsConsumer
from .events import PUSH_GROUP
from .model import now_ms
from .notifications import NotificationService
from .pipeline import DEFAULT_MAX_BODY_BYTES, SendPipeline, StepHook
from .protocols import (
    AnalyticsStore,
    ConversationStore,
    GroupDirectory,
    MailboxStore,
    MessageBus,
    MessageStore,
    NotificationStore,
    Presence,
)
from .push import PushConsumer
from .sync import SyncService

__all__ = ["MailboxService", "Stores"]


@attrs.define
class Stores:
    """One store per kind of data, plus the directory.

    ``on_close`` releases what the stores hold (engines, clients).
    """

    messages: MessageStore
    mailboxes: MailboxStore
    conversations: ConversationStore
    notifications: NotificationStore
    analytics: AnalyticsStore
    directory: GroupDirectory
    on_close: Callable[[], Awaitable[None]] | None = None

    @classmethod
    def memory(cls) -> Stores:
        """Returns fresh in-memory stores."""
        from .adapters import memory

        return cls(
            messages=memory.MemoryMessageStore(),
            mailboxes=memory.MemoryMailboxStore(),
            conversations=memory.MemoryConversationStore(),
            notifications=memory.MemoryNotificationStore(),
            analytics=memory.MemoryAnalyticsStore(),
            directory=memory.MemoryDirectory(),
        )

    async def close(self) -> None:
        """Releases the stores' connections."""
        if self.on_close is not None:
            await self.on_close()


class MailboxService:
    """The send pipeline, sync, push, notifications and analytics of one node.

    `start` begins consuming the bus (push to ``presence``, analytics);
    `close` stops consuming and closes the bus and the stores.
    """

    def __init__(
        self,
        stores: Stores,
        bus: MessageBus,
        presence: Presence,
        *,
        push_group: str = PUSH_GROUP,
        analytics: bool = True,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        chunk_size: int = 1000,
        lease_ms: int = 30_000,
        clock: Callable[[], int] = now_ms,
        step_hook: StepHook | None = None,
    ) -> None:
        self.stores = stores
        self.bus = bus
        self.presence = presence
        self.directory = stores.directory
        self.pipeline = SendPipeline(
            messages=stores.messages,
            mailboxes=stores.mailboxes,
            conversations=stores.conversations,
            directory=stores.directory,
            bus=bus,
            max_body_bytes=max_body_bytes,
            chunk_size=chunk_size,
            lease_ms=lease_ms,
            clock=clock,
            step_hook=step_hook,
        )
        self.sync = SyncService(
            messages=stores.messages,
            mailboxes=stores.mailboxes,
            conversations=stores.conversations,
            bus=bus,
        )
        self.notifications = NotificationService(stores.notifications, bus, clock=clock)
        self.push = PushConsumer(bus, presence, group=push_group)
        self.analytics = AnalyticsConsumer(bus, stores.analytics) if analytics else None

    async def start(self) -> None:
        """Starts the bus consumers of this node."""
        await self.push.start()
        if self.analytics is not None:
            await self.analytics.start()

    async def close(self) -> None:
        """Stops the consumers, then closes the bus and the stores."""
        await self.push.close()
        if self.analytics is not None:
            await self.analytics.close()
        await self.bus.close()
        await self.stores.close()
