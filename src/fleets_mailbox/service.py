"""`MailboxService`: the services wired over one set of stores and a bus."""

from __future__ import annotations

import asyncio
import contextlib
import logging
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

logger = logging.getLogger(__name__)


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

    `start` begins consuming the bus (push to ``presence``, analytics) and,
    unless ``repair_every_s`` is None, runs `SendPipeline.repair` that often
    for sends left pending longer than ``repair_after_ms``; `close` stops all
    that and closes the bus and the stores.
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
        repair_every_s: float | None = 30.0,
        repair_after_ms: int = 60_000,
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
        self.repair_every_s = repair_every_s
        self.repair_after_ms = repair_after_ms
        self._repairer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Starts the bus consumers of this node."""
        await self.push.start()
        if self.analytics is not None:
            await self.analytics.start()
        if self.repair_every_s is not None:
            self._repairer = asyncio.create_task(
                self._repair_forever(self.repair_every_s)
            )

    async def close(self) -> None:
        """Stops the consumers and the repairer, then closes the bus and stores."""
        if self._repairer is not None:
            self._repairer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._repairer
            self._repairer = None
        await self.push.close()
        if self.analytics is not None:
            await self.analytics.close()
        await self.bus.close()
        await self.stores.close()

    async def _repair_forever(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.pipeline.repair(self.repair_after_ms)
            except Exception:
                logger.warning("repairing pending sends failed", exc_info=True)
