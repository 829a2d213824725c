"""The conformance suites of `fleets_mailbox.testing`, run on our adapters.

Memory: the in-memory stores, `MemoryDirectory` and `LocalBus`. SQLite: the
SQL stores from `fleets_mailbox.adapters.sql`, every store of one test over
one database file (skipped while that module does not exist).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import require_sql, sqlite_url
from fleets_mailbox import Stores
from fleets_mailbox.adapters.local_bus import LocalBus
from fleets_mailbox.protocols import (
    AnalyticsStore,
    ConversationStore,
    GroupDirectory,
    MailboxStore,
    MessageBus,
    MessageStore,
    NotificationStore,
)
from fleets_mailbox.testing import (
    AnalyticsStoreSuite,
    ConversationStoreSuite,
    DirectorySuite,
    MailboxStoreSuite,
    MessageBusSuite,
    MessageStoreSuite,
    NotificationStoreSuite,
    PipelineSuite,
)

# ---------------------------------------------------------------- memory


class TestMemoryMessageStore(MessageStoreSuite):
    async def make_store(self) -> MessageStore:
        return Stores.memory().messages


class TestMemoryMailboxStore(MailboxStoreSuite):
    async def make_store(self) -> MailboxStore:
        return Stores.memory().mailboxes


class TestMemoryConversationStore(ConversationStoreSuite):
    async def make_store(self) -> ConversationStore:
        return Stores.memory().conversations


class TestMemoryNotificationStore(NotificationStoreSuite):
    async def make_store(self) -> NotificationStore:
        return Stores.memory().notifications


class TestMemoryAnalyticsStore(AnalyticsStoreSuite):
    async def make_store(self) -> AnalyticsStore:
        return Stores.memory().analytics


class TestMemoryDirectory(DirectorySuite):
    async def make_directory(self) -> GroupDirectory:
        return Stores.memory().directory


class TestMemoryPipeline(PipelineSuite):
    async def make_stores(self) -> Stores:
        return Stores.memory()


class TestLocalBus(MessageBusSuite):
    delivery_timeout = 5.0
    redelivery_timeout = 5.0

    async def make_bus(self) -> MessageBus:
        return LocalBus(retry_delay=0.01)

    async def settle(self, bus: MessageBus) -> None:
        assert isinstance(bus, LocalBus)
        await bus.drain()


# ---------------------------------------------------------------- sqlite


class _SqliteDatabase:
    """Opens the SQL stores over one SQLite file per test, closes them after."""

    _stores: Stores | None = None

    @pytest.fixture(autouse=True)
    def _database(self, tmp_path: Path) -> None:
        self._sql: Any = require_sql()
        self._url = sqlite_url(tmp_path / "fleets.sqlite3")

    async def _open(self) -> Stores:
        assert self._stores is None, "one bundle per test"
        self._stores = await self._sql.open_sql_stores(self._url)
        return self._stores

    async def _close(self) -> None:
        if self._stores is not None:
            await self._stores.close()
            self._stores = None


class TestSqliteMessageStore(_SqliteDatabase, MessageStoreSuite):
    async def make_store(self) -> MessageStore:
        store = (await self._open()).messages
        assert isinstance(store, self._sql.SqlMessageStore)
        return store

    async def close_store(self, store: MessageStore) -> None:
        await self._close()


class TestSqliteMailboxStore(_SqliteDatabase, MailboxStoreSuite):
    async def make_store(self) -> MailboxStore:
        store = (await self._open()).mailboxes
        assert isinstance(store, self._sql.SqlMailboxStore)
        return store

    async def close_store(self, store: MailboxStore) -> None:
        await self._close()


class TestSqliteConversationStore(_SqliteDatabase, ConversationStoreSuite):
    async def make_store(self) -> ConversationStore:
        store = (await self._open()).conversations
        assert isinstance(store, self._sql.SqlConversationStore)
        return store

    async def close_store(self, store: ConversationStore) -> None:
        await self._close()


class TestSqliteNotificationStore(_SqliteDatabase, NotificationStoreSuite):
    async def make_store(self) -> NotificationStore:
        store = (await self._open()).notifications
        assert isinstance(store, self._sql.SqlNotificationStore)
        return store

    async def close_store(self, store: NotificationStore) -> None:
        await self._close()


class TestSqliteAnalyticsStore(_SqliteDatabase, AnalyticsStoreSuite):
    async def make_store(self) -> AnalyticsStore:
        store = (await self._open()).analytics
        assert isinstance(store, self._sql.SqlAnalyticsStore)
        return store

    async def close_store(self, store: AnalyticsStore) -> None:
        await self._close()


class TestSqliteDirectory(_SqliteDatabase, DirectorySuite):
    async def make_directory(self) -> GroupDirectory:
        directory = (await self._open()).directory
        assert isinstance(directory, self._sql.SqlDirectory)
        return directory

    async def close_directory(self, directory: GroupDirectory) -> None:
        await self._close()


class TestSqlitePipeline(_SqliteDatabase, PipelineSuite):
    async def make_stores(self) -> Stores:
        return await self._open()

    async def close_stores(self, stores: Stores) -> None:
        await self._close()
