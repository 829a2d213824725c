"""The SQL stores on the MySQL/MariaDB server of ``FLEETS_TEST_MYSQL_URL``.

Every conformance suite runs on MySQL in tests/test_conformance.py, so a
MySQL-only deployment (content, mailboxes and conversations in MySQL) is
held to the same contract as the others; the cases, the pipeline tests and
the Hypothesis state machine run on it through the "mysql" backend of
conftest.py. Here is what is MySQL's own: 4-byte characters, driver
errors, and four processes writing the same recipients at once. Skipped,
with the reason, when the variable is unset.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from conftest import create_mysql_database, drop_mysql_database, mongo_uri, mysql_url
from fleets_mailbox import Stores, TransientStoreError
from fleets_mailbox.adapters.sql import (
    create_sql_engine,
    open_sql_stores,
)
from fleets_mailbox.adapters.sql._dialect import translate_errors
from fleets_mailbox.model import MessageStatus
from fleets_mailbox.pipeline import SendPipeline
from fleets_mailbox.sync import SyncService

pytestmark = pytest.mark.mysql


@pytest.fixture
async def database() -> AsyncIterator[str]:
    """The URL of a new, empty database, dropped after the test."""
    server = mysql_url()
    url = await create_mysql_database(server)
    try:
        yield url
    finally:
        await drop_mysql_database(server, url)


# ---------------------------------------------------------------- utf8mb4

#: Characters outside the Basic Multilingual Plane (4 bytes in UTF-8),
#: joiners, combining marks and a right-to-left run.
WIDE = "héllo 😀 👩‍👩‍👧‍👦 🇯🇵 𝄞 𠜎 e\u0301 שלום ✅"


def _pipeline(stores: Stores) -> SendPipeline:
    return SendPipeline(
        messages=stores.messages,
        mailboxes=stores.mailboxes,
        conversations=stores.conversations,
        directory=stores.directory,
    )


def _sync(stores: Stores) -> SyncService:
    return SyncService(
        messages=stores.messages,
        mailboxes=stores.mailboxes,
        conversations=stores.conversations,
    )


async def test_four_byte_characters_round_trip_byte_identical(database: str) -> None:
    stores = await open_sql_stores(database)
    try:
        await stores.directory.create_group("wide", "ann", WIDE, ["ann", "bob"])
        pipeline, sync = _pipeline(stores), _sync(stores)
        sent = await pipeline.send("ann", "g:wide", WIDE, "c-1")
        direct = await pipeline.send("ann", "d:ann:bob", WIDE * 100, "c-2")

        page = await sync.sync("bob", "g:wide")
        assert [m.body.encode() for m in page.messages] == [WIDE.encode()]
        assert page.messages[0].message_id == sent.message_id
        (long,) = (await sync.sync("bob", "d:ann:bob")).messages
        assert long.body.encode() == (WIDE * 100).encode()
        assert long.message_id == direct.message_id

        listed = await sync.conversations_since("bob")
        previews = {s.conversation_id: s.last_preview for s in listed.summaries}
        assert previews["g:wide"].encode() == WIDE.encode()
        assert (WIDE * 100).startswith(previews["d:ann:bob"])
        assert previews["d:ann:bob"].startswith(WIDE)
        group = await stores.directory.get_group("wide")
        assert group is not None and group.name.encode() == WIDE.encode()
    finally:
        await stores.close()


async def test_tables_and_connection_are_utf8mb4(database: str) -> None:
    stores = await open_sql_stores(database)
    engine = create_sql_engine(database)
    try:
        async with engine.connect() as conn:
            charset = await conn.scalar(text("SELECT @@character_set_connection"))
            assert charset == "utf8mb4"
            rows = await conn.execute(
                text(
                    "SELECT table_name, table_collation FROM information_schema.tables"
                    " WHERE table_schema = DATABASE()"
                )
            )
            collations = {name: collation for name, collation in rows}
        assert collations, "no tables"
        assert all(c.startswith("utf8mb4") for c in collations.values()), collations
    finally:
        await engine.dispose()
        await stores.close()


# ---------------------------------------------------------------- errors


async def test_a_deadlock_and_a_lock_timeout_are_transient(database: str) -> None:
    stores = await open_sql_stores(database)
    engine = create_sql_engine(database)
    try:
        for seq in (1, 2):
            await stores.mailboxes.declare_hole("g:x", seq)
        async with engine.connect() as first, engine.connect() as second:
            await first.begin()
            await second.begin()
            await second.exec_driver_sql("SET innodb_lock_wait_timeout = 5")
            lock = (
                "SELECT seq FROM fleets_holes"
                " WHERE conversation_id = 'g:x' AND seq = {} FOR UPDATE"
            )
            await first.exec_driver_sql(lock.format(1))
            await second.exec_driver_sql(lock.format(2))

            async def cross(conn: Any, seq: int) -> BaseException | None:
                try:
                    with translate_errors():
                        await conn.exec_driver_sql(lock.format(seq))
                except TransientStoreError as error:
                    await conn.rollback()
                    return error
                return None

            waiting = asyncio.create_task(cross(first, 2))
            await asyncio.sleep(0.3)
            results = [await cross(second, 1), await waiting]
            raised = [r for r in results if r is not None]
            assert len(raised) == 1, results
            assert _error_number(raised[0]) == 1213

        async with engine.connect() as holder, engine.connect() as waiter:
            await holder.begin()
            await holder.exec_driver_sql(lock.format(1))
            await waiter.exec_driver_sql("SET innodb_lock_wait_timeout = 1")
            with pytest.raises(TransientStoreError) as timed_out, translate_errors():
                await waiter.exec_driver_sql(lock.format(1))
            assert _error_number(timed_out.value) == 1205
    finally:
        await engine.dispose()
        await stores.close()


def _error_number(error: BaseException) -> object:
    cause = error.__cause__
    assert isinstance(cause, DBAPIError), cause
    return cause.orig.args[0] if cause.orig is not None else None


# ---------------------------------------------------------------- processes

RECIPIENTS = [f"m{i:02d}" for i in range(50)]
GROUPS = 4
PROCESSES = 4
PER_PROCESS = 50

WRITER = """
import asyncio, os, sys
from fleets_mailbox.adapters.sql import open_sql_stores
from fleets_mailbox.pipeline import SendPipeline

