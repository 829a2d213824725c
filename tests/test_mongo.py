"""The MongoDB adapters on the server of ``FLEETS_TEST_MONGO_URI``.

The conformance suites of `fleets_mailbox.testing` run against
`MongoMessageStore`, `MongoMailboxStore` and the whole pipeline with content
and mailboxes in MongoDB; each test gets its own database, dropped after.
The cases and the Hypothesis state machine run on MongoDB through the
"mongo" backend of conftest.py. Skipped, with the reason, when the variable
is unset (scripts/test.sh starts a server and sets it).
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from conftest import drop_mongo_database, mongo_uri, require_sql, sqlite_url
from fleets_mailbox import Stores
from fleets_mailbox.adapters.mongo import (
    MongoMailboxStore,
    MongoMessageStore,
    open_mongo_stores,
    with_mongo,
)
from fleets_mailbox.errors import StoreError
from fleets_mailbox.protocols import MailboxStore, MessageStore
from fleets_mailbox.testing import MailboxStoreSuite, MessageStoreSuite, PipelineSuite

pytestmark = pytest.mark.mongo


class _MongoDatabase:
    """Gives each test a database of its own on the test server."""

    _client: Any = None

    @pytest.fixture(autouse=True)
    def _database(self, tmp_path: Path) -> None:
        self._uri = mongo_uri()
        self._name = f"fleets_test_{uuid.uuid4().hex[:12]}"
        self._tmp = tmp_path

    async def _open(self) -> tuple[MongoMessageStore, MongoMailboxStore]:
        messages, mailboxes, self._client = await open_mongo_stores(
            self._uri, self._name
        )
        return messages, mailboxes

    async def _close(self) -> None:
        if self._client is not None:
            await self._client.drop_database(self._name)
            await self._client.close()
            self._client = None


class TestMongoMessageStore(_MongoDatabase, MessageStoreSuite):
    async def make_store(self) -> MessageStore:
        return (await self._open())[0]

    async def close_store(self, store: MessageStore) -> None:
        await self._close()


class TestMongoMailboxStore(_MongoDatabase, MailboxStoreSuite):
    async def make_store(self) -> MailboxStore:
        return (await self._open())[1]

    async def close_store(self, store: MailboxStore) -> None:
        await self._close()


class TestMongoPipeline(_MongoDatabase, PipelineSuite):
    async def make_stores(self) -> Stores:
        sql = require_sql()
        base = await sql.open_sql_stores(sqlite_url(self._tmp / "rest.sqlite3"))
        return await with_mongo(base, self._uri, self._name)

    async def close_stores(self, stores: Stores) -> None:
        await stores.close()
        await drop_mongo_database(self._uri, self._name)


async def test_indexes_are_created_once_whatever_the_starts() -> None:
    uri, name = mongo_uri(), f"fleets_test_{uuid.uuid4().hex[:12]}"
    try:
        for _ in range(2):
            *_, client = await open_mongo_stores(uri, name)
            await client.close()
        _, _, client = await open_mongo_stores(uri, name)
        db = client[name]
        message_indexes = await db["fleets_messages"].index_information()
        mailbox_indexes = await db["fleets_mailbox"].index_information()
        await client.close()
    finally:
        await drop_mongo_database(uri, name)
    assert message_indexes["idempotency_key"]["unique"] is True
    assert mailbox_indexes["mailbox_entry"]["unique"] is True
    assert mailbox_indexes["mailbox_entry"]["key"] == [
        ("user_id", 1),
        ("conversation_id", 1),
        ("seq", 1),
    ]


@pytest.mark.parametrize(
    "hostile", [{"$ne": ""}, {"$gt": ""}, "$where", ["a"], 5, None]
)
async def test_operator_values_never_reach_a_query(hostile: object) -> None:
    uri, name = mongo_uri(), f"fleets_test_{uuid.uuid4().hex[:12]}"
    messages, mailboxes, client = await open_mongo_stores(uri, name)
    try:
        with pytest.raises(StoreError):
            await messages.get(hostile)  # type: ignore[arg-type]
        with pytest.raises(StoreError):
            await mailboxes.read(hostile, "g:team", 0, 10)  # type: ignore[arg-type]
        with pytest.raises(StoreError):
            await messages.get_by_client_id("alice", hostile)  # type: ignore[arg-type]
    finally:
        await client.drop_database(name)
        await client.close()


_SENDER = textwrap.dedent(
    """
    import asyncio, sys
    from fleets_mailbox.adapters.mongo import with_mongo
    from fleets_mailbox.adapters.sql import open_sql_stores
    from fleets_mailbox.pipeline import SendPipeline

    async def main(uri, database, sqlite, name, count):
        stores = await with_mongo(await open_sql_stores(sqlite), uri, database)
        pipeline = SendPipeline(
            messages=stores.messages, mailboxes=stores.mailboxes,
            conversations=stores.conversations, directory=stores.directory,
        )
        for i in range(count):
            await pipeline.send(name, "g:team", f"{name} {i}", f"{name}-{i}")
        await stores.close()

    uri, database, sqlite, name, count = sys.argv[1:]
    asyncio.run(main(uri, database, sqlite, name, int(count)))
    """
)


@pytest.mark.slow
async def test_two_processes_sending_into_one_group(tmp_path: Path) -> None:
    """Two OS processes send 40 messages each into one group at once."""
    uri, name = mongo_uri(), f"fleets_test_{uuid.uuid4().hex[:12]}"
    sqlite = sqlite_url(tmp_path / "rest.sqlite3")
    members = ["alice", "bob", "carol", "dave"]
    stores = await with_mongo(await require_sql().open_sql_stores(sqlite), uri, name)
    try:
        await stores.directory.create_group("team", "alice", "Team", members)
        script = tmp_path / "sender.py"
        script.write_text(_SENDER)
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable, str(script), uri, name, sqlite, sender, "40"
            )
            for sender in ("alice", "bob")
        ]
        assert [await p.wait() for p in procs] == [0, 0]

        for user in members:
            entries = await stores.mailboxes.read(user, "g:team", 0, 1000)
            assert [e.seq for e in entries] == list(range(1, 81)), user
            found = await stores.messages.get_many([e.message_id for e in entries])
            assert len(found) == 80
            for sender in ("alice", "bob"):
                own = [
                    found[e.message_id].body for e in entries if e.sender_id == sender
                ]
                assert own == [f"{sender} {i}" for i in range(40)], (user, sender)
            summary = await stores.conversations.get(user, "g:team")
            assert summary is not None and summary.last_seq == 80
            counted = await stores.mailboxes.count_unread(
                user, "g:team", summary.read_seq, summary.last_seq
            )
            assert summary.unread == counted
    finally:
        await stores.close()
        await drop_mongo_database(uri, name)


@pytest.mark.slow
async def test_replay_with_content_and_mailboxes_in_mongo() -> None:
    from fleets_mailbox.replay import replay

    report = await replay(None, messages=150, users=10, seed=3, mongo_uri=mongo_uri())
    assert report.sent == report.stored == 150
    assert (report.lost, report.duplicated, report.misordered) == (0, 0, 0)
    assert report.ok and report.pushed > 0
