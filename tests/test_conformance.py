"""The conformance suites of `fleets_mailbox.testing`, run on our adapters.

Memory: the in-memory stores, `MemoryDirectory` and `LocalBus`. SQL: the
SQL stores from `fleets_mailbox.adapters.sql`, every store of one test over
one database, once on a SQLite file and once on MySQL/MariaDB (marked
``mysql``; skipped with the reason without ``FLEETS_TEST_MYSQL_URL``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from conftest import (
    create_mysql_database,
    drop_mysql_database,
    mysql_url,
    require_sql,
    sqlite_url,
)
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


# ---------------------------------------------------------------- SQL


class _SqlDatabase:
    """Opens the SQL stores over a new database per test, closes them after.

    Each test runs twice: on a SQLite file, and on a new database of the
    MySQL/MariaDB server of ``FLEETS_TEST_MYSQL_URL`` (dropped after it).
    """

    _stores: Stores | None = None

    @pytest.fixture(
        autouse=True, params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)]
    )
    async def _database(
        self, request: pytest.FixtureRequest, tmp_path: Path
    ) -> AsyncIterator[None]:
        self._sql: Any = require_sql()
        if request.param == "sqlite":
            self._url = sqlite_url(tmp_path / "fleets.sqlite3")
            yield
            return
        server = mysql_url()
        self._url = await create_mysql_database(server)
        try:
            yield
        finally:
            await drop_mysql_database(server, self._url)

    async def _open(self) -> Stores:
        assert self._stores is None, "one bundle per test"
        self._stores = await self._sql.open_sql_stores(self._url)
        return self._stores

    async def _close(self) -> None:
        if self._stores is not None:
            await self._stores.close()
            self._stores = None


class TestSqlMessageStore(_SqlDatabase, MessageStoreSuite):
    async def make_store(self) -> MessageStore:
        store = (await self._open()).messages
        assert isinstance(store, self._sql.SqlMessageStore)
        return store

    async def close_store(self, store: MessageStore) -> None:
        await self._close()


class TestSqlMailboxStore(_SqlDatabase, MailboxStoreSuite):
    async def make_store(self) -> MailboxStore:
        store = (await self._open()).mailboxes
        assert isinstance(store, self._sql.SqlMailboxStore)
        return store

    async def close_store(self, store: MailboxStore) -> None:
        await self._close()


class TestSqlConversationStore(_SqlDatabase, ConversationStoreSuite):
    async def make_store(self) -> ConversationStore:
        store = (await self._open()).conversations
        assert isinstance(store, self._sql.SqlConversationStore)
        return store

    async def close_store(self, store: ConversationStore) -> None:
        await self._close()


class TestSqlNotificationStore(_SqlDatabase, NotificationStoreSuite):
    async def make_store(self) -> NotificationStore:
        store = (await self._open()).notifications
        assert isinstance(store, self._sql.SqlNotificationStore)
        return store

    async def close_store(self, store: NotificationStore) -> None:
        await self._close()


class TestSqlAnalyticsStore(_SqlDatabase, AnalyticsStoreSuite):
    async def make_store(self) -> AnalyticsStore:
        store = (await self._open()).analytics
        assert isinstance(store, self._sql.SqlAnalyticsStore)
        return store

    async def close_store(self, store: AnalyticsStore) -> None:
        await self._close()


class TestSqlDirectory(_SqlDatabase, DirectorySuite):
    async def make_directory(self) -> GroupDirectory:
        directory = (await self._open()).directory
        assert isinstance(directory, self._sql.SqlDirectory)
        return directory

    async def close_directory(self, directory: GroupDirectory) -> None:
        await self._close()


class TestSqlPipeline(_SqlDatabase, PipelineSuite):
    async def make_stores(self) -> Stores:
        return await self._open()

    async def close_stores(self, stores: Stores) -> None:
        await self._close()
