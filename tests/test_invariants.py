"""The invariants of ARCHITECTURE.md under random interleavings (Hypothesis).

A rule-based state machine sends in batches gathered at once (several
"processes", i.e. `SendPipeline` instances over the same stores, direct and
group conversations, client message ids reused), kills sends between
pipeline steps (`ProcessDeath`, which leaves the send lease held: the fake
clock then jumps past ``lease_ms``, as time passes until the lease expires)
or fails them (a plain exception the process survives), retries and repairs
them, walks sync pages from random cursors (also while a batch runs), marks
read from several devices at once and deletes. Every store call may yield
to the event loop a random number of times, so even the in-memory stores,
whose methods are atomic, see calls of concurrent tasks interleave.

After each step the conversations it touched are checked against a model:
1 one seq per message, unique in its conversation, and a send accepted after
another gets a higher seq; 2 every member has exactly one entry of each
message whose send returned or was repaired; 3 sync pages are complete,
ordered and never repeat a seq, and a walk done while messages arrived,
continued to the end, equals a walk done afterwards; 4 a resend returns the
same id and seq; 5 read_seq never moves back and unread equals the entries
after read_seq not written by the user (never negative); 7 no holes appear,
as no message is ever lost.

Each example runs in its own event loop, created with the machine.
``FLEETS_HYPOTHESIS_PROFILE=thorough`` runs many more examples.
"""

from __future__ import annotations

import asyncio
import os
import random
import selectors
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import attrs
import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from fleets_mailbox import (
    DuplicateMessage,
    LeaseLost,
    NotFound,
    Stores,
    SyncService,
)
from fleets_mailbox.model import (
    ConversationSummary,
    Message,
    MessageStatus,
    direct_conversation,
)
from fleets_mailbox.pipeline import SEND_STEPS, SendPipeline
from fleets_mailbox.testing import (
    CallLog,
    CrashHook,
    FakeClock,
    ProcessDeath,
    walk_sync,
)

_T = TypeVar("_T")

LEASE_MS = 10_000
USERS = ("u0", "u1", "u2", "u3")
GROUPS = {"grp": ("u0", "u1", "u2", "u3"), "duo": ("u0", "u2")}
MEMBERS: dict[str, tuple[str, ...]] = {
    direct_conversation("u0", "u1"): ("u0", "u1"),
    direct_conversation("u1", "u2"): ("u1", "u2"),
    "g:grp": GROUPS["grp"],
    "g:duo": GROUPS["duo"],
}
CONVERSATIONS = sorted(MEMBERS)

settings.register_profile(
    "fleets-invariants",
    max_examples=150,
    stateful_step_count=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "fleets-invariants-thorough",
    parent=settings.get_profile("fleets-invariants"),
    max_examples=1000,
    stateful_step_count=25,
)
PROFILE = settings.get_profile(
    "fleets-invariants-thorough"
    if os.environ.get("FLEETS_HYPOTHESIS_PROFILE") == "thorough"
    else "fleets-invariants"
)
#: SQLite round trips cost milliseconds: fewer examples keep it under a minute.
EXAMPLES = {
    "memory": PROFILE.max_examples,
    "sqlite": PROFILE.max_examples // 6,
    "mongo": PROFILE.max_examples // 10,
    "mysql": PROFILE.max_examples // 10,
}


#: Seeds of the random yields that interleave the tasks of one step.
INTERLEAVINGS = st.integers(0, 2**16)
#: Picks among what the model holds. Rules draw the same kinds of values
#: whatever the state, so that a replay draws alike even where SQLite's
#: threads made an earlier step end otherwise.
PICKS = st.integers(0, 2**16)


@attrs.frozen
class SendSpec:
    """One send of a batch: who, where, with which client id, how it fails."""

    conversation_id: str
    sender_id: str
    client_msg_id: str
    process: int
    crash: tuple[str, str] | None

    @property
    def key(self) -> tuple[str, str]:
        return (self.sender_id, self.client_msg_id)

    @property
    def body(self) -> str:
        # The same key in another conversation is other content: a duplicate.
        return f"{self.sender_id}:{self.client_msg_id}@{self.conversation_id}"


