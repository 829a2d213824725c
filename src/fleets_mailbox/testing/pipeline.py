"""The conformance suite of a whole store bundle: send, crash, repair, sync.

`PipelineSuite` runs `SendPipeline` and `SyncService` over the `Stores` made
by `make_stores` and checks the invariants of ARCHITECTURE.md end to end:
one seq per message, exactly one mailbox entry per recipient (also after a
crash at any step of the send followed by a retry or a repair), complete and
ordered sync pages, idempotent sends and monotonic read positions.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Collection
from typing import Any, cast

import pytest

from ..errors import (
    DuplicateMessage,
    FleetsError,
    TransientStoreError,
)
from ..events import READ_TOPIC
from ..model import (
    ConversationSummary,
    Message,
    MessageStatus,
    direct_conversation,
    group_conversation,
    new_message_id,
)
from ..pipeline import SEND_STEPS, SendPipeline
from ..protocols import MailboxStore, MessageBus
from ..service import Stores
from ..sync import SyncService
from .checks import walk_sync
from .doubles import CallLog, CrashHook, FakeClock, ProcessDeath, RecordingBus

__all__ = ["LEASE_MS", "PipelineHarness", "PipelineSuite"]

#: The lease of the suite's pipelines; a crashed holder blocks for this long.
LEASE_MS = 10_000

DIRECT = direct_conversation("alice", "bob")


class PipelineHarness:
    """One store bundle with a fake clock, a bus, a pipeline, sync and helpers.

    ``bus`` defaults to a `RecordingBus`; ``wait_ms`` is how long the
    harness's pipelines wait for a busy conversation.
    """

    def __init__(
        self, stores: Stores, bus: MessageBus | None = None, *, wait_ms: int = 5_000
    ) -> None:
        self.stores = stores
        self.clock = FakeClock()
        self.bus: MessageBus = RecordingBus() if bus is None else bus
        self.wait_ms = wait_ms
        self.sync = SyncService(
            messages=stores.messages,
            mailboxes=stores.mailboxes,
            conversations=stores.conversations,
            bus=self.bus,
        )
        self.pipeline = self.new_pipeline()

    @property
    def recorded(self) -> RecordingBus:
        """The bus, when it is the default `RecordingBus`."""
        if not isinstance(self.bus, RecordingBus):
            raise TypeError("this harness runs on a bus that records nothing")
        return self.bus

    def new_pipeline(self, **options: Any) -> SendPipeline:
        """Returns a pipeline over the bundle, as another process would have."""
        settings: dict[str, Any] = {
            "messages": self.stores.messages,
            "mailboxes": self.stores.mailboxes,
            "conversations": self.stores.conversations,
            "directory": self.stores.directory,
            "bus": self.bus,
            "lease_ms": LEASE_MS,
            "wait_ms": self.wait_ms,
            "clock": self.clock,
        }
        settings.update(options)
        return SendPipeline(**settings)

    async def group(self, group_id: str, members: Collection[str]) -> str:
        owner, *others = sorted(members)
        await self.stores.directory.create_group(group_id, owner, group_id, others)
        return group_conversation(group_id)

    async def seqs(self, user_id: str, conversation_id: str) -> list[int]:
        return (await walk_sync(self.sync, user_id, conversation_id)).seqs

    async def message_ids(self, user_id: str, conversation_id: str) -> list[str]:
        walk = await walk_sync(self.sync, user_id, conversation_id)
        return [m.message_id for m in walk.messages]

    async def unread(self, user_id: str, conversation_id: str) -> int:
        return (await self.sync.summary(user_id, conversation_id)).unread

    async def check_delivered(self, message: Message, members: Collection[str]) -> None:
        """Checks that each member has exactly one entry of ``message``."""
        stored = await self.stores.messages.get(message.message_id)
        assert stored is not None
        assert stored.status is MessageStatus.COMMITTED
        assert stored.seq == message.seq
        for user in members:
            ids = await self.message_ids(user, message.conversation_id)
            assert ids.count(message.message_id) == 1, (user, ids)


class PipelineSuite(abc.ABC):
    """The invariants of send and sync over one `Stores` bundle."""

    @abc.abstractmethod
    async def make_stores(self) -> Stores:
        """Returns fresh, empty stores; called once at the start of each test."""

    async def close_stores(self, stores: Stores) -> None:
        """Closes the stores at the end of each test (`Stores.close` by default)."""
        await stores.close()

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[PipelineHarness]:
        """Yields a harness over `make_stores` and closes the stores afterwards."""
        stores = await self.make_stores()
        try:
            yield PipelineHarness(stores)
        finally:
            await self.close_stores(stores)

    async def test_a_direct_message_reaches_both_mailboxes(self) -> None:
        async with self.opened() as h:
            sent = await h.pipeline.send("alice", DIRECT, "hi bob", "c1")

            assert sent.seq == 1
            assert sent.status is MessageStatus.COMMITTED
            await h.check_delivered(sent, ["alice", "bob"])
            bob = await h.sync.summary("bob", DIRECT)
            alice = await h.sync.summary("alice", DIRECT)
            assert (bob.last_seq, bob.read_seq, bob.unread) == (1, 0, 1)
            assert (alice.last_seq, alice.read_seq, alice.unread) == (1, 1, 0)
            assert bob.last_preview == "hi bob"
            assert h.recorded.keys() == [sent.message_id]
            assert h.recorded.events[0].payload["recipients"] == ["alice", "bob"]

    async def test_a_resend_returns_the_original_and_adds_nothing(self) -> None:
        async with self.opened() as h:
            first = await h.pipeline.send("alice", DIRECT, "hi", "c1")
            second = await h.pipeline.send("alice", DIRECT, "hi", "c1")
            third = await h.new_pipeline().send("alice", DIRECT, "hi", "c1")

            assert first == second == third
            assert await h.seqs("bob", DIRECT) == [1]
            assert await h.unread("bob", DIRECT) == 1
            assert await h.stores.mailboxes.last_seq(DIRECT) == 1
            assert h.recorded.keys() == [first.message_id]

    async def test_a_resend_with_other_content_raises_duplicate_message(self) -> None:
        async with self.opened() as h:
            first = await h.pipeline.send("alice", DIRECT, "hi", "c1")
            conversation = await h.group("team", ["alice", "bob"])

            with pytest.raises(DuplicateMessage) as other_body:
                await h.pipeline.send("alice", DIRECT, "changed", "c1")
            with pytest.raises(DuplicateMessage):
                await h.pipeline.send("alice", conversation, "hi", "c1")

            error = other_body.value
            assert (error.sender_id, error.client_msg_id, error.message_id) == (
                "alice",
                "c1",
                first.message_id,
            )
            assert await h.stores.mailboxes.last_seq(DIRECT) == 1
            assert await h.stores.mailboxes.last_seq(conversation) == 0

    async def test_concurrent_resends_store_one_message(self) -> None:
        async with self.opened() as h:
            other = h.new_pipeline()

            sent = await asyncio.gather(
                *(
                    (h.pipeline if i % 2 else other).send("alice", DIRECT, "hi", "c1")
                    for i in range(20)
                )
            )

            assert len({(m.message_id, m.seq) for m in sent}) == 1
            assert await h.seqs("bob", DIRECT) == [1]
            assert await h.unread("bob", DIRECT) == 1

    async def test_one_of_concurrent_submits_of_a_key_created_the_message(
        self,
    ) -> None:
        async with self.opened() as h:
            other = h.new_pipeline()

            results = await asyncio.gather(
                *(
                    (h.pipeline if i % 2 else other).submit("alice", DIRECT, "hi", "c1")
                    for i in range(10)
                )
            )
            later = await h.pipeline.submit("alice", DIRECT, "hi", "c1")

            assert [r.created for r in results].count(True) == 1
            assert not later.created
            assert len({r.message.message_id for r in [*results, later]}) == 1
            assert await h.seqs("bob", DIRECT) == [1]

    async def test_concurrent_sends_from_two_processes_get_distinct_seqs(
        self,
    ) -> None:
        async with self.opened() as h:
            members = ["alice", "bob", "carol", "dave"]
            conversation = await h.group("team", members)
            pipelines = [h.pipeline, h.new_pipeline()]

            sent = await asyncio.gather(
                *(
                    pipelines[i % 2].send(
                        members[i % 4], conversation, f"m{i}", f"c{i}"
                    )
                    for i in range(24)
                )
            )

            assert sorted(m.seq for m in sent) == list(range(1, 25))
            by_seq = {m.seq: m.message_id for m in sent}
            order = [by_seq[s] for s in range(1, 25)]
            for user in members:
                assert await h.message_ids(user, conversation) == order
            assert await h.stores.mailboxes.last_seq(conversation) == 24

    async def test_each_conversation_counts_its_own_seqs(self) -> None:
        async with self.opened() as h:
            other = direct_conversation("alice", "carol")

            sent = await asyncio.gather(
                *(
                    h.pipeline.send("alice", (DIRECT, other)[i % 2], "x", f"c{i}")
                    for i in range(10)
                )
            )

            for conversation in (DIRECT, other):
                seqs = sorted(m.seq for m in sent if m.conversation_id == conversation)
                assert seqs == [1, 2, 3, 4, 5]

    async def test_fan_out_writes_in_bulk_chunks(self) -> None:
        async with self.opened() as h:
            members = [f"user{i:02d}" for i in range(25)]
            conversation = await h.group("team", members)
            calls = CallLog()
            pipeline = h.new_pipeline(
                mailboxes=calls.wrap(h.stores.mailboxes),
                conversations=calls.wrap(h.stores.conversations),
                chunk_size=4,
            )

            sent = await pipeline.send("user00", conversation, "hello all", "c1")

            assert calls.counts["add_entries"] == math.ceil(25 / 4)
            assert calls.counts["apply_message"] == math.ceil(25 / 4)
            await h.check_delivered(sent, members)
            for user in members[1:]:
                assert await h.unread(user, conversation) == 1

    async def test_members_are_those_at_the_time_of_the_send(self) -> None:
        async with self.opened() as h:
            conversation = await h.group("team", ["alice", "bob"])
            before = await h.pipeline.send("alice", conversation, "one", "c1")
            await h.stores.directory.add_members("team", ["carol"])
            after = await h.pipeline.send("alice", conversation, "two", "c2")

            assert await h.seqs("carol", conversation) == [after.seq]
            assert await h.seqs("bob", conversation) == [before.seq, after.seq]

    @pytest.mark.parametrize("step", SEND_STEPS)
    async def test_a_crash_at_any_step_is_completed_by_a_retry(self, step: str) -> None:
        async with self.opened() as h:
            members = ["alice", "bob", "carol"]
            conversation = await h.group("team", members)
            crash = CrashHook(step)
            dying = h.new_pipeline(step_hook=crash)

            with pytest.raises(ProcessDeath):
                await dying.send("alice", conversation, "hi", "c1")
            assert crash.fired == 1
            h.clock.advance(LEASE_MS + 1)
            retried = await h.new_pipeline().send("alice", conversation, "hi", "c1")
            again = await h.pipeline.send("alice", conversation, "hi", "c1")
            following = await h.pipeline.send("bob", conversation, "next", "c2")

            assert retried == again
            assert retried.seq == 1
            assert following.seq == 2
            await h.check_delivered(retried, members)
            await h.check_delivered(following, members)
            assert await h.unread("carol", conversation) == 2
            assert await h.unread("bob", conversation) == 0
            assert await h.stores.messages.list_pending(h.clock() + 1, 10) == []

    @pytest.mark.parametrize("step", SEND_STEPS[1:])
    async def test_a_crash_at_any_step_is_completed_by_repair(self, step: str) -> None:
        async with self.opened() as h:
            members = ["alice", "bob", "carol"]
            conversation = await h.group("team", members)
            dying = h.new_pipeline(step_hook=CrashHook(step))
            with pytest.raises(ProcessDeath):
                await dying.send("alice", conversation, "hi", "c1")
            stored = await h.stores.messages.get_by_client_id("alice", "c1")
            assert stored is not None

            h.clock.advance(LEASE_MS + 1)
            repaired = await h.pipeline.repair(older_than_ms=LEASE_MS)

            committed = stored.status is MessageStatus.COMMITTED
            assert repaired == (0 if committed else 1)
            done = await h.stores.messages.get(stored.message_id)
            assert done is not None
            assert done.seq == 1
            await h.check_delivered(done, members)
            assert await h.unread("bob", conversation) == 1
            assert await h.pipeline.repair(older_than_ms=0) == 0
            following = await h.pipeline.send("bob", conversation, "next", "c2")
            assert following.seq == 2

    async def test_the_next_send_completes_a_crashed_one_first(self) -> None:
        async with self.opened() as h:
            members = ["alice", "bob", "carol"]
            conversation = await h.group("team", members)
            dying = h.new_pipeline(step_hook=CrashHook("fan_out"))
            with pytest.raises(ProcessDeath):
                await dying.send("alice", conversation, "first", "c1")
            h.clock.advance(LEASE_MS + 1)

            second = await h.pipeline.send("bob", conversation, "second", "c2")

            first = await h.stores.messages.get_by_client_id("alice", "c1")
            assert first is not None
            assert (first.seq, second.seq) == (1, 2)
            await h.check_delivered(first, members)
            assert await h.unread("carol", conversation) == 2
            assert h.recorded.keys() == [first.message_id, second.message_id]

    async def test_a_failure_the_process_survives_frees_the_lease(self) -> None:
        async with self.opened() as h:
            members = ["alice", "bob"]
            failing = h.new_pipeline(step_hook=CrashHook("fan_out", error=RuntimeError))
            with pytest.raises(RuntimeError):
                await failing.send("alice", DIRECT, "first", "c1")

            # No clock advance: the lease was abandoned, not left to expire.
            second = await h.new_pipeline(wait_ms=200).send("bob", DIRECT, "2", "c2")

            first = await h.stores.messages.get_by_client_id("alice", "c1")
            assert first is not None
            assert (first.seq, second.seq) == (1, 2)
            await h.check_delivered(first, members)
            retried = await failing.send("alice", DIRECT, "first", "c1")
            assert retried.message_id == first.message_id
            assert retried.seq == 1

    async def test_transient_store_errors_are_retried(self) -> None:
        async with self.opened() as h:
            failures = {"add_entries": 2, "apply_message": 1, "mark_committed": 1}

            async def flaky(name: str, args: tuple[Any, ...]) -> None:
                if failures.get(name, 0) > 0:
                    failures[name] -= 1
                    raise TransientStoreError(f"{name} timed out (injected)")

            calls = CallLog()
            pipeline = h.new_pipeline(
                messages=calls.wrap(h.stores.messages, flaky),
                mailboxes=calls.wrap(h.stores.mailboxes, flaky),
                conversations=calls.wrap(h.stores.conversations, flaky),
            )

            sent = await pipeline.send("alice", DIRECT, "hi", "c1")

            await h.check_delivered(sent, ["alice", "bob"])
            assert await h.unread("bob", DIRECT) == 1
            assert calls.counts["add_entries"] == 3

    async def test_a_lost_answer_to_allocate_seq_burns_no_seq(self) -> None:
        # The store allocated the seq, but its answer was lost (a dropped
        # connection after COMMIT): the retry must get the same seq back.
        async with self.opened() as h:
            mailboxes = h.stores.mailboxes
            lost = {"allocate_seq": 1}

            class LostAnswer:
                def __getattr__(self, name: str) -> Any:
                    return getattr(mailboxes, name)

                async def allocate_seq(self, *args: Any) -> int:
                    seq = await mailboxes.allocate_seq(*args)
                    if lost["allocate_seq"] > 0:
                        lost["allocate_seq"] -= 1
                        raise TransientStoreError("connection lost (injected)")
                    return seq

            pipeline = h.new_pipeline(mailboxes=cast(MailboxStore, LostAnswer()))

            first = await pipeline.send("alice", DIRECT, "one", "c1")
            second = await pipeline.send("alice", DIRECT, "two", "c2")

            assert (first.seq, second.seq) == (1, 2)
            walk = await walk_sync(h.sync, "bob", DIRECT, limit=10)
            assert walk.seqs == [1, 2]
            assert walk.holes == ()
            assert await h.stores.mailboxes.last_seq(DIRECT) == 2

    async def test_a_refused_publish_does_not_fail_the_send(self) -> None:
        async with self.opened() as h:
            pipeline = h.new_pipeline(bus=RecordingBus(refuse=True))

            sent = await pipeline.send("alice", DIRECT, "hi", "c1")

            assert pipeline.publish_failures == 1
            await h.check_delivered(sent, ["alice", "bob"])

    async def test_a_lost_pending_message_leaves_an_explicit_hole(self) -> None:
        async with self.opened() as h:
            mailboxes = h.stores.mailboxes
            # A sender allocated seq 1 and died; the message it stored is gone.
            await mailboxes.acquire(DIRECT, "dead", LEASE_MS, h.clock())
            await mailboxes.allocate_seq(DIRECT, "dead", new_message_id())
            h.clock.advance(LEASE_MS + 1)

            sent = await h.pipeline.send("alice", DIRECT, "after the hole", "c1")

            assert sent.seq == 2
            walk = await walk_sync(h.sync, "bob", DIRECT, limit=1)
            assert walk.seqs == [2]
            assert walk.holes == (1,)
            assert await h.unread("bob", DIRECT) == 1

    async def test_a_seq_burned_while_a_page_is_read_is_reported(self) -> None:
        async with self.opened() as h:
            await h.pipeline.send("alice", DIRECT, "one", "c1")
            burned = False

            async def burn_a_seq_and_send(name: str, args: tuple[Any, ...]) -> None:
                # Between the page's look at last_seq and its read, another
                # process burns seq 2 and sends seq 3.
                nonlocal burned
                if name != "read" or burned:
                    return
                burned = True
                mailboxes = h.stores.mailboxes
                await mailboxes.acquire(DIRECT, "dead", LEASE_MS, h.clock())
                await mailboxes.allocate_seq(DIRECT, "dead", new_message_id())
                h.clock.advance(LEASE_MS + 1)
                await h.new_pipeline().send("alice", DIRECT, "three", "c3")

            sync = SyncService(
                messages=h.stores.messages,
                mailboxes=CallLog().wrap(h.stores.mailboxes, burn_a_seq_and_send),
                conversations=h.stores.conversations,
            )

            page = await sync.sync("bob", DIRECT, 1, 100)

            assert burned
            seqs = [m.seq for m in page.messages]
            # Moving the cursor past seq 2 is right only when the page says
            # that 2 is a hole; otherwise no later page ever will.
            if page.next_from_seq >= 2:
                assert 2 in page.holes, (seqs, page.holes, page.next_from_seq)
            rest = await walk_sync(h.sync, "bob", DIRECT, from_seq=1)
            assert rest.holes == (2,)
            assert rest.seqs == [3]

    async def test_sync_pages(self) -> None:
        async with self.opened() as h:
            for i in range(25):
                await h.pipeline.send("alice", DIRECT, f"m{i}", f"c{i}")

            pages = (await walk_sync(h.sync, "bob", DIRECT, limit=10)).pages
            tail = await h.sync.sync("bob", DIRECT, 25, 10)

            assert [[m.seq for m in p.messages] for p in pages] == [
                list(range(1, 11)),
                list(range(11, 21)),
                list(range(21, 26)),
            ]
            assert [p.has_more for p in pages] == [True, True, False]
            assert [p.next_from_seq for p in pages] == [10, 20, 25]
            assert all(p.last_seq == 25 for p in pages)
            assert [m.body for m in pages[0].messages][:2] == ["m0", "m1"]
            assert (tail.messages, tail.has_more, tail.next_from_seq) == ((), False, 25)

    async def test_sync_walks_every_message_once_while_messages_arrive(self) -> None:
        async with self.opened() as h:
            members = ["alice", "bob", "carol"]
            conversation = await h.group("team", members)
            done = asyncio.Event()
            received: list[int] = []

            async def reader() -> None:
                cursor = 0
                while True:
                    finished = done.is_set()
                    page = await h.sync.sync("bob", conversation, cursor, 3)
                    received.extend(m.seq for m in page.messages)
                    cursor = page.next_from_seq
                    if finished and not page.has_more:
                        return
                    await asyncio.sleep(0)

            async def writers() -> None:
                other = h.new_pipeline()
                await asyncio.gather(
                    *(
                        (h.pipeline, other)[i % 2].send(
                            members[i % 3], conversation, f"m{i}", f"c{i}"
                        )
                        for i in range(30)
                    )
                )
                done.set()

            await asyncio.gather(reader(), writers())

            assert received == list(range(1, 31))

    async def test_mark_read_moves_forward_only(self) -> None:
        async with self.opened() as h:
            for i in range(5):
                await h.pipeline.send("alice", DIRECT, f"m{i}", f"c{i}")

            at_3 = await h.sync.mark_read("bob", DIRECT, 3)
            back_to_1 = await h.sync.mark_read("bob", DIRECT, 1)
            past_the_end = await h.sync.mark_read("bob", DIRECT, 99)

            assert (at_3.read_seq, at_3.unread) == (3, 2)
            assert (back_to_1.read_seq, back_to_1.unread) == (3, 2)
            assert (past_the_end.read_seq, past_the_end.unread) == (5, 0)
            reads = [e.payload for e in h.recorded.events if e.topic == READ_TOPIC]
            assert all(r["user_id"] == "bob" for r in reads)
            assert [r["read_seq"] for r in reads] == sorted(
                r["read_seq"] for r in reads
            )
            assert (reads[-1]["read_seq"], reads[-1]["unread"]) == (5, 0)

    async def test_concurrent_mark_read_from_several_devices(self) -> None:
        async with self.opened() as h:
            for i in range(4):
                await h.pipeline.send("alice", DIRECT, f"m{i}", f"c{i}")

            rows = await asyncio.gather(
                *(h.sync.mark_read("bob", DIRECT, 4) for _ in range(10))
            )

            assert all((r.read_seq, r.unread) == (4, 0) for r in rows)
            summary = await h.sync.summary("bob", DIRECT)
            assert (summary.read_seq, summary.unread) == (4, 0)

    async def test_own_messages_are_read(self) -> None:
        async with self.opened() as h:
            for i in range(3):
                await h.pipeline.send("alice", DIRECT, f"a{i}", f"a{i}")
            for i in range(2):
                await h.pipeline.send("bob", DIRECT, f"b{i}", f"b{i}")

            alice = await h.sync.summary("alice", DIRECT)
            bob = await h.sync.summary("bob", DIRECT)

            assert (alice.read_seq, alice.unread) == (3, 2)
            assert (bob.read_seq, bob.unread) == (5, 0)

    async def test_delete_leaves_a_tombstone_and_fixes_unread(self) -> None:
        async with self.opened() as h:
            conversation = await h.group("team", ["alice", "bob", "carol"])
            sent = [
                await h.pipeline.send("alice", conversation, f"m{i}", f"c{i}")
                for i in range(3)
            ]
            await h.sync.mark_read("carol", conversation, 3)

            deleted = await h.pipeline.delete("alice", sent[1].message_id)
            again = await h.pipeline.delete("alice", sent[1].message_id)

            assert deleted.deleted
            assert deleted.body == ""
            assert deleted.seq == 2
            assert again.deleted
            assert await h.unread("bob", conversation) == 2
            assert await h.unread("carol", conversation) == 0
            assert await h.unread("alice", conversation) == 0
            walk = await walk_sync(h.sync, "bob", conversation)
            assert walk.seqs == [1, 2, 3]
            assert [m.deleted for m in walk.messages] == [False, True, False]
            recount = await h.sync.mark_read("bob", conversation, 0)
            assert recount.unread == 2

    @pytest.mark.parametrize("dies_before", ["mark_deleted", "apply_delete"])
    async def test_an_interrupted_delete_is_finished_by_deleting_again(
        self, dies_before: str
    ) -> None:
        async with self.opened() as h:
            conversation = await h.group("team", ["alice", "bob", "carol"])
            sent = [
                await h.pipeline.send("alice", conversation, f"m{i}", f"c{i}")
                for i in range(3)
            ]

            async def die(name: str, args: tuple[Any, ...]) -> None:
                if name == dies_before:
                    raise ProcessDeath(f"died before {name}")

            calls = CallLog()
            dying = h.new_pipeline(
                mailboxes=calls.wrap(h.stores.mailboxes, die),
                conversations=calls.wrap(h.stores.conversations, die),
            )
            with pytest.raises(ProcessDeath):
                await dying.delete("alice", sent[1].message_id)

            await h.new_pipeline().delete("alice", sent[1].message_id)

            for user in ("bob", "carol"):
                assert await h.unread(user, conversation) == 2, user
                recount = await h.sync.mark_read(user, conversation, 0)
                assert recount.unread == 2, user
            walk = await walk_sync(h.sync, "bob", conversation)
            assert [m.deleted for m in walk.messages] == [False, True, False]

    async def test_edit_keeps_the_seq_and_the_place(self) -> None:
        async with self.opened() as h:
            sent = [
                await h.pipeline.send("alice", DIRECT, f"m{i}", f"c{i}")
                for i in range(3)
            ]
            h.clock.advance(5)

            edited = await h.pipeline.edit("alice", sent[1].message_id, "changed")

            assert edited.seq == 2
            assert edited.body == "changed"
            assert edited.edited_at == h.clock()
            walk = await walk_sync(h.sync, "bob", DIRECT)
            assert [m.body for m in walk.messages] == ["m0", "changed", "m2"]
            assert walk.seqs == [1, 2, 3]
            assert await h.unread("bob", DIRECT) == 3

    async def test_a_deleted_message_cannot_be_edited_back(self) -> None:
        async with self.opened() as h:
            sent = await h.pipeline.send("alice", DIRECT, "secret", "c1")
            await h.pipeline.delete("alice", sent.message_id)

            with contextlib.suppress(FleetsError):
                await h.pipeline.edit("alice", sent.message_id, "resurrected")

            stored = await h.stores.messages.get(sent.message_id)
            assert stored is not None
            assert stored.deleted
            assert stored.body == ""
            walk = await walk_sync(h.sync, "bob", DIRECT)
            assert [(m.deleted, m.body) for m in walk.messages] == [(True, "")]

    async def test_conversation_list_pages_by_version(self) -> None:
        async with self.opened() as h:
            others = [f"friend{i}" for i in range(7)]
            for i, other in enumerate(others):
                conversation = direct_conversation("bob", other)
                await h.pipeline.send(other, conversation, "hi", f"c{i}")

            seen: list[ConversationSummary] = []
            cursor = 0
            while True:
                page = await h.sync.conversations_since("bob", cursor, 3)
                seen.extend(page.summaries)
                cursor = page.next_version
                if not page.has_more:
                    break
            nothing = await h.sync.conversations_since("bob", cursor, 3)
            await h.pipeline.send(
                "friend0", direct_conversation("bob", "friend0"), "again", "z"
            )
            changed = await h.sync.conversations_since("bob", cursor, 3)

            assert [s.last_sender_id for s in seen] == others
            assert nothing.summaries == ()
            assert nothing.next_version == cursor
            assert [(s.last_sender_id, s.last_seq) for s in changed.summaries] == [
                ("friend0", 2)
            ]
