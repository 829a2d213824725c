"""What only the SQL adapters have: migrations, SQLite shared by processes,
bounded fan-out statements, pending recipients kept for repair, and the
translation of driver errors.

The behaviour every adapter shares is pinned by the conformance suites.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import event, func, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from conftest import create_mysql_database, drop_mysql_database, mysql_url
from fleets_mailbox import MessageStatus, StoreError, TransientStoreError
from fleets_mailbox.adapters.sql import (
    SqlConversationStore,
    SqlDirectory,
    SqlMailboxStore,
    SqlMessageStore,
    _dialect,
    alembic_config,
    create_sql_engine,
    open_sql_stores,
    schema,
    upgrade_schema,
)
from fleets_mailbox.model import now_ms
from fleets_mailbox.pipeline import SendPipeline
from fleets_mailbox.protocols import SummaryUpdate
from fleets_mailbox.service import Stores


def url_of(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_sql_engine(url_of(tmp_path / "fleets.sqlite3"))
    await upgrade_schema(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
async def empty_url(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[str]:
    """The URL of an empty database: a SQLite file, or a new MySQL database."""
    if request.param == "sqlite":
        yield url_of(tmp_path / "fleets.sqlite3")
        return
    server = mysql_url()
    url = await create_mysql_database(server)
    try:
        yield url
    finally:
        await drop_mysql_database(server, url)


@pytest.fixture
async def any_engine(empty_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated engine on each SQL database the tests have."""
    engine = create_sql_engine(empty_url)
    await upgrade_schema(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


def pipeline_of(engine: AsyncEngine, **options: Any) -> SendPipeline:
    return SendPipeline(
        messages=SqlMessageStore(engine),
        mailboxes=SqlMailboxStore(engine),
        conversations=SqlConversationStore(engine),
        directory=SqlDirectory(engine),
        **options,
    )


def pipeline_over(stores: Stores, **options: Any) -> SendPipeline:
    return SendPipeline(
        messages=stores.messages,
        mailboxes=stores.mailboxes,
        conversations=stores.conversations,
        directory=stores.directory,
        **options,
    )


class StatementCounter:
    """Counts the statements an engine sends, executemany counting once."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.count = 0
        event.listen(engine.sync_engine, "before_cursor_execute", self._seen)

    def _seen(self, *args: Any) -> None:
        self.count += 1


async def count_rows(engine: AsyncEngine, table: Any, *where: Any) -> int:
    async with engine.connect() as conn:
        value = await conn.scalar(select(func.count()).select_from(table).where(*where))
    return int(value or 0)


# Migrations


def _schema_diffs(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection,
        opts={
            "compare_type": True,
            "version_table": schema.VERSION_TABLE,
            "include_name": lambda name, type_, parents: (
                type_ != "table" or name != schema.VERSION_TABLE
            ),
        },
    )
    return list(compare_metadata(context, schema.metadata))


async def test_migrated_schema_equals_the_metadata(any_engine: AsyncEngine) -> None:
    async with any_engine.connect() as conn:
        assert await conn.run_sync(_schema_diffs) == []


async def test_migrating_again_changes_nothing_and_downgrade_drops_all(
    any_engine: AsyncEngine,
) -> None:
    engine = any_engine
    await upgrade_schema(engine)

    def tables(connection: Connection) -> set[str]:
        return set(inspect(connection).get_table_names())

    def downgrade(connection: Connection) -> None:
        command.downgrade(alembic_config(connection), "base")

    async with engine.begin() as conn:
        assert set(schema.metadata.tables) <= await conn.run_sync(tables)
        await conn.run_sync(downgrade)
        assert await conn.run_sync(tables) == {schema.VERSION_TABLE}


async def test_engines_migrating_at_once_all_succeed(empty_url: str) -> None:
    engines = [create_sql_engine(empty_url) for _ in range(4)]
    try:
        await asyncio.gather(*(upgrade_schema(e) for e in engines))
        async with engines[0].connect() as conn:
            assert await conn.run_sync(_schema_diffs) == []
    finally:
        for e in engines:
            await e.dispose()


async def test_upgrading_from_the_first_revision_keeps_versions_increasing(
    empty_url: str,
) -> None:
    engine = create_sql_engine(empty_url)
    try:
        await upgrade_schema(engine, "0001")
        old_row = (
            "INSERT INTO fleets_summaries (user_id, conversation_id, last_seq,"
            " last_message_id, last_sender_id, last_preview, last_at, read_seq,"
            " unread, version) VALUES ('ann', :c, 1, :m, 'bob', 'hi', 1, 0, 1, :v)"
        )
        async with engine.begin() as conn:
            for conversation, version in (("d:ann:bob", 5), ("d:ann:cid", 9)):
                await conn.execute(
                    text(old_row), {"c": conversation, "m": f"m{version}", "v": version}
                )
            await conn.execute(
                text("INSERT INTO fleets_counters (name, value) VALUES (:n, 9)"),
                {"n": "summary_version"},
            )

        await upgrade_schema(engine)

        store = SqlConversationStore(engine)
        update = SummaryUpdate(
            conversation_id="g:team",
            seq=1,
            message_id="m10",
            sender_id="bob",
            preview="new",
            created_at=2,
        )
        await store.apply_message(update, ["ann", "bob"])
        changed = await store.list_changed("ann", 9, 10)
        assert [(s.conversation_id, s.version > 9) for s in changed] == [
            ("g:team", True)
        ]
        assert [s.version for s in await store.list_changed("ann", 0, 10)][:2] == [
            5,
            9,
        ]
    finally:
        await engine.dispose()


async def test_a_file_stays_in_wal_mode(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        mode = await conn.exec_driver_sql("PRAGMA journal_mode")
        assert mode.scalar() == "wal"


# Several OS processes on one SQLite file

MEMBERS = ("ann", "bea", "cid", "dan", "eve")

SENDER = """
import asyncio, os, sys
from fleets_mailbox.adapters.sql import open_sql_stores
from fleets_mailbox.pipeline import SendPipeline
from fleets_mailbox.protocols import SummaryUpdate

async def main(url, name, ready, count):
    stores = await open_sql_stores(url)
    try:
        pipeline = SendPipeline(
            messages=stores.messages,
            mailboxes=stores.mailboxes,
            conversations=stores.conversations,
            directory=stores.directory,
            chunk_size=2,
        )
        open(os.path.join(ready, name), "w").close()
        while len(os.listdir(ready)) < 2:
            await asyncio.sleep(0.01)
        members = MEMBERS

        async def send(i):
            sender = members[i % len(members)]
            await pipeline.send(sender, "g:team", f"{name} {i}", f"{name}-{i}")

        await asyncio.gather(*(send(i) for i in range(count)))
    finally:
        await stores.close()

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
""".replace("MEMBERS", repr(MEMBERS))


@pytest.mark.slow
async def test_two_processes_sending_into_one_group(tmp_path: Path) -> None:
    url = url_of(tmp_path / "shared.sqlite3")
    stores = await open_sql_stores(url)
    await stores.directory.create_group("team", MEMBERS[0], "Team", MEMBERS)
    ready = tmp_path / "ready"
    ready.mkdir()

    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            SENDER,
            url,
            name,
            str(ready),
            "50",
            stderr=asyncio.subprocess.PIPE,
        )
        for name in ("p1", "p2")
    ]
    for process in processes:
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=180)
        assert process.returncode == 0, stderr.decode()

    try:
        conversation = "g:team"
        assert await stores.mailboxes.last_seq(conversation) == 100
        assert await stores.mailboxes.holes(conversation, 0, 100) == []
        assert await stores.messages.list_pending(now_ms() + 1, 10) == []

        by_seq: dict[int, str] | None = None
        for user in MEMBERS:
            entries = await stores.mailboxes.read(user, conversation, 0, 1000)
            assert [e.seq for e in entries] == list(range(1, 101)), user
            seen = {e.seq: e.message_id for e in entries}
            assert by_seq is None or seen == by_seq
            by_seq = seen
        assert by_seq is not None
        found = await stores.messages.get_many(by_seq.values())
        assert len(found) == 100
        assert {m.client_msg_id for m in found.values()} == {
            f"{p}-{i}" for p in ("p1", "p2") for i in range(50)
        }
        for seq, message_id in by_seq.items():
            message = found[message_id]
            assert (message.seq, message.status) == (seq, MessageStatus.COMMITTED)

        for user in MEMBERS:
            own = [m.seq for m in found.values() if m.sender_id == user]
            read_seq = max(own, default=0)
            expected = sum(
                1 for m in found.values() if m.sender_id != user and m.seq > read_seq
            )
            row = await stores.conversations.get(user, conversation)
            assert row is not None
            assert (row.last_seq, row.read_seq, row.unread) == (100, read_seq, expected)
            counted = await stores.mailboxes.count_unread(
                user, conversation, read_seq, 100
            )
            assert counted == expected
    finally:
        await stores.close()


# Big groups


async def test_a_5000_member_send_takes_a_bounded_number_of_statements(
    any_engine: AsyncEngine,
) -> None:
    engine = any_engine
    directory = SqlDirectory(engine)
    members = [f"user{i:05d}" for i in range(5000)]
    await directory.create_group("big", members[0], "Big", members)
    await directory.create_group("small", members[0], "Small", members[:10])
    counter = StatementCounter(engine)

    async def statements(group: str, chunk_size: int, n: int) -> int:
        pipeline = pipeline_of(engine, chunk_size=chunk_size)
        counter.count = 0
        await pipeline.send(members[0], f"g:{group}", "hello", f"{group}-{n}")
        return counter.count

    await statements("small", 5000, 0)  # creates the counter rows
    small = await statements("small", 5000, 1)
    big = await statements("big", 5000, 1)
    chunked = await statements("big", 1000, 2)

    assert big == small
    # Four more chunks, each one transaction of a few statements for the
    # mailbox entries and one for the summaries.
    assert small < chunked <= small + 4 * 8
    entries = schema.mailbox_entries
    assert await count_rows(engine, entries, entries.c.conversation_id == "g:big") == (
        10_000
    )
    summaries = schema.summaries
    unread = await count_rows(
        engine,
        summaries,
        summaries.c.conversation_id == "g:big",
        summaries.c.unread == 2,
    )
    assert unread == 4999


async def test_pending_recipients_survive_for_repair(tmp_path: Path) -> None:
    url = url_of(tmp_path / "repair.sqlite3")
    members = [f"m{i:03d}" for i in range(300)]

    async def crash(step: str) -> None:
        if step == "summaries":
            raise RuntimeError("crash before the summaries")

    stores = await open_sql_stores(url)
    try:
        await stores.directory.create_group("crew", members[0], "Crew", members)
        pipeline = pipeline_over(stores, chunk_size=64, step_hook=crash)
        with pytest.raises(RuntimeError):
            await pipeline.send(members[1], "g:crew", "half done", "half")
    finally:
        await stores.close()

    stores = await open_sql_stores(url)
    try:
        message = await stores.messages.get_by_client_id(members[1], "half")
        assert message is not None
        assert message.status is MessageStatus.PENDING
        recipients = await stores.messages.pending_recipients(message.message_id)
        assert recipients == tuple(members)

        later = pipeline_over(stores, clock=lambda: now_ms() + 120_000)
        assert await later.repair() == 1

        done = await stores.messages.get(message.message_id)
        assert done is not None
        assert (done.seq, done.status) == (1, MessageStatus.COMMITTED)
        assert await stores.messages.pending_recipients(message.message_id) == ()
        for user in (members[0], members[1], members[-1]):
            entries = await stores.mailboxes.read(user, "g:crew", 0, 10)
            assert [(e.seq, e.message_id) for e in entries] == [(1, done.message_id)]
            row = await stores.conversations.get(user, "g:crew")
            assert row is not None
            assert row.unread == (0 if user == members[1] else 1)
    finally:
        await stores.close()


# Errors


async def test_a_held_write_lock_is_a_transient_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_dialect, "BUSY_TIMEOUT_MS", 100)
    path = tmp_path / "locked.sqlite3"
    stores = await open_sql_stores(url_of(path))
    other = sqlite3.connect(path, isolation_level=None)
    try:
        await stores.mailboxes.declare_hole("g:x", 1)
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(TransientStoreError) as raised:
            await stores.mailboxes.declare_hole("g:x", 2)
        assert isinstance(raised.value.__cause__, OperationalError)
        # Readers do not wait for the writer in WAL mode.
        assert await stores.mailboxes.holes("g:x", 0, 10) == [1]
        other.execute("ROLLBACK")
        await stores.mailboxes.declare_hole("g:x", 2)
        assert await stores.mailboxes.holes("g:x", 0, 10) == [1, 2]
    finally:
        other.close()
        await stores.close()


async def test_a_missing_schema_is_a_permanent_store_error(tmp_path: Path) -> None:
    stores = await open_sql_stores(
        url_of(tmp_path / "empty.sqlite3"), create_schema=False
    )
    try:
        with pytest.raises(StoreError) as raised:
            await stores.mailboxes.last_seq("g:x")
        assert not raised.value.transient
        assert raised.value.__cause__ is not None
    finally:
        await stores.close()


# Smoke


async def test_smoke_send_sync_and_reopen(tmp_path: Path) -> None:
    url = url_of(tmp_path / "smoke.sqlite3")
    stores = await open_sql_stores(url)
    try:
        pipeline = pipeline_over(stores)
        first = await pipeline.send("ann", "d:ann:bob", "hi", "c1")
        again = await pipeline.send("ann", "d:ann:bob", "hi", "c1")
        assert again == first
        await stores.notifications.add("bob", "invite", {"group": "g"}, 1)
    finally:
        await stores.close()

    stores = await open_sql_stores(url)
    try:
        entries = await stores.mailboxes.read("bob", "d:ann:bob", 0, 10)
        assert [e.message_id for e in entries] == [first.message_id]
        (note,) = await stores.notifications.list("bob", 0, 10)
        assert (note.notification_id, note.payload) == (1, {"group": "g"})
    finally:
        await stores.close()


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("notaurl", "not a database URL"),
        ("mysql://chat@db/chat", "no asyncio driver"),
        ("sqlite:///chat.db", "no asyncio driver"),
    ],
)
def test_an_unusable_url_is_refused_clearly(url: str, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        create_sql_engine(url)
