"""Conformance suites of the store protocols and of the group directory.

Each suite pins the contract written in the protocol's docstrings
(`fleets_mailbox.protocols`): the happy path, duplicates and idempotency,
concurrent calls on the same keys (``asyncio.gather``), ordering and paging,
and the failure cases. An adapter proves itself by subclassing the suite and
implementing `make_store`; see `fleets_mailbox.testing`.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import AsyncIterator

import attrs
import pytest

from ..errors import (
    GroupExists,
    LeaseLost,
    StoreError,
    UnknownConversation,
    UnknownGroup,
    UnknownMessage,
)
from ..model import (
    ConversationSummary,
    MailboxEntry,
    MessageStatus,
    new_message_id,
)
from ..protocols import (
    UNREAD_UNKNOWN,
    AnalyticsStore,
    ConversationStore,
    GroupDirectory,
    MailboxStore,
    MessageStore,
    NotificationStore,
    SummaryUpdate,
)
from ._base import T0, StoreSuite, message

__all__ = [
    "AnalyticsStoreSuite",
    "ConversationStoreSuite",
    "DirectorySuite",
    "MailboxStoreSuite",
    "MessageStoreSuite",
    "NotificationStoreSuite",
]

#: How many calls the concurrency tests start at once.
CONCURRENCY = 50

#: Text that a store must keep exactly: quotes, backslashes, new lines,
#: characters outside the BMP, right-to-left script, SQL and query syntax.
AWKWARD_TEXT = (
    'it\'s "quoted" \\ back\\slash\nnew line\ttab ✓ 漢字 😀🏳️‍🌈 '
    'עברית \' OR 1=1; -- {"$ne": null} %s %(x)s ?'
)


class MessageStoreSuite(StoreSuite[MessageStore]):
    """The contract of `MessageStore`."""

    async def test_is_a_message_store(self) -> None:
        async with self.opened() as store:
            assert isinstance(store, MessageStore)

    async def test_insert_pending_stores_and_returns_the_message(self) -> None:
        async with self.opened() as store:
            draft = message(body=AWKWARD_TEXT, created_at=T0 + 123, kind="note")

            stored = await store.insert_pending(draft, ["bob", "alice"])

            assert stored == draft
            assert await store.get(draft.message_id) == draft
            assert stored.status is MessageStatus.PENDING
            assert stored.seq == 0
            by_key = await store.get_by_client_id("alice", draft.client_msg_id)
            assert by_key == draft

    async def test_long_body_is_kept_exactly(self) -> None:
        async with self.opened() as store:
            draft = message(body="ü" * 16_384)

            await store.insert_pending(draft, ["alice", "bob"])

            got = await store.get(draft.message_id)
            assert got is not None
            assert got.body == draft.body

    async def test_insert_pending_with_a_known_key_returns_the_first(self) -> None:
        async with self.opened() as store:
            first = message(client_msg_id="c1", body="first")
            again = message(client_msg_id="c1", body="second")
            await store.insert_pending(first, ["alice", "bob"])

            returned = await store.insert_pending(again, ["alice", "carol"])

            assert returned == first
            assert await store.get(again.message_id) is None
            assert await store.pending_recipients(first.message_id) == (
                "alice",
                "bob",
            )

    async def test_the_key_is_sender_and_client_msg_id(self) -> None:
        async with self.opened() as store:
            from_alice = message(sender_id="alice", client_msg_id="same")
            from_bob = message(sender_id="bob", client_msg_id="same")

            a = await store.insert_pending(from_alice, ["alice", "bob"])
            b = await store.insert_pending(from_bob, ["alice", "bob"])

            assert a.message_id != b.message_id
            assert (await store.get_by_client_id("alice", "same")) == from_alice
            assert (await store.get_by_client_id("bob", "same")) == from_bob
            assert await store.get_by_client_id("carol", "same") is None

    async def test_concurrent_inserts_of_one_key_store_one_message(self) -> None:
        async with self.opened() as store:
            drafts = [
                message(client_msg_id="retry", body="hi") for _ in range(CONCURRENCY)
            ]

            results = await asyncio.gather(
                *(store.insert_pending(d, ["alice", "bob"]) for d in drafts)
            )

            assert len({r.message_id for r in results}) == 1
            winner = results[0].message_id
            assert winner in {d.message_id for d in drafts}
            found = await store.get_many([d.message_id for d in drafts])
            assert list(found) == [winner]
            pending = await store.list_pending(T0 + 1, 1000)
            assert [m.message_id for m in pending] == [winner]

    async def test_concurrent_inserts_of_distinct_keys_store_each(self) -> None:
        async with self.opened() as store:
            drafts = [message(client_msg_id=f"c{i}") for i in range(CONCURRENCY)]

            await asyncio.gather(
                *(store.insert_pending(d, ["alice", "bob"]) for d in drafts)
            )

            found = await store.get_many([d.message_id for d in drafts])
            assert set(found) == {d.message_id for d in drafts}

    async def test_get_of_unknown_ids(self) -> None:
        async with self.opened() as store:
            known = await store.insert_pending(message(), ["alice", "bob"])

            assert await store.get(new_message_id()) is None
            assert await store.get_many([]) == {}
            found = await store.get_many([new_message_id(), known.message_id])
            assert found == {known.message_id: known}

    async def test_get_many_returns_every_asked_id(self) -> None:
        async with self.opened() as store:
            drafts = [message(client_msg_id=f"m{i}") for i in range(120)]
            for draft in drafts:
                await store.insert_pending(draft, ["alice", "bob"])

            found = await store.get_many([d.message_id for d in drafts])

            assert found == {d.message_id: d for d in drafts}

    async def test_pending_recipients_are_sorted(self) -> None:
        async with self.opened() as store:
            draft = message(conversation_id="g:team")
            await store.insert_pending(draft, ["carol", "alice", "dave", "bob"])

            recipients = await store.pending_recipients(draft.message_id)

            assert recipients == ("alice", "bob", "carol", "dave")

    async def test_many_pending_recipients(self) -> None:
        async with self.opened() as store:
            users = [f"user{i:05d}" for i in range(5000)]
            draft = message(sender_id=users[0], conversation_id="g:big")

            await store.insert_pending(draft, list(reversed(users)))

            assert await store.pending_recipients(draft.message_id) == tuple(users)

    async def test_assign_seq_sets_it_once(self) -> None:
        async with self.opened() as store:
            draft = await store.insert_pending(message(), ["alice", "bob"])

            await store.assign_seq(draft.message_id, 7)
            await store.assign_seq(draft.message_id, 7)

            got = await store.get(draft.message_id)
            assert got is not None
            assert got.seq == 7
            assert got.status is MessageStatus.PENDING

    async def test_assign_seq_conflict_raises_store_error(self) -> None:
        async with self.opened() as store:
            draft = await store.insert_pending(message(), ["alice", "bob"])
            await store.assign_seq(draft.message_id, 7)

            with pytest.raises(StoreError):
                await store.assign_seq(draft.message_id, 8)

            got = await store.get(draft.message_id)
            assert got is not None
            assert got.seq == 7

    async def test_concurrent_assign_seq_of_one_message_keeps_one(self) -> None:
        async with self.opened() as store:
            draft = await store.insert_pending(message(), ["alice", "bob"])

            results = await asyncio.gather(
                *(store.assign_seq(draft.message_id, s) for s in range(1, 11)),
                return_exceptions=True,
            )

            got = await store.get(draft.message_id)
            assert got is not None
            succeeded = [
                s for s, r in zip(range(1, 11), results, strict=True) if r is None
            ]
            assert succeeded == [got.seq]
            assert all(isinstance(r, StoreError) for r in results if r is not None)

    async def test_mark_committed(self) -> None:
        async with self.opened() as store:
            draft = await store.insert_pending(message(), ["alice", "bob"])
            await store.assign_seq(draft.message_id, 1)

            await store.mark_committed(draft.message_id)
            await store.mark_committed(draft.message_id)

            got = await store.get(draft.message_id)
            assert got == attrs.evolve(draft, seq=1, status=MessageStatus.COMMITTED)
            assert await store.pending_recipients(draft.message_id) == ()
            assert await store.list_pending(T0 + 10, 100) == []
            by_key = await store.get_by_client_id("alice", draft.client_msg_id)
            assert by_key is not None
            assert by_key.status is MessageStatus.COMMITTED

    async def test_list_pending_is_oldest_first_and_bounded(self) -> None:
        async with self.opened() as store:
            late = message(client_msg_id="late", created_at=T0 + 30)
            early = message(client_msg_id="early", created_at=T0 + 10)
            middle = message(client_msg_id="middle", created_at=T0 + 20)
            done = message(client_msg_id="done", created_at=T0 + 5)
            for draft in (late, early, middle, done):
                await store.insert_pending(draft, ["alice", "bob"])
            await store.mark_committed(done.message_id)

            everything = await store.list_pending(T0 + 1000, 100)
            before_30 = await store.list_pending(T0 + 30, 100)
            first_two = await store.list_pending(T0 + 1000, 2)

            assert [m.message_id for m in everything] == [
                early.message_id,
                middle.message_id,
                late.message_id,
            ]
            assert before_30 == [early, middle]
            assert first_two == [early, middle]

    async def test_list_pending_breaks_time_ties_by_message_id(self) -> None:
        async with self.opened() as store:
            drafts = [message(client_msg_id=f"t{i}") for i in range(5)]
            for draft in reversed(drafts):
                await store.insert_pending(draft, ["alice", "bob"])

            pending = await store.list_pending(T0 + 1, 100)

            assert [m.message_id for m in pending] == sorted(
                d.message_id for d in drafts
            )

    async def test_edit_replaces_the_body_only(self) -> None:
        async with self.opened() as store:
            draft = await store.insert_pending(message(), ["alice", "bob"])
            await store.assign_seq(draft.message_id, 3)
            await store.mark_committed(draft.message_id)

            edited = await store.edit(draft.message_id, AWKWARD_TEXT, T0 + 99)

            expected = attrs.evolve(
                draft,
                seq=3,
                status=MessageStatus.COMMITTED,
                body=AWKWARD_TEXT,
                edited_at=T0 + 99,
            )
            assert edited == expected
            assert await store.get(draft.message_id) == expected

    async def test_mark_deleted_leaves_a_tombstone(self) -> None:
        async with self.opened() as store:
            draft = await store.insert_pending(message(), ["alice", "bob"])
            await store.assign_seq(draft.message_id, 4)
            await store.mark_committed(draft.message_id)

            deleted = await store.mark_deleted(draft.message_id, T0 + 50)
            again = await store.mark_deleted(draft.message_id, T0 + 60)

            assert deleted.deleted
            assert deleted.body == ""
            assert deleted.seq == 4
            assert deleted.status is MessageStatus.COMMITTED
            assert again == deleted
            assert await store.get(draft.message_id) == deleted

    async def test_unknown_message_ids_raise_unknown_message(self) -> None:
        async with self.opened() as store:
            unknown = new_message_id()

            with pytest.raises(UnknownMessage):
                await store.assign_seq(unknown, 1)
            with pytest.raises(UnknownMessage):
                await store.mark_committed(unknown)
            with pytest.raises(UnknownMessage):
                await store.edit(unknown, "x", T0)
            with pytest.raises(UnknownMessage):
                await store.mark_deleted(unknown, T0)
            assert await store.get(unknown) is None


class MailboxStoreSuite(StoreSuite[MailboxStore]):
    """The contract of `MailboxStore`: leases, seqs, holes and entries."""

    conversation = "g:team"

    async def test_is_a_mailbox_store(self) -> None:
        async with self.opened() as store:
            assert isinstance(store, MailboxStore)

    async def test_acquire_a_free_lease(self) -> None:
        async with self.opened() as store:
            lease = await store.acquire(self.conversation, "h1", 1000, T0)

            assert lease is not None
            assert lease.conversation_id == self.conversation
            assert lease.holder == "h1"
            assert lease.last_seq == 0
            assert lease.pending_message_id is None
            assert lease.pending_seq == 0
            assert await store.last_seq(self.conversation) == 0

    async def test_a_running_lease_refuses_others_and_renews_for_its_holder(
        self,
    ) -> None:
        async with self.opened() as store:
            await store.acquire(self.conversation, "h1", 1000, T0)

            assert await store.acquire(self.conversation, "h2", 1000, T0 + 500) is None
            renewed = await store.acquire(self.conversation, "h1", 1000, T0 + 900)
            assert renewed is not None
            # The renewal runs from T0 + 900, so the lease still runs at T0 + 1500.
            assert await store.acquire(self.conversation, "h2", 1000, T0 + 1500) is None
            assert (
                await store.acquire(self.conversation, "h2", 1000, T0 + 2000)
                is not None
            )

    async def test_leases_of_conversations_are_independent(self) -> None:
        async with self.opened() as store:
            assert await store.acquire("g:a", "h1", 1000, T0) is not None
            assert await store.acquire("g:b", "h2", 1000, T0) is not None

    async def test_concurrent_acquire_gives_one_holder(self) -> None:
        async with self.opened() as store:
            holders = [f"h{i}" for i in range(CONCURRENCY)]

            leases = await asyncio.gather(
                *(store.acquire(self.conversation, h, 10_000, T0) for h in holders)
            )

            winners = [lease for lease in leases if lease is not None]
            assert len(winners) == 1
            holder = winners[0].holder
            seq = await store.allocate_seq(self.conversation, holder, "m1")
            assert seq == 1
            for other in holders:
                if other != holder:
                    with pytest.raises(LeaseLost):
                        await store.allocate_seq(self.conversation, other, "m2")

    async def test_concurrent_takeover_of_an_expired_lease_gives_one_holder(
        self,
    ) -> None:
        async with self.opened() as store:
            await store.acquire(self.conversation, "dead", 1000, T0)
            holders = [f"h{i}" for i in range(CONCURRENCY)]

            leases = await asyncio.gather(
                *(store.acquire(self.conversation, h, 1000, T0 + 5000) for h in holders)
            )

            assert sum(lease is not None for lease in leases) == 1

    async def test_allocate_seq_counts_from_one(self) -> None:
        async with self.opened() as store:
            await store.acquire(self.conversation, "h1", 1000, T0)

            seqs = [
                await store.allocate_seq(self.conversation, "h1", f"m{i}")
                for i in range(5)
            ]

            assert seqs == [1, 2, 3, 4, 5]
            assert await store.last_seq(self.conversation) == 5
            assert await store.last_seq("g:other") == 0

    async def test_concurrent_allocations_never_repeat_a_seq(self) -> None:
        async with self.opened() as store:
            await store.acquire(self.conversation, "h1", 60_000, T0)

            seqs = await asyncio.gather(
                *(
                    store.allocate_seq(self.conversation, "h1", f"m{i}")
                    for i in range(20)
                )
            )

            assert sorted(seqs) == list(range(1, 21))
            assert await store.last_seq(self.conversation) == 20

    async def test_allocate_seq_without_the_lease_raises_lease_lost(self) -> None:
        async with self.opened() as store:
            with pytest.raises(LeaseLost) as never_held:
                await store.allocate_seq(self.conversation, "h1", "m1")
            assert never_held.value.conversation_id == self.conversation

            await store.acquire(self.conversation, "h1", 1000, T0)
            await store.acquire(self.conversation, "h2", 1000, T0 + 2000)

            with pytest.raises(LeaseLost):
                await store.allocate_seq(self.conversation, "h1", "m1")
            assert await store.last_seq(self.conversation) == 0
            assert await store.allocate_seq(self.conversation, "h2", "m1") == 1

    async def test_allocate_seq_again_for_the_pending_message_gives_its_seq(
        self,
    ) -> None:
        # A retry after the first answer was lost (the write committed, the
        # reply never came) must not burn a seq that nobody then declares.
        async with self.opened() as store:
            await store.acquire(self.conversation, "h1", 60_000, T0)
            first = await store.allocate_seq(self.conversation, "h1", "m1")
            again = await store.allocate_seq(self.conversation, "h1", "m1")
            lease = await store.acquire(self.conversation, "h1", 60_000, T0)
            other = await store.allocate_seq(self.conversation, "h1", "m2")

            assert (first, again, other) == (1, 1, 2)
            assert lease is not None
            assert (lease.pending_message_id, lease.pending_seq) == ("m1", 1)
            assert await store.last_seq(self.conversation) == 2
            await store.acquire(self.conversation, "h2", 60_000, T0 + 120_000)
            with pytest.raises(LeaseLost):
                await store.allocate_seq(self.conversation, "h1", "m2")

    async def test_release_clears_the_pending_send_and_frees_the_lease(self) -> None:
        async with self.opened() as store:
            await store.acquire(self.conversation, "h1", 60_000, T0)
            await store.allocate_seq(self.conversation, "h1", "m1")

            await store.release(self.conversation, "h1")

            lease = await store.acquire(self.conversation, "h2", 60_000, T0 + 1)
            assert lease is not None
            assert lease.pending_message_id is None
            assert lease.pending_seq == 0
            assert lease.last_seq == 1

    async def test_release_by_another_holder_changes_nothing(self) -> None:
        async with self.opened() as store:
            await store.acquire(self.conversation, "h1", 60_000, T0)
            await store.allocate_seq(self.conversation, "h1", "m1")

            await store.release(self.conversation, "h2")
            await store.abandon(self.conversation, "h2")

            assert await store.acquire(self.conversation, "h3", 60_000, T0 + 1) is None
            assert await store.allocate_seq(self.conversation, "h1", "m2") == 2

    async def test_abandon_frees_the_lease_and_keeps_the_pending_send(self) -> None:
        async with self.opened() as store:
            await store.acquire(self.conversation, "h1", 60_000, T0)
            await store.allocate_seq(self.conversation, "h1", "m1")

            await store.abandon(self.conversation, "h1")

            lease = await store.acquire(self.conversation, "h2", 60_000, T0 + 1)
            assert lease is not None
            assert (lease.pending_message_id, lease.pending_seq) == ("m1", 1)
            assert lease.last_seq == 1

    async def test_an_expired_lease_hands_its_pending_send_over(self) -> None:
        async with self.opened() as store:
            await store.acquire(self.conversation, "dead", 1000, T0)
            await store.allocate_seq(self.conversation, "dead", "m1")

            assert await store.acquire(self.conversation, "h2", 1000, T0 + 999) is None
            lease = await store.acquire(self.conversation, "h2", 1000, T0 + 1001)

            assert lease is not None
            assert (lease.pending_message_id, lease.pending_seq) == ("m1", 1)
            with pytest.raises(LeaseLost):
                await store.allocate_seq(self.conversation, "dead", "m2")
            assert await store.allocate_seq(self.conversation, "h2", "m2") == 2

    async def test_holes(self) -> None:
        async with self.opened() as store:
            await store.acquire(self.conversation, "h1", 1000, T0)
            for i in range(6):
                await store.allocate_seq(self.conversation, "h1", f"m{i}")

            await store.declare_hole(self.conversation, 5)
            await store.declare_hole(self.conversation, 2)
            await store.declare_hole(self.conversation, 2)

            assert await store.holes(self.conversation, 0, 6) == [2, 5]
            assert await store.holes(self.conversation, 2, 5) == [5]
            assert await store.holes(self.conversation, 1, 4) == [2]
            assert await store.holes(self.conversation, 5, 6) == []
            assert await store.holes("g:other", 0, 6) == []

    async def test_concurrent_declare_hole_records_it_once(self) -> None:
        async with self.opened() as store:
            await asyncio.gather(
                *(store.declare_hole(self.conversation, 3) for _ in range(20))
            )

            assert await store.holes(self.conversation, 0, 10) == [3]

    async def test_read_is_ascending_bounded_and_after_a_cursor(self) -> None:
        async with self.opened() as store:
            seqs = [4, 1, 3, 9, 2, 7]
            await store.add_entries([self._entry("bob", s) for s in seqs])

            everything = await store.read("bob", self.conversation, 0, 100)
            first = await store.read("bob", self.conversation, 0, 2)
            after_3 = await store.read("bob", self.conversation, 3, 2)
            after_last = await store.read("bob", self.conversation, 9, 10)

            assert [e.seq for e in everything] == [1, 2, 3, 4, 7, 9]
            assert everything[0] == self._entry("bob", 1)
            assert [e.seq for e in first] == [1, 2]
            assert [e.seq for e in after_3] == [4, 7]
            assert after_last == []

    async def test_read_walks_pages_without_gaps_or_repeats(self) -> None:
        async with self.opened() as store:
            await store.add_entries([self._entry("bob", s) for s in range(1, 258)])

            walked: list[int] = []
            cursor = 0
            while page := await store.read("bob", self.conversation, cursor, 50):
                walked.extend(e.seq for e in page)
                cursor = page[-1].seq

            assert walked == list(range(1, 258))

    async def test_read_keeps_users_and_conversations_apart(self) -> None:
        async with self.opened() as store:
            await store.add_entries(
                [
                    self._entry("bob", 1),
                    self._entry("carol", 1),
                    self._entry("bob", 1, conversation_id="g:other"),
                ]
            )

            assert [e.user_id for e in await store.read("bob", "g:team", 0, 10)] == [
                "bob"
            ]
            other = await store.read("bob", "g:other", 0, 10)
            assert [e.conversation_id for e in other] == ["g:other"]
            assert await store.read("dave", "g:team", 0, 10) == []

    async def test_add_entries_keeps_the_first_version(self) -> None:
        async with self.opened() as store:
            first = self._entry("bob", 1, message_id="first")
            await store.add_entries([first])

            await store.add_entries(
                [self._entry("bob", 1, message_id="second"), self._entry("bob", 2)]
            )
            await store.add_entries([first, first])

            entries = await store.read("bob", self.conversation, 0, 10)
            assert entries == [first, self._entry("bob", 2)]

    async def test_add_no_entries(self) -> None:
        async with self.opened() as store:
            await store.add_entries([])

            assert await store.read("bob", self.conversation, 0, 10) == []

    async def test_concurrent_add_entries_writes_each_once(self) -> None:
        async with self.opened() as store:
            batch = [self._entry(f"u{i}", 1) for i in range(30)]

            await asyncio.gather(*(store.add_entries(batch) for _ in range(20)))

            for entry in batch:
                got = await store.read(entry.user_id, self.conversation, 0, 10)
                assert got == [entry]

    async def test_add_entries_of_a_large_group_in_one_call(self) -> None:
        async with self.opened() as store:
            batch = [self._entry(f"user{i:05d}", 1) for i in range(5000)]

            await store.add_entries(batch)

            for user in ("user00000", "user02500", "user04999"):
                got = await store.read(user, self.conversation, 0, 10)
                assert [e.seq for e in got] == [1]

    async def test_count_unread_skips_own_and_deleted_entries(self) -> None:
        async with self.opened() as store:
            await store.add_entries(
                [
                    self._entry("bob", 1, sender_id="alice"),
                    self._entry("bob", 2, sender_id="bob"),
                    self._entry("bob", 3, sender_id="alice"),
                    self._entry("bob", 4, sender_id="carol"),
                    self._entry("bob", 5, sender_id="alice"),
                ]
            )
            await store.mark_deleted(self.conversation, 4)

            assert await store.count_unread("bob", self.conversation, 0, 5) == 3
            assert await store.count_unread("bob", self.conversation, 1, 5) == 2
            assert await store.count_unread("bob", self.conversation, 0, 3) == 2
            assert await store.count_unread("bob", self.conversation, 5, 9) == 0
            assert await store.count_unread("carol", self.conversation, 0, 5) == 0

    async def test_mark_deleted_marks_every_entry_of_the_seq(self) -> None:
        async with self.opened() as store:
            users = ["alice", "bob", "carol"]
            await store.add_entries([self._entry(u, s) for u in users for s in (1, 2)])

            holders = await store.mark_deleted(self.conversation, 2)
            again = await store.mark_deleted(self.conversation, 2)
            nothing = await store.mark_deleted(self.conversation, 9)

            assert sorted(holders) == users
            # A repeated call, finishing an interrupted delete, answers the same.
            assert sorted(again) == users
            assert nothing == []
            for user in users:
                entries = await store.read(user, self.conversation, 0, 10)
                assert [(e.seq, e.deleted) for e in entries] == [(1, False), (2, True)]
            assert await store.count_unread("bob", self.conversation, 0, 2) == 1

    async def test_concurrent_mark_deleted_name_every_holder_once(self) -> None:
        async with self.opened() as store:
            users = [f"u{i}" for i in range(10)]
            await store.add_entries([self._entry(u, 1) for u in users])

            results = await asyncio.gather(
                *(store.mark_deleted(self.conversation, 1) for _ in range(10))
            )

            assert all(sorted(result) == users for result in results)
            entries = [await store.read(u, self.conversation, 0, 10) for u in users]
            assert all([e.deleted for e in found] == [True] for found in entries)

    def _entry(
        self,
        user_id: str,
        seq: int,
        *,
        conversation_id: str | None = None,
        message_id: str | None = None,
        sender_id: str = "alice",
    ) -> MailboxEntry:
        conversation_id = conversation_id or self.conversation
        return MailboxEntry(
            user_id=user_id,
            conversation_id=conversation_id,
            seq=seq,
            message_id=message_id or f"{conversation_id}/{seq}",
            sender_id=sender_id,
            created_at=T0 + seq,
        )


class ConversationStoreSuite(StoreSuite[ConversationStore]):
    """The contract of `ConversationStore`: summaries, read positions, versions."""

    conversation = "d:alice:bob"

    async def test_is_a_conversation_store(self) -> None:
        async with self.opened() as store:
            assert isinstance(store, ConversationStore)

    async def test_apply_message_creates_the_summaries(self) -> None:
        async with self.opened() as store:
            update = self._update(1, body=AWKWARD_TEXT)

            await store.apply_message(update, ["alice", "bob"])

            alice = await store.get("alice", self.conversation)
            bob = await store.get("bob", self.conversation)
            assert alice is not None
            assert bob is not None
            assert (alice.last_seq, alice.read_seq, alice.unread) == (1, 1, 0)
            assert (bob.last_seq, bob.read_seq, bob.unread) == (1, 0, 1)
            assert bob.last_message_id == update.message_id
            assert bob.last_sender_id == "alice"
            assert bob.last_preview == AWKWARD_TEXT
            assert bob.last_at == update.created_at
            assert (bob.user_id, bob.conversation_id) == ("bob", self.conversation)
            assert await store.get("carol", self.conversation) is None
            assert await store.get("bob", "d:bob:carol") is None

    async def test_unread_counts_messages_by_others(self) -> None:
        async with self.opened() as store:
            await store.apply_message(self._update(1), ["alice", "bob"])
            await store.apply_message(self._update(2), ["alice", "bob"])
            await store.apply_message(self._update(3, sender="bob"), ["alice", "bob"])
            await store.apply_message(self._update(4), ["alice", "bob"])

            alice = await store.get("alice", self.conversation)
            bob = await store.get("bob", self.conversation)
            assert alice is not None
            assert bob is not None
            # What a user writes moves the user's own read position.
            assert (bob.read_seq, bob.unread, bob.last_seq) == (3, 1, 4)
            assert (alice.read_seq, alice.unread, alice.last_seq) == (4, 0, 4)

    async def test_a_message_by_another_after_ones_own_is_unread(self) -> None:
        async with self.opened() as store:
            await store.apply_message(self._update(1), ["alice", "bob"])
            await store.apply_message(self._update(2, sender="bob"), ["alice", "bob"])
            await store.apply_message(self._update(3, sender="bob"), ["alice", "bob"])

            alice = await store.get("alice", self.conversation)
            assert alice is not None
            assert (alice.read_seq, alice.unread, alice.last_seq) == (1, 2, 3)

    async def test_a_repeated_update_changes_nothing(self) -> None:
        async with self.opened() as store:
            await store.apply_message(self._update(1), ["alice", "bob"])
            await store.apply_message(self._update(2), ["alice", "bob"])
            before = await self._rows(store, ["alice", "bob"])

            await store.apply_message(self._update(2), ["alice", "bob"])
            await store.apply_message(self._update(1), ["alice", "bob"])

            assert await self._rows(store, ["alice", "bob"]) == before
            assert before["bob"].unread == 2

    async def test_concurrent_apply_of_one_update_counts_once(self) -> None:
        async with self.opened() as store:
            update = self._update(1)

            await asyncio.gather(
                *(
                    store.apply_message(update, ["alice", "bob"])
                    for _ in range(CONCURRENCY)
                )
            )

            bob = await store.get("bob", self.conversation)
            assert bob is not None
            assert (bob.last_seq, bob.unread) == (1, 1)
            changed = await store.list_changed("bob", 0, 100)
            assert [r.conversation_id for r in changed] == [self.conversation]

    async def test_concurrent_updates_of_many_conversations(self) -> None:
        async with self.opened() as store:
            conversations = [f"g:room{i}" for i in range(CONCURRENCY)]

            await asyncio.gather(
                *(
                    store.apply_message(
                        self._update(1, conversation_id=c), ["bob", "alice"]
                    )
                    for c in conversations
                )
            )

            rows = await store.list_changed("bob", 0, 1000)
            assert sorted(r.conversation_id for r in rows) == sorted(conversations)
            assert all(r.unread == 1 for r in rows)
            versions = [r.version for r in rows]
            assert versions == sorted(set(versions))

    async def test_apply_message_to_many_recipients(self) -> None:
        async with self.opened() as store:
            users = [f"user{i:04d}" for i in range(1000)]

            await store.apply_message(
                self._update(1, conversation_id="g:big", sender="user0000"), users
            )

            for user in ("user0001", "user0500", "user0999"):
                row = await store.get(user, "g:big")
                assert row is not None
                assert row.unread == 1
            sender = await store.get("user0000", "g:big")
            assert sender is not None
            assert sender.unread == 0

    async def test_list_changed_pages_by_version(self) -> None:
        async with self.opened() as store:
            conversations = [f"g:room{i}" for i in range(7)]
            for c in conversations:
                await store.apply_message(self._update(1, conversation_id=c), ["bob"])

            seen = await self._walk(store, "bob", 0, limit=3)

            assert [r.conversation_id for r in seen] == conversations
            versions = [r.version for r in seen]
            assert versions == sorted(versions)
            assert len(set(versions)) == len(versions)
            assert await store.list_changed("bob", versions[-1], 10) == []
            assert await store.list_changed("nobody", 0, 10) == []

    async def test_a_changed_row_moves_to_the_end_once(self) -> None:
        async with self.opened() as store:
            for c in ("g:a", "g:b", "g:c"):
                await store.apply_message(self._update(1, conversation_id=c), ["bob"])
            first = await store.list_changed("bob", 0, 10)
            cursor = first[-1].version

            await store.apply_message(self._update(2, conversation_id="g:a"), ["bob"])

            rows = await store.list_changed("bob", 0, 10)
            assert [r.conversation_id for r in rows] == ["g:b", "g:c", "g:a"]
            after = await store.list_changed("bob", cursor, 10)
            assert [(r.conversation_id, r.last_seq) for r in after] == [("g:a", 2)]

    async def test_version_cursor_never_misses_or_repeats_under_writes(self) -> None:
        async with self.opened() as store:
            conversations = [f"g:room{i}" for i in range(10)]
            latest: dict[str, ConversationSummary] = {}
            cursor = 0
            seen_versions: list[int] = []

            async def writer(conversation_id: str) -> None:
                for seq in range(1, 6):
                    update = self._update(seq, conversation_id=conversation_id)
                    await store.apply_message(update, ["alice", "bob"])

            async def reader() -> None:
                nonlocal cursor
                for _ in range(30):
                    for row in await store.list_changed("bob", cursor, 4):
                        seen_versions.append(row.version)
                        latest[row.conversation_id] = row
                        cursor = row.version
                    await asyncio.sleep(0)

            await asyncio.gather(reader(), *(writer(c) for c in conversations))
            for row in await self._walk(store, "bob", cursor, limit=4):
                seen_versions.append(row.version)
                latest[row.conversation_id] = row

            assert seen_versions == sorted(set(seen_versions))
            final = {r.conversation_id: r for r in await self._walk(store, "bob", 0, 4)}
            assert latest == final
            assert all(r.last_seq == 5 and r.unread == 5 for r in final.values())

    async def test_set_read_moves_forward_and_sets_unread(self) -> None:
        async with self.opened() as store:
            for seq in (1, 2, 3):
                await store.apply_message(self._update(seq), ["alice", "bob"])
            before = await self._row(store, "bob")

            moved = await store.set_read("bob", self.conversation, 2, 1, before.version)

            assert moved is not None
            assert (moved.read_seq, moved.unread, moved.last_seq) == (2, 1, 3)
            assert moved.version > before.version
            assert await store.get("bob", self.conversation) == moved
            changed = await store.list_changed("bob", before.version, 10)
            assert changed == [moved]

    async def test_set_read_never_moves_backwards(self) -> None:
        async with self.opened() as store:
            for seq in (1, 2, 3):
                await store.apply_message(self._update(seq), ["alice", "bob"])
            row = await self._row(store, "bob")
            at_3 = await store.set_read("bob", self.conversation, 3, 0, row.version)
            assert at_3 is not None

            moved = await store.set_read("bob", self.conversation, 1, 0, at_3.version)

            row = await self._row(store, "bob")
            assert row.read_seq == 3
            assert moved is None or moved.read_seq == 3

    async def test_set_read_with_a_stale_version_writes_nothing(self) -> None:
        async with self.opened() as store:
            await store.apply_message(self._update(1), ["alice", "bob"])
            stale = await self._row(store, "bob")
            await store.apply_message(self._update(2), ["alice", "bob"])
            before = await self._row(store, "bob")

            assert (
                await store.set_read("bob", self.conversation, 1, 0, stale.version)
                is None
            )
            assert await store.set_read("bob", "g:unknown", 1, 0, stale.version) is None
            assert await self._row(store, "bob") == before

    async def test_concurrent_set_read_of_one_version_writes_once(self) -> None:
        async with self.opened() as store:
            for seq in (1, 2):
                await store.apply_message(self._update(seq), ["alice", "bob"])
            row = await self._row(store, "bob")

            results = await asyncio.gather(
                *(
                    store.set_read("bob", self.conversation, s % 3, s % 3, row.version)
                    for s in range(20)
                )
            )

            written = [r for r in results if r is not None]
            assert len(written) == 1
            assert await self._row(store, "bob") == written[0]

    async def test_apply_delete_makes_unread_unknown_where_it_was_unread(
        self,
    ) -> None:
        async with self.opened() as store:
            users = ["alice", "bob", "carol"]
            for seq in (1, 2, 3):
                await store.apply_message(
                    self._update(seq, conversation_id="g:team"), users
                )
            carol = await self._row(store, "carol", "g:team")
            await store.set_read("carol", "g:team", 3, 0, carol.version)
            bob_before = await self._row(store, "bob", "g:team")
            carol_before = await self._row(store, "carol", "g:team")

            await store.apply_delete("g:team", 2, ["bob", "carol"])

            bob = await self._row(store, "bob", "g:team")
            assert (bob.unread, bob.read_seq, bob.last_seq) == (UNREAD_UNKNOWN, 0, 3)
            assert bob.version > bob_before.version
            assert bob.last_preview == bob_before.last_preview
            assert await self._row(store, "carol", "g:team") == carol_before

    async def test_apply_delete_of_the_last_message_drops_its_preview(self) -> None:
        async with self.opened() as store:
            for seq in (1, 2):
                await store.apply_message(self._update(seq), ["alice", "bob"])

            await store.apply_delete(self.conversation, 2, ["bob", "nobody"])
            await store.apply_delete(self.conversation, 2, ["bob"])

            bob = await self._row(store, "bob")
            assert (bob.unread, bob.last_seq, bob.last_preview) == (
                UNREAD_UNKNOWN,
                2,
                "",
            )
            assert await store.get("nobody", self.conversation) is None

    async def test_an_unknown_unread_count_stays_unknown(self) -> None:
        async with self.opened() as store:
            await store.apply_message(self._update(1), ["alice", "bob"])
            await store.apply_delete(self.conversation, 1, ["bob"])

            await store.apply_message(self._update(2), ["alice", "bob"])

            bob = await self._row(store, "bob")
            assert (bob.unread, bob.last_seq) == (UNREAD_UNKNOWN, 2)
            moved = await store.set_read("bob", self.conversation, 0, 1, bob.version)
            assert moved is not None
            assert moved.unread == 1

    @staticmethod
    async def _walk(
        store: ConversationStore, user_id: str, since: int, limit: int
    ) -> list[ConversationSummary]:
        rows: list[ConversationSummary] = []
        while page := await store.list_changed(user_id, since, limit):
            rows.extend(page)
            since = page[-1].version
        return rows

    async def _row(
        self, store: ConversationStore, user_id: str, conversation_id: str | None = None
    ) -> ConversationSummary:
        row = await store.get(user_id, conversation_id or self.conversation)
        assert row is not None, (user_id, conversation_id or self.conversation)
        return row

    async def _rows(
        self, store: ConversationStore, users: list[str]
    ) -> dict[str, ConversationSummary]:
        rows = {}
        for user in users:
            row = await store.get(user, self.conversation)
            assert row is not None
            rows[user] = row
        return rows

    def _update(
        self,
        seq: int,
        *,
        sender: str = "alice",
        conversation_id: str | None = None,
        body: str | None = None,
    ) -> SummaryUpdate:
        conversation_id = conversation_id or self.conversation
        return SummaryUpdate(
            conversation_id=conversation_id,
            seq=seq,
            message_id=f"{conversation_id}/{seq}",
            sender_id=sender,
            preview=body if body is not None else f"message {seq}",
            created_at=T0 + seq,
        )


class NotificationStoreSuite(StoreSuite[NotificationStore]):
    """The contract of `NotificationStore`."""

    async def test_is_a_notification_store(self) -> None:
        async with self.opened() as store:
            assert isinstance(store, NotificationStore)

    async def test_add_and_list(self) -> None:
        async with self.opened() as store:
            payload = {"from": "alice", "text": AWKWARD_TEXT, "nested": {"n": [1, 2]}}

            added = await store.add("bob", "friend_request", payload, T0)

            assert added.user_id == "bob"
            assert added.kind == "friend_request"
            assert dict(added.payload) == payload
            assert added.created_at == T0
            assert not added.read
            listed = await store.list("bob", 0, 10)
            assert [n.notification_id for n in listed] == [added.notification_id]
            assert dict(listed[0].payload) == payload

    async def test_ids_increase_and_list_pages_after_an_id(self) -> None:
        async with self.opened() as store:
            added = []
            for i in range(9):
                user = "bob" if i % 3 else "carol"
                added.append(await store.add(user, "notice", {"i": i}, T0 + i))
            ids = [n.notification_id for n in added]
            bobs = [n.notification_id for n in added if n.user_id == "bob"]

            walked: list[int] = []
            cursor = 0
            while page := await store.list("bob", cursor, 2):
                walked.extend(n.notification_id for n in page)
                cursor = page[-1].notification_id

            assert ids == sorted(set(ids))
            assert walked == bobs
            assert await store.list("bob", ids[-1], 10) == []
            assert await store.list("nobody", 0, 10) == []

    async def test_concurrent_adds_get_distinct_ids(self) -> None:
        async with self.opened() as store:
            added = await asyncio.gather(
                *(store.add("bob", "notice", {"i": i}, T0) for i in range(CONCURRENCY))
            )

            ids = {n.notification_id for n in added}
            assert len(ids) == CONCURRENCY
            listed = await store.list("bob", 0, 1000)
            assert [n.notification_id for n in listed] == sorted(ids)

    async def test_mark_read(self) -> None:
        async with self.opened() as store:
            mine = await store.add("bob", "notice", {}, T0)
            other = await store.add("carol", "notice", {}, T0)

            assert await store.mark_read("bob", mine.notification_id)
            assert await store.mark_read("bob", mine.notification_id)
            assert not await store.mark_read("bob", other.notification_id)
            assert not await store.mark_read("bob", other.notification_id + 1000)

            assert [n.read for n in await store.list("bob", 0, 10)] == [True]
            assert [n.read for n in await store.list("carol", 0, 10)] == [False]


class AnalyticsStoreSuite(StoreSuite[AnalyticsStore]):
    """The contract of `AnalyticsStore`."""

    async def test_is_an_analytics_store(self) -> None:
        async with self.opened() as store:
            assert isinstance(store, AnalyticsStore)

    async def test_counts_each_message_once(self) -> None:
        async with self.opened() as store:
            assert await store.record_message("m1", "2024-01-01", "direct", "alice")
            assert not await store.record_message("m1", "2024-01-01", "direct", "alice")
            assert await store.record_message("m2", "2024-01-01", "group", "bob")
            assert await store.record_message("m3", "2024-01-01", "group", "alice")
            assert await store.record_message("m4", "2024-01-02", "direct", "carol")

            assert await store.message_counts("2024-01-01") == {"direct": 1, "group": 2}
            assert await store.active_users("2024-01-01") == 2
            assert await store.message_counts("2024-01-02") == {"direct": 1}
            assert await store.active_users("2024-01-02") == 1
            assert await store.message_counts("2023-12-31") == {}
            assert await store.active_users("2023-12-31") == 0

    async def test_concurrent_records_of_one_message_count_once(self) -> None:
        async with self.opened() as store:
            results = await asyncio.gather(
                *(
                    store.record_message("m1", "2024-01-01", "group", "alice")
                    for _ in range(CONCURRENCY)
                )
            )

            assert results.count(True) == 1
            assert await store.message_counts("2024-01-01") == {"group": 1}
            assert await store.active_users("2024-01-01") == 1

    async def test_concurrent_records_of_many_messages(self) -> None:
        async with self.opened() as store:
            await asyncio.gather(
                *(
                    store.record_message(f"m{i}", "2024-01-01", "direct", f"u{i % 7}")
                    for i in range(CONCURRENCY)
                )
            )

            assert await store.message_counts("2024-01-01") == {"direct": CONCURRENCY}
            assert await store.active_users("2024-01-01") == 7


class DirectorySuite(abc.ABC):
    """The contract of `GroupDirectory` (and so of `Directory`)."""

    @abc.abstractmethod
    async def make_directory(self) -> GroupDirectory:
        """Returns a fresh directory without groups; called once per test."""

    async def close_directory(self, directory: GroupDirectory) -> None:  # noqa: B027
        """Releases what `make_directory` opened; called at the end of each test."""

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[GroupDirectory]:
        """Yields a directory from `make_directory` and closes it afterwards."""
        directory = await self.make_directory()
        try:
            yield directory
        finally:
            await self.close_directory(directory)

    async def test_is_a_group_directory(self) -> None:
        async with self.opened() as directory:
            assert isinstance(directory, GroupDirectory)

    async def test_direct_conversations_need_no_registration(self) -> None:
        async with self.opened() as directory:
            assert await directory.members("d:alice:bob") == {"alice", "bob"}

    async def test_create_and_get_a_group(self) -> None:
        async with self.opened() as directory:
            group = await directory.create_group("team", "alice", "Team ✓", ["bob"])

            assert group.group_id == "team"
            assert group.owner_id == "alice"
            assert group.name == "Team ✓"
            assert group.members == {"alice", "bob"}
            assert await directory.get_group("team") == group
            assert await directory.members("g:team") == {"alice", "bob"}

    async def test_unknown_groups(self) -> None:
        async with self.opened() as directory:
            with pytest.raises(UnknownConversation) as members:
                await directory.members("g:nope")
            assert members.value.conversation_id == "g:nope"
            with pytest.raises(UnknownGroup) as get:
                await directory.get_group("nope")
            assert get.value.group_id == "nope"
            with pytest.raises(UnknownGroup):
                await directory.add_members("nope", ["bob"])
            with pytest.raises(UnknownGroup):
                await directory.remove_members("nope", ["bob"])
            assert await directory.groups_of("alice") == []

    async def test_a_group_id_is_taken_once(self) -> None:
        async with self.opened() as directory:
            await directory.create_group("team", "alice", "Team", [])

            with pytest.raises(GroupExists) as raised:
                await directory.create_group("team", "bob", "Other", ["carol"])

            assert raised.value.group_id == "team"
            assert (await directory.get_group("team")).owner_id == "alice"

    async def test_concurrent_creates_of_one_group_make_one(self) -> None:
        async with self.opened() as directory:
            results = await asyncio.gather(
                *(
                    directory.create_group("team", f"owner{i}", "Team", [])
                    for i in range(20)
                ),
                return_exceptions=True,
            )

            created = [r for r in results if not isinstance(r, BaseException)]
            assert len(created) == 1
            assert all(isinstance(r, GroupExists) for r in results if r not in created)
            assert await directory.get_group("team") == created[0]

    async def test_add_and_remove_members(self) -> None:
        async with self.opened() as directory:
            await directory.create_group("team", "alice", "Team", ["bob"])

            added = await directory.add_members("team", ["carol", "bob", "dave"])
            removed = await directory.remove_members("team", ["dave", "nobody"])

            assert added.members == {"alice", "bob", "carol", "dave"}
            assert removed.members == {"alice", "bob", "carol"}
            assert await directory.members("g:team") == {"alice", "bob", "carol"}

    async def test_concurrent_member_changes_are_all_kept(self) -> None:
        async with self.opened() as directory:
            await directory.create_group("team", "alice", "Team", [])
            users = [f"u{i}" for i in range(30)]

            await asyncio.gather(*(directory.add_members("team", [u]) for u in users))

            assert await directory.members("g:team") == {"alice", *users}

    async def test_groups_of(self) -> None:
        async with self.opened() as directory:
            await directory.create_group("b-team", "alice", "B", ["bob"])
            await directory.create_group("a-team", "bob", "A", ["carol"])
            await directory.create_group("c-team", "carol", "C", [])

            assert {g.group_id for g in await directory.groups_of("bob")} == {
                "a-team",
                "b-team",
            }
            assert [g.group_id for g in await directory.groups_of("alice")] == [
                "b-team"
            ]
            await directory.remove_members("b-team", ["bob"])
            assert [g.group_id for g in await directory.groups_of("bob")] == ["a-team"]