async def main(url, index, ready):
    stores = await open_sql_stores(url, create_schema=False)
    try:
        pipeline = SendPipeline(
            messages=stores.messages,
            mailboxes=stores.mailboxes,
            conversations=stores.conversations,
            directory=stores.directory,
            chunk_size=16,
        )
        open(os.path.join(ready, str(index)), "w").close()
        while len(os.listdir(ready)) < PROCESSES:
            await asyncio.sleep(0.01)
        slots = asyncio.Semaphore(8)

        async def send(i):
            group = (index + i) % GROUPS
            sender = RECIPIENTS[(index * 13 + i * 7) % len(RECIPIENTS)]
            async with slots:
                await pipeline.send(
                    sender, f"g:team{group}", f"p{index} {i}", f"p{index}-{i}"
                )

        await asyncio.gather(*(send(i) for i in range(PER_PROCESS)))
    finally:
        await stores.close()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
"""
for _name in ("RECIPIENTS", "GROUPS", "PROCESSES", "PER_PROCESS"):
    WRITER = WRITER.replace(_name, repr(globals()[_name]))


@pytest.mark.slow
async def test_four_processes_write_the_same_recipients_exactly(
    database: str, tmp_path: Path
) -> None:
    stores = await open_sql_stores(database)
    try:
        # The same members, listed in a different order in each group.
        for g in range(GROUPS):
            members = RECIPIENTS[g * 11 :] + RECIPIENTS[: g * 11]
            if g % 2:
                members.reverse()
            await stores.directory.create_group(
                f"team{g}", members[0], f"Team {g}", members
            )
        ready = tmp_path / "ready"
        ready.mkdir()
        processes = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                WRITER,
                database,
                str(index),
                str(ready),
                stderr=asyncio.subprocess.PIPE,
            )
            for index in range(PROCESSES)
        ]
        for process in processes:
            _, stderr = await asyncio.wait_for(process.communicate(), timeout=300)
            assert process.returncode == 0, stderr.decode()

        total = PROCESSES * PER_PROCESS
        per_group = total // GROUPS
        sent: dict[str, list[Any]] = {}
        for g in range(GROUPS):
            conversation = f"g:team{g}"
            assert await stores.mailboxes.last_seq(conversation) == per_group
            assert await stores.mailboxes.holes(conversation, 0, per_group) == []
            entries = await stores.mailboxes.read(RECIPIENTS[0], conversation, 0, 1000)
            assert [e.seq for e in entries] == list(range(1, per_group + 1))
            found = await stores.messages.get_many([e.message_id for e in entries])
            messages = sorted(found.values(), key=lambda m: m.seq)
            assert [m.seq for m in messages] == list(range(1, per_group + 1))
            assert {m.status for m in messages} == {MessageStatus.COMMITTED}
            sent[conversation] = messages
        client_ids = {m.client_msg_id for ms in sent.values() for m in ms}
        assert client_ids == {
            f"p{p}-{i}" for p in range(PROCESSES) for i in range(PER_PROCESS)
        }

        for user in RECIPIENTS:
            versions = []
            for conversation, messages in sent.items():
                entries = await stores.mailboxes.read(user, conversation, 0, 1000)
                assert [(e.seq, e.message_id) for e in entries] == [
                    (m.seq, m.message_id) for m in messages
                ], (user, conversation)
                read_seq = max(
                    (m.seq for m in messages if m.sender_id == user), default=0
                )
                unread = sum(
                    1 for m in messages if m.sender_id != user and m.seq > read_seq
                )
                row = await stores.conversations.get(user, conversation)
                assert row is not None
                assert (row.last_seq, row.read_seq, row.unread) == (
                    per_group,
                    read_seq,
                    unread,
                ), (user, conversation)
                assert row.last_message_id == messages[-1].message_id
                versions.append(row.version)
            listed = await stores.conversations.list_changed(user, 0, 100)
            assert sorted(s.version for s in listed) == sorted(versions)
            assert len(set(versions)) == GROUPS
    finally:
        await stores.close()


# ---------------------------------------------------------------- replay


async def test_replay_with_every_store_on_mysql(database: str) -> None:
    from fleets_mailbox.replay import replay

    report = await replay(None, messages=150, users=10, seed=5, sql_url=database)
    assert report.sent == report.stored == 150
    assert (report.lost, report.duplicated, report.misordered) == (0, 0, 0)
    assert report.ok and report.pushed > 0


@pytest.mark.mongo
async def test_replay_with_conversations_on_mysql_and_content_in_mongo(
    database: str,
) -> None:
    from fleets_mailbox.replay import replay

    report = await replay(
        None, messages=150, users=10, seed=6, sql_url=database, mongo_uri=mongo_uri()
    )
    assert report.sent == report.stored == 150
    assert (report.lost, report.duplicated, report.misordered) == (0, 0, 0)
    assert report.ok and report.pushed > 0
