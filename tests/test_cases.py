"""The cases from the field (cases/README.md C01-C13), on every embedded backend.

Each test is one case; its assertions are the case's right outcome. The push
cases run the real `PushConsumer` on a `LocalBus`, with `RecordingConnection`
as the client: a double of a client that dedupes by ``(conversation_id, seq)``.
C14 and C15 (the WebSocket and bus-restart sides) are tested with the server.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fleets_mailbox import Stores, SyncService
from fleets_mailbox.adapters.local_bus import LocalBus
from fleets_mailbox.adapters.memory import MemoryPresence
from fleets_mailbox.analytics import AnalyticsConsumer, day_of
from fleets_mailbox.events import message_event
from fleets_mailbox.model import Message, direct_conversation
from fleets_mailbox.protocols import Connection
from fleets_mailbox.push import PushConsumer
from fleets_mailbox.testing import (
    LEASE_MS,
    CallLog,
    CrashHook,
    PipelineHarness,
    ProcessDeath,
    RecordingConnection,
    walk_sync,
)

AB = direct_conversation("alice", "bob")


class World(PipelineHarness):
    """A `PipelineHarness` on a `LocalBus` whose push reaches `MemoryPresence`."""

    bus: LocalBus

    def __init__(self, stores: Stores) -> None:
        super().__init__(stores, LocalBus(retry_delay=0.01), wait_ms=20_000)
        self.presence = MemoryPresence()
        self.push = PushConsumer(self.bus, self.presence)

    async def connect(self, user_id: str, name: str) -> RecordingConnection:
        connection = RecordingConnection(name)
        await self.presence.connect(user_id, connection)
        return connection

    async def check_unread(self, user_id: str, conversation_id: str) -> int:
        """Returns the unread count after checking it against the mailbox."""
        row = await self.sync.summary(user_id, conversation_id)
        counted = await self.stores.mailboxes.count_unread(
            user_id, conversation_id, row.read_seq, row.last_seq
        )
        assert row.unread == counted, (user_id, row, counted)
        return row.unread


@pytest.fixture
async def world(stores: Stores) -> AsyncIterator[World]:
    world = World(stores)
    await world.push.start()
    try:
        yield world
    finally:
        await world.push.close()
        await world.bus.close()


@pytest.mark.parametrize("lost", ["reply", "process_after_commit"])
async def test_c01_idempotent_retry(world: World, lost: str) -> None:
    phone = await world.connect("bob", "phone")
    if lost == "reply":
        first = await world.pipeline.send("alice", AB, "hello", "cm-1")
    else:
        dying = world.new_pipeline(step_hook=CrashHook("publish"))
        with pytest.raises(ProcessDeath):
            await dying.send("alice", AB, "hello", "cm-1")
        stored = await world.stores.messages.get_by_client_id("alice", "cm-1")
        assert stored is not None
        first = stored

    second = await world.pipeline.send("alice", AB, "hello", "cm-1")
    third = await world.new_pipeline().send("alice", AB, "hello", "cm-1")
    await world.bus.drain()

    assert (first.message_id, first.seq) == (second.message_id, second.seq)
    assert (first.message_id, first.seq) == (third.message_id, third.seq)
    walk = await walk_sync(world.sync, "bob", AB)
    assert [m.message_id for m in walk.messages] == [first.message_id]
    assert await world.check_unread("bob", AB) == 1
    pushed = phone.of_type("message")
    assert len(pushed) <= 1
    if lost == "reply":
        assert [f["message"]["message_id"] for f in pushed] == [first.message_id]
    assert await world.stores.mailboxes.last_seq(AB) == 1


async def test_c02_concurrent_sends(world: World) -> None:
    members = [f"user{i}" for i in range(6)]
    conversation = await world.group("crowd", members)
    pipelines = [world.pipeline, world.new_pipeline(), world.new_pipeline()]
    failing = world.new_pipeline(step_hook=CrashHook("fan_out", error=RuntimeError))

    async def failed_attempt() -> BaseException | None:
        try:
            await failing.send("user0", conversation, "unlucky", "cm-fail")
        except RuntimeError as exc:
            return exc
        return None

    results = await asyncio.gather(
        failed_attempt(),
        *(
            pipelines[i % 3].send(members[i % 6], conversation, f"m{i}", f"cm-{i}")
            for i in range(20)
        ),
    )
    retried = await failing.send("user0", conversation, "unlucky", "cm-fail")

    assert isinstance(results[0], RuntimeError)
    sent: list[Message] = [*results[1:], retried]  # type: ignore[list-item]
    assert sorted(m.seq for m in sent) == list(range(1, 22))
    order = [m.message_id for m in sorted(sent, key=lambda m: m.seq)]
    for user in members:
        walk = await walk_sync(world.sync, user, conversation, limit=7)
        assert [m.message_id for m in walk.messages] == order, user
        assert walk.holes == ()


async def test_c03_first_summary_race(world: World) -> None:
    other = world.new_pipeline()

    first, second = await asyncio.gather(
        world.pipeline.send("alice", AB, "one", "cm-1"),
        other.send("alice", AB, "two", "cm-2"),
    )

    rows = (await world.sync.conversations_since("bob")).summaries
    assert [r.conversation_id for r in rows] == [AB]
    assert (rows[0].unread, rows[0].last_seq) == (2, 2)
    assert {first.seq, second.seq} == {1, 2}
    assert await world.check_unread("bob", AB) == 2


@pytest.mark.slow
async def test_c04_page_boundary(world: World) -> None:
    sent = [
        await world.pipeline.send("alice", AB, f"message {i}", f"cm-{i}")
        for i in range(1, 1002)
    ]
    assert [m.seq for m in sent] == list(range(1, 1002))

    edited = await world.pipeline.edit("alice", sent[633].message_id, "edited 634")
    first = await world.sync.sync("bob", AB, 0, 1000)
    second = await world.sync.sync("bob", AB, first.next_from_seq, 1000)

    assert edited.seq == 634
    assert [m.seq for m in first.messages] == list(range(1, 1001))
    assert first.has_more
    assert first.next_from_seq == 1000
    assert [m.seq for m in second.messages] == [1001]
    assert not second.has_more
    assert first.messages[633].body == "edited 634"
    assert first.messages[633].message_id == sent[633].message_id


async def test_c05_equal_timestamps(world: World) -> None:
    sent = [
        await world.pipeline.send("alice", AB, f"m{i}", f"cm-{i}") for i in range(5)
    ]
    # Three more sends die after storing the message, before any seq.
    for i in range(5, 8):
        dying = world.new_pipeline(step_hook=CrashHook("acquire"))
        with pytest.raises(ProcessDeath):
            await dying.send("alice", AB, f"m{i}", f"cm-{i}")
    pending = await world.stores.messages.list_pending(world.clock() + 1, 10)

    assert {m.created_at for m in sent} == {world.clock()}
    walk = await walk_sync(world.sync, "bob", AB, limit=2)
    assert walk.seqs == [1, 2, 3, 4, 5]
    assert [m.body for m in walk.messages] == ["m0", "m1", "m2", "m3", "m4"]
    summary = await world.sync.summary("bob", AB)
    assert (summary.last_seq, summary.last_message_id) == (5, sent[4].message_id)
    assert [m.body for m in pending] == ["m5", "m6", "m7"]

    world.clock.advance(1)
    assert await world.pipeline.repair(older_than_ms=0) == 3
    walk = await walk_sync(world.sync, "bob", AB)
    assert [m.body for m in walk.messages] == [f"m{i}" for i in range(8)]


async def test_c06_negative_unread(world: World) -> None:
    await world.pipeline.send("alice", AB, "one", "cm-1")
    await world.pipeline.send("alice", AB, "two", "cm-2")
    assert await world.unread("bob", AB) == 2

    phone, laptop = await asyncio.gather(
        world.sync.mark_read("bob", AB, 2), world.sync.mark_read("bob", AB, 2)
    )
    retry = await world.sync.mark_read("bob", AB, 2)

    for row in (phone, laptop, retry):
        assert (row.read_seq, row.unread) == (2, 0)
    assert await world.check_unread("bob", AB) == 0
    summary = await world.sync.summary("bob", AB)
    assert summary.read_seq == 2


async def test_c06_devices_marking_different_positions(world: World) -> None:
    """The phone reads up to 1 while the laptop reads up to 2.

    The phone counts its unread first and writes last, so the stored
    read_seq stays 2 while the phone's count (1 unread) is for read_seq 1.
    """
    for i in range(2):
        await world.pipeline.send("alice", AB, f"m{i}", f"cm-{i}")
    phone_counted = asyncio.Event()
    laptop_wrote = asyncio.Event()

    async def hold_phone_write(name: str, args: tuple[Any, ...]) -> None:
        if name == "set_read":
            phone_counted.set()
            await laptop_wrote.wait()

    phone_sync = SyncService(
        messages=world.stores.messages,
        mailboxes=world.stores.mailboxes,
        conversations=CallLog().wrap(world.stores.conversations, hold_phone_write),
    )

    async def laptop() -> None:
        await phone_counted.wait()
        await world.sync.mark_read("bob", AB, 2)
        laptop_wrote.set()

    await asyncio.gather(phone_sync.mark_read("bob", AB, 1), laptop())

    summary = await world.sync.summary("bob", AB)
    assert summary.read_seq == 2
    assert await world.check_unread("bob", AB) == 0


async def test_c07_own_messages(world: World) -> None:
    for i in range(3):
        await world.pipeline.send("alice", AB, f"a{i}", f"a-{i}")
    for i in range(2):
        await world.pipeline.send("bob", AB, f"b{i}", f"b-{i}")

    walk = await walk_sync(world.sync, "alice", AB)

    assert walk.seqs == [1, 2, 3, 4, 5]
    assert await world.check_unread("alice", AB) == 2
    assert (await world.sync.summary("alice", AB)).read_seq == 3
    assert await world.check_unread("bob", AB) == 0


async def test_c08_drifted_counter(world: World) -> None:
    for i in range(3):
        await world.pipeline.send("alice", AB, f"m{i}", f"cm-{i}")
    read = await world.sync.mark_read("bob", AB, 3)
    drifted = await world.stores.conversations.set_read("bob", AB, 3, 3, read.version)
    assert drifted is not None
    assert drifted.unread == 3

    healed = await world.sync.mark_read("bob", AB, 3)

    assert (healed.read_seq, healed.unread) == (3, 0)
    assert await world.check_unread("bob", AB) == 0


async def test_c09_read_on_another_device(world: World) -> None:
    phone = await world.connect("bob", "phone")
    for i in range(3):
        await world.pipeline.send("alice", AB, f"m{i}", f"cm-{i}")
    await world.bus.drain()
    assert len(phone.messages()) == 3

    await world.sync.mark_read("bob", AB, 3)

    await phone.wait_for(lambda frames: any(f["type"] == "read" for f in frames))
    [read] = phone.of_type("read")
    assert (read["conversation_id"], read["read_seq"], read["unread"]) == (AB, 3, 0)
    assert await world.check_unread("bob", AB) == 0
    rows = (await world.sync.conversations_since("bob")).summaries
    assert [(r.conversation_id, r.unread) for r in rows] == [(AB, 0)]


class _BrokenPresence(MemoryPresence):
    """A presence whose lookups fail, so the push handler raises."""

    async def connections(self, user_id: str) -> list[Connection]:
        raise RuntimeError("presence lookup failed (injected)")


async def test_c10_push_handler_fails(world: World) -> None:
    bus = LocalBus(max_attempts=2, retry_delay=0.01)
    push = PushConsumer(bus, _BrokenPresence())
    await push.start()
    try:
        pipeline = world.new_pipeline(bus=bus)
        sent = await pipeline.send("alice", AB, "pushed into the void", "cm-1")
        await bus.drain()
    finally:
        await push.close()
        await bus.close()

    assert bus.failures == 2
    assert bus.dropped == 1
    page = await world.sync.sync("bob", AB, 0, 100)
    assert [m.message_id for m in page.messages] == [sent.message_id]
    assert page.messages[0].body == "pushed into the void"
    assert await world.check_unread("bob", AB) == 1


async def test_c11_bus_redelivers(world: World) -> None:
    analytics = AnalyticsConsumer(world.bus, world.stores.analytics)
    await analytics.start()
    phone = await world.connect("bob", "phone")
    try:
        sent = await world.pipeline.send("alice", AB, "once", "cm-1")
        await world.bus.drain()
        await world.bus.publish(message_event(sent, ["alice", "bob"]))
        await world.bus.drain()
    finally:
        await analytics.close()

    frames = phone.of_type("message")
    assert len(frames) == 2
    keys = {(f["message"]["conversation_id"], f["message"]["seq"]) for f in frames}
    assert keys == {(AB, sent.seq)}
    assert [m["message_id"] for m in phone.messages()] == [sent.message_id]
    assert await world.check_unread("bob", AB) == 1
    assert await world.stores.analytics.message_counts(day_of(sent.created_at)) == {
        "direct": 1
    }


@pytest.mark.parametrize("finish", ["retry", "repair"])
async def test_c12_large_group_crash(world: World, finish: str) -> None:
    members = [f"member{i:04d}" for i in range(5000)]
    conversation = await world.group("everyone", members)
    chunk_size = 500
    chunks = math.ceil(len(members) / chunk_size)
    calls = CallLog()

    async def die_after_three_chunks(name: str, args: tuple[Any, ...]) -> None:
        if name == "add_entries" and calls.counts["add_entries"] == 4:
            raise ProcessDeath("the process died in the middle of the fan-out")

    dying = world.new_pipeline(
        mailboxes=calls.wrap(world.stores.mailboxes, die_after_three_chunks),
        chunk_size=chunk_size,
    )
    with pytest.raises(ProcessDeath):
        await dying.send("member0000", conversation, "hello everyone", "cm-1")
    assert calls.counts["add_entries"] == 4

    world.clock.advance(LEASE_MS + 1)
    after = CallLog()
    finisher = world.new_pipeline(
        messages=after.wrap(world.stores.messages),
        mailboxes=after.wrap(world.stores.mailboxes),
        conversations=after.wrap(world.stores.conversations),
        chunk_size=chunk_size,
    )
    if finish == "retry":
        message = await finisher.send(
            "member0000", conversation, "hello everyone", "cm-1"
        )
    else:
        assert await finisher.repair(older_than_ms=LEASE_MS) == 1
        found = await world.stores.messages.get_by_client_id("member0000", "cm-1")
        assert found is not None
        message = found

    assert message.seq == 1
    assert after.counts["add_entries"] == chunks
    assert after.counts["apply_message"] == chunks
    assert sum(after.counts.values()) < 2 * chunks + 20
    assert await world.stores.messages.list_pending(world.clock() + 1, 10) == []
    assert await world.stores.mailboxes.last_seq(conversation) == 1
    # A sample is read entry by entry; marking the seq deleted then lists, in
    # one call, every user holding an entry of it, each once.
    for user in members[::250] + members[-1:]:
        entries = await world.stores.mailboxes.read(user, conversation, 0, 10)
        assert [(e.seq, e.message_id) for e in entries] == [(1, message.message_id)]
        row = await world.stores.conversations.get(user, conversation)
        assert row is not None
        assert (row.last_seq, row.unread) == (1, 0 if user == "member0000" else 1)
    holders = await world.stores.mailboxes.mark_deleted(conversation, 1)
    assert sorted(holders) == members


async def test_c13_delete_before_read(world: World) -> None:
    sent = [
        await world.pipeline.send("alice", AB, f"m{i}", f"cm-{i}") for i in range(3)
    ]

    await world.pipeline.delete("alice", sent[0].message_id)
    await world.pipeline.delete("alice", sent[1].message_id)

    assert await world.check_unread("bob", AB) == 1
    assert await world.check_unread("alice", AB) == 0
    walk = await walk_sync(world.sync, "bob", AB)
    assert [(m.seq, m.deleted) for m in walk.messages] == [
        (1, True),
        (2, True),
        (3, False),
    ]

    await world.sync.mark_read("bob", AB, 3)
    await world.pipeline.delete("alice", sent[2].message_id)

    summary = await world.sync.summary("bob", AB)
    assert (summary.read_seq, summary.unread) == (3, 0)
    assert await world.check_unread("bob", AB) == 0


async def test_c13_delete_while_the_recipient_marks_read(world: World) -> None:
    """B's phone counts its unread, A deletes an unread message, B's phone writes.

    The count the phone wrote still holds the deleted message unless the
    write notices that the summary changed after the count.
    """
    sent = [
        await world.pipeline.send("alice", AB, f"m{i}", f"cm-{i}") for i in range(3)
    ]
    counted = asyncio.Event()
    deleted = asyncio.Event()

    async def hold_write(name: str, args: tuple[Any, ...]) -> None:
        if name == "set_read":
            counted.set()
            await deleted.wait()

    phone_sync = SyncService(
        messages=world.stores.messages,
        mailboxes=world.stores.mailboxes,
        conversations=CallLog().wrap(world.stores.conversations, hold_write),
    )

    async def delete() -> None:
        await counted.wait()
        await world.pipeline.delete("alice", sent[2].message_id)
        deleted.set()

    await asyncio.gather(phone_sync.mark_read("bob", AB, 1), delete())

    summary = await world.sync.summary("bob", AB)
    assert summary.read_seq == 1
    assert await world.check_unread("bob", AB) == 1