@st.composite
def send_specs(draw: st.DrawFn) -> SendSpec:
    conversation = draw(st.sampled_from(CONVERSATIONS))
    crash = draw(
        st.one_of(
            st.none(),
            st.none(),
            st.tuples(st.sampled_from(SEND_STEPS), st.sampled_from(["death", "error"])),
        )
    )
    return SendSpec(
        conversation_id=conversation,
        sender_id=draw(st.sampled_from(MEMBERS[conversation])),
        client_msg_id=f"c{draw(st.integers(0, 5))}",
        process=draw(st.integers(0, 1)),
        crash=crash,
    )


@st.composite
def cursors(draw: st.DrawFn) -> tuple[str, str, int, int]:
    conversation = draw(st.sampled_from(CONVERSATIONS))
    user = draw(st.sampled_from(MEMBERS[conversation]))
    return (
        user,
        conversation,
        draw(st.integers(0, 8)),
        draw(st.sampled_from([1, 2, 3, 5, 100])),
    )


class _SkippingSelector:
    """A selector that skips ahead in the loop's time instead of sleeping."""

    def __init__(self, selector: selectors.BaseSelector, loop: VirtualTimeLoop):
        self._selector = selector
        self._loop = loop

    def select(self, timeout: float | None = None) -> Any:
        # Each pass of the loop costs a tick, so tasks that keep yielding
        # with sleep(0) do not stop the clock for those that wait on a timer.
        self._loop.now += self._loop.tick
        if timeout is None:
            return self._selector.select(None)
        events = self._selector.select(0)
        if not events and timeout > self._loop.tick:
            self._loop.now += timeout - self._loop.tick
        return events

    def __getattr__(self, name: str) -> Any:
        return getattr(self._selector, name)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose time moves only when every task waits for a timer.

    With stores that never leave the loop (the in-memory ones) a run is then
    deterministic, so Hypothesis can replay and shrink a failing example:
    the pipeline's real-time polling and retry pauses take no wall time and
    always wake in the same order.
    """

    #: Seconds that one pass of the loop takes.
    tick = 0.0002

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self._selector = _SkippingSelector(self._selector, self)  # type: ignore[has-type]

    def time(self) -> float:
        return self.now


class MailboxMachine(RuleBasedStateMachine):
    """Sends, crashes, retries, repairs, syncs and reads against a model."""

    def __init__(
        self,
        factory: Callable[[], Awaitable[Stores]],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__()
        self.loop = loop
        self.stores: Stores = self.run(factory())
        self.clock = FakeClock()
        self.rnd = random.Random(0)
        # What the model knows: sends that returned (or were repaired) by key,
        # sends that did not return, deleted messages, read_seq floors.
        self.known: dict[tuple[str, str], Message] = {}
        self.unfinished: dict[tuple[str, str], list[SendSpec]] = {}
        self.deleted: set[str] = set()
        self.read_floor: dict[tuple[str, str], int] = {}
        self.dirty: set[str] = set(CONVERSATIONS)
        # The services see stores whose every call may yield to other tasks.
        calls = CallLog()
        self.messages = calls.wrap(self.stores.messages, self._yield)
        self.mailboxes = calls.wrap(self.stores.mailboxes, self._yield)
        self.conversations = calls.wrap(self.stores.conversations, self._yield)
        self.pipelines = [self.new_pipeline(), self.new_pipeline()]
        self.sync = SyncService(
            messages=self.messages,
            mailboxes=self.mailboxes,
            conversations=self.conversations,
        )
        for group_id, members in GROUPS.items():
            owner, *others = members
            self.run(
                self.stores.directory.create_group(group_id, owner, group_id, others)
            )

    def run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return self.loop.run_until_complete(coroutine)

    def teardown(self) -> None:
        try:
            self.run(self.stores.close())
        finally:
            self.loop.close()

    def new_pipeline(self, **options: Any) -> SendPipeline:
        return SendPipeline(
            messages=self.messages,
            mailboxes=self.mailboxes,
            conversations=self.conversations,
            directory=self.stores.directory,
            lease_ms=LEASE_MS,
            wait_ms=20_000,
            clock=self.clock,
            **options,
        )

    async def _yield(self, name: str, args: tuple[Any, ...]) -> None:
        for _ in range(self.rnd.choice((0, 1, 2, 3))):
            await asyncio.sleep(0)

    # ------------------------------------------------------------ sends

    def crashing_pipeline(self, step: str, kind: str) -> SendPipeline:
        crash = CrashHook(step, error=ProcessDeath if kind == "death" else RuntimeError)

        async def hook(name: str) -> None:
            try:
                await crash(name)
            except ProcessDeath:
                # The process is dead; time passes until its lease expires.
                self.clock.advance(LEASE_MS + 1)
                raise

        return self.new_pipeline(step_hook=hook)

    async def _send(self, spec: SendSpec) -> Message:
        if spec.crash is None:
            pipeline = self.pipelines[spec.process]
        else:
            pipeline = self.crashing_pipeline(*spec.crash)
        return await pipeline.send(
            spec.sender_id, spec.conversation_id, spec.body, spec.client_msg_id
        )

    async def _reader(
        self, cursor: tuple[str, str, int, int], done: asyncio.Event
    ) -> list[int]:
        user, conversation, cursor_seq, limit = cursor
        seqs: list[int] = []
        while True:
            finished = done.is_set()
            page = await self.sync.sync(user, conversation, cursor_seq, limit)
            seqs.extend(m.seq for m in page.messages)
            cursor_seq = page.next_from_seq
            if finished and not page.has_more:
                return seqs
            await asyncio.sleep(0)

    @rule(
        specs=st.lists(send_specs(), min_size=1, max_size=4),
        reader=st.none() | cursors(),
        interleaving=INTERLEAVINGS,
    )
    def send_batch(
        self,
        specs: list[SendSpec],
        reader: tuple[str, str, int, int] | None,
        interleaving: int,
    ) -> None:
        self.rnd.seed(interleaving)
        accepted_before = self._highest_known_seqs()

        async def batch() -> tuple[list[Any], list[int] | None]:
            done = asyncio.Event()
            reading = (
                asyncio.ensure_future(self._reader(reader, done)) if reader else None
            )
            results = await asyncio.gather(
                *(self._send(s) for s in specs), return_exceptions=True
            )
            done.set()
            return list(results), (await reading if reading else None)

        results, read = self.run(batch())

        died = any(isinstance(r, ProcessDeath) for r in results)
        for spec, result in zip(specs, results, strict=True):
            self.dirty.add(spec.conversation_id)
            self._check_outcome(spec, result, died, accepted_before)
        if reader is not None:
            assert read is not None
            user, conversation, from_seq, limit = reader
            after = self.run(
                walk_sync(self.sync, user, conversation, from_seq=from_seq, limit=limit)
            )
            assert read == after.seqs, (reader, read, after.seqs)

    def _check_outcome(
        self,
        spec: SendSpec,
        result: object,
        died: bool,
        accepted_before: dict[str, int],
    ) -> None:
        if isinstance(result, Message):
            assert (result.conversation_id, result.body) == (
                spec.conversation_id,
                spec.body,
            )
            assert result.status is MessageStatus.COMMITTED
            assert result.seq > 0
            first = self.known.get(spec.key)
            if first is None:
                if spec.key not in self.unfinished:
                    # A new message: accepted after those known before.
                    assert result.seq > accepted_before.get(spec.conversation_id, 0)
                self.known[spec.key] = result
                self.unfinished.pop(spec.key, None)
            else:
                assert (result.message_id, result.seq) == (first.message_id, first.seq)
            return
        if isinstance(result, DuplicateMessage):
            stored = self.run(
                self.stores.messages.get_by_client_id(
                    spec.sender_id, spec.client_msg_id
                )
            )
            assert stored is not None
            assert stored.message_id == result.message_id
            assert (stored.conversation_id, stored.body) != (
                spec.conversation_id,
                spec.body,
            )
            return
        expected: tuple[type[BaseException], ...] = ()
        if spec.crash is not None:
            expected += (ProcessDeath if spec.crash[1] == "death" else RuntimeError,)
        if died:
            # The clock jumped: a live sender's lease may have been taken over.
            expected += (LeaseLost,)
        assert isinstance(result, expected or ()), (spec, result)
        if spec.key not in self.known:
            tried = self.unfinished.setdefault(spec.key, [])
            if spec not in tried:
                tried.append(spec)

    def _highest_known_seqs(self) -> dict[str, int]:
        highest: dict[str, int] = {}
        for message in self.known.values():
            conversation = message.conversation_id
            highest[conversation] = max(highest.get(conversation, 0), message.seq)
        return highest

    @rule(pick=PICKS, process=st.integers(0, 1))
    def retry(self, pick: int, process: int) -> None:
        if not self.unfinished:
            return
        key = sorted(self.unfinished)[pick % len(self.unfinished)]
        tried = self.unfinished[key]
        # Resend what the client sent first under the key; when sends of other
        # content raced for it, whichever was stored.
        stored = self.run(self.stores.messages.get_by_client_id(*key))
        matching = [s for s in tried if stored is None or s.body == stored.body]
        assert matching, (stored, tried)
        spec = attrs.evolve(matching[0], crash=None, process=process)

        result = self.run(self._send(spec))

        self.dirty.add(spec.conversation_id)
        self._check_outcome(spec, result, False, self._highest_known_seqs())
        assert spec.key in self.known

    @rule()
    def repair(self) -> None:
        self.clock.advance(1)
        self.run(self.pipelines[0].repair(older_than_ms=0, limit=1000))
        self.dirty.update(CONVERSATIONS)

        assert self.run(self.stores.messages.list_pending(self.clock() + 1, 10)) == []
        for key, tried in list(self.unfinished.items()):
            stored = self.run(self.stores.messages.get_by_client_id(*key))
            if stored is not None:
                assert stored.body in {s.body for s in tried}, (stored, tried)
                assert stored.status is MessageStatus.COMMITTED
                self.known[key] = stored
                del self.unfinished[key]

    # ------------------------------------------------------------ reads

    @rule(cursor=cursors())
    def walk(self, cursor: tuple[str, str, int, int]) -> None:
        user, conversation, from_seq, limit = cursor
        walk = self.run(
            walk_sync(self.sync, user, conversation, from_seq=from_seq, limit=limit)
        )
        expected = {
            m.message_id: m.seq
            for m in self.known.values()
            if m.conversation_id == conversation and m.seq > from_seq
        }
        got = {m.message_id: m.seq for m in walk.messages}
        assert expected.items() <= got.items(), (expected, got)
        for message in walk.messages:
            if message.message_id not in expected:
                assert (message.sender_id, message.client_msg_id) in self.unfinished

    @rule(
        user_conversation=st.sampled_from(
            [(u, c) for c in CONVERSATIONS for u in MEMBERS[c]]
        ),
        read_seqs=st.lists(st.integers(0, 6), min_size=2, max_size=3),
        interleaving=INTERLEAVINGS,
    )
    def mark_read_on_devices(
        self,
        user_conversation: tuple[str, str],
        read_seqs: list[int],
        interleaving: int,
    ) -> None:
        self.rnd.seed(interleaving)
        user, conversation = user_conversation
        self.dirty.add(conversation)

        async def devices() -> list[Any]:
            return list(
                await asyncio.gather(
                    *(self.sync.mark_read(user, conversation, s) for s in read_seqs),
                    return_exceptions=True,
                )
            )

        results = self.run(devices())

        try:
            summary: ConversationSummary | None = self.run(
                self.sync.summary(user, conversation)
            )
        except NotFound:
            summary = None
        for result in results:
            if isinstance(result, NotFound):
                assert summary is None
                continue
            assert not isinstance(result, BaseException), result
            assert result.read_seq >= self.read_floor.get(user_conversation, 0)
            assert result.unread >= 0
        if summary is not None:
            reachable = min(max(read_seqs), summary.last_seq)
            assert summary.read_seq >= reachable

    @rule(
        pick=PICKS,
        readers=st.lists(st.tuples(PICKS, st.integers(0, 6)), max_size=2),
        interleaving=INTERLEAVINGS,
    )
    def delete_while_reading(
        self, pick: int, readers: list[tuple[int, int]], interleaving: int
    ) -> None:
        if not self.known:
            return
        self.rnd.seed(interleaving)
        message = self.known[sorted(self.known)[pick % len(self.known)]]
        conversation = message.conversation_id
        members = MEMBERS[conversation]
        reads = [(members[i % len(members)], read_seq) for i, read_seq in readers]
        self.dirty.add(conversation)

        async def together() -> list[Any]:
            return list(
                await asyncio.gather(
                    self.pipelines[0].delete(message.sender_id, message.message_id),
                    *(self.sync.mark_read(u, conversation, t) for u, t in reads),
                    return_exceptions=True,
                )
            )

        deleted, *reads = self.run(together())

        assert isinstance(deleted, Message), deleted
        assert deleted.deleted
        assert deleted.body == ""
        assert all(not isinstance(r, BaseException) for r in reads), reads
        self.deleted.add(message.message_id)

    # ------------------------------------------------------------ invariants

    @invariant()
    def invariants_hold(self) -> None:
        for conversation in sorted(self.dirty):
            self.run(self._check_conversation(conversation))
        self.dirty.clear()

    async def _check_conversation(self, conversation: str) -> None:
        stores = self.stores
        last_seq = await stores.mailboxes.last_seq(conversation)
        known = {
            m.message_id: m
            for m in self.known.values()
            if m.conversation_id == conversation
        }
        known_seqs = [m.seq for m in known.values()]
        assert len(set(known_seqs)) == len(known_seqs), known_seqs
        owner_of_seq: dict[int, str] = {}
        for user in MEMBERS[conversation]:
            walk = await walk_sync(self.sync, user, conversation, limit=4)
            assert walk.holes == ()
            for message in walk.messages:
                assert message.conversation_id == conversation
                assert 0 < message.seq <= last_seq
                owner = owner_of_seq.setdefault(message.seq, message.message_id)
                assert owner == message.message_id, (message.seq, owner)
                if message.message_id in self.deleted:
                    assert (message.deleted, message.body) == (True, "")
            ids = [m.message_id for m in walk.messages]
            assert len(ids) == len(set(ids))
            for message_id, message in known.items():
                assert message_id in ids, (user, message, walk.seqs)
                assert walk.messages[ids.index(message_id)].seq == message.seq

            try:
                # What the user sees: an unknown unread count is recounted.
                summary = await self.sync.summary(user, conversation)
            except NotFound:
                assert not known, (user, conversation)
                continue
            floor = self.read_floor.get((user, conversation), 0)
            assert summary.read_seq >= floor, (summary, floor)
            self.read_floor[user, conversation] = summary.read_seq
            assert summary.last_seq >= max(known_seqs, default=0)
            unread = [
                m.seq
                for m in walk.messages
                if summary.read_seq < m.seq <= summary.last_seq
                and m.sender_id != user
                and not m.deleted
            ]
            assert summary.unread == len(unread), (summary, unread)


@pytest.mark.slow
def test_invariants_under_random_interleavings(
    backend: str, stores_factory: Callable[[], Awaitable[Stores]]
) -> None:
    # SQLite answers from a thread, so its runs keep the real clock and are
    # not exactly repeatable; the in-memory stores run deterministically.
    loop_factory = VirtualTimeLoop if backend == "memory" else asyncio.new_event_loop
    run_state_machine_as_test(
        lambda: MailboxMachine(stores_factory, loop_factory()),
        settings=settings(PROFILE, max_examples=EXAMPLES[backend]),
    )
