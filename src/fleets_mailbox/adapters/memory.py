"""In-memory adapters for every store protocol, the directory and presence.

They keep everything in dicts of one process and lose it at exit: for unit
tests, demos and as the reference behaviour that the conformance suites pin.
They pass the same suites as the persistent adapters. Each method runs
without awaiting in between, so every method is atomic under asyncio.
"""

from __future__ import annotations

import bisect
import itertools
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import attrs

from ..directory import members_of
from ..errors import (
    GroupExists,
    LeaseLost,
    StoreError,
    UnknownGroup,
    UnknownMessage,
)
from ..model import (
    ConversationSummary,
    Group,
    MailboxEntry,
    Message,
    MessageStatus,
    Notification,
    SendLease,
)
from ..protocols import UNREAD_UNKNOWN, Connection, SummaryUpdate

__all__ = [
    "MemoryAnalyticsStore",
    "MemoryConversationStore",
    "MemoryDirectory",
    "MemoryMailboxStore",
    "MemoryMessageStore",
    "MemoryNotificationStore",
    "MemoryPresence",
]


class MemoryMessageStore:
    """Keeps messages in a dict by id, with an index by idempotency key."""

    def __init__(self) -> None:
        self._messages: dict[str, Message] = {}
        self._by_client_id: dict[tuple[str, str], str] = {}
        self._recipients: dict[str, tuple[str, ...]] = {}

    async def insert_pending(
        self, message: Message, recipients: Collection[str]
    ) -> Message:
        key = (message.sender_id, message.client_msg_id)
        existing = self._by_client_id.get(key)
        if existing is not None:
            return self._messages[existing]
        if message.message_id in self._messages:
            raise StoreError(f"message id {message.message_id!r} is taken")
        self._messages[message.message_id] = message
        self._by_client_id[key] = message.message_id
        self._recipients[message.message_id] = tuple(sorted(set(recipients)))
        return message

    async def get(self, message_id: str) -> Message | None:
        return self._messages.get(message_id)

    async def get_many(self, message_ids: Collection[str]) -> dict[str, Message]:
        found = (self._messages.get(i) for i in message_ids)
        return {m.message_id: m for m in found if m is not None}

    async def get_by_client_id(
        self, sender_id: str, client_msg_id: str
    ) -> Message | None:
        message_id = self._by_client_id.get((sender_id, client_msg_id))
        return None if message_id is None else self._messages[message_id]

    async def pending_recipients(self, message_id: str) -> tuple[str, ...]:
        return self._recipients.get(message_id, ())

    async def assign_seq(self, message_id: str, seq: int) -> None:
        message = self._require(message_id)
        if message.seq == seq:
            return
        if message.seq != 0:
            raise StoreError(f"message {message_id!r} has seq {message.seq}, not {seq}")
        self._messages[message_id] = attrs.evolve(message, seq=seq)

    async def mark_committed(self, message_id: str) -> None:
        message = self._require(message_id)
        self._messages[message_id] = attrs.evolve(
            message, status=MessageStatus.COMMITTED
        )
        self._recipients.pop(message_id, None)

    async def list_pending(self, created_before: int, limit: int) -> list[Message]:
        pending = [
            m
            for m in self._messages.values()
            if m.status is MessageStatus.PENDING and m.created_at < created_before
        ]
        pending.sort(key=lambda m: (m.created_at, m.message_id))
        return pending[:limit]

    async def edit(self, message_id: str, body: str, edited_at: int) -> Message:
        message = attrs.evolve(
            self._require(message_id), body=body, edited_at=edited_at
        )
        self._messages[message_id] = message
        return message

    async def mark_deleted(self, message_id: str, deleted_at: int) -> Message:
        message = self._require(message_id)
        if not message.deleted:
            message = attrs.evolve(message, body="", deleted=True, edited_at=deleted_at)
            self._messages[message_id] = message
        return message

    def _require(self, message_id: str) -> Message:
        message = self._messages.get(message_id)
        if message is None:
            raise UnknownMessage(message_id)
        return message


@attrs.define
class _ConversationLog:
    last_seq: int = 0
    holder: str | None = None
    lease_until: int = 0
    pending_message_id: str | None = None
    pending_seq: int = 0
    holes: list[int] = attrs.Factory(list)


class MemoryMailboxStore:
    """Keeps mailbox entries in per-(user, conversation) sorted lists."""

    def __init__(self) -> None:
        self._logs: defaultdict[str, _ConversationLog] = defaultdict(_ConversationLog)
        self._seqs: defaultdict[tuple[str, str], list[int]] = defaultdict(list)
        self._entries: dict[tuple[str, str, int], MailboxEntry] = {}
        self._by_seq: defaultdict[tuple[str, int], set[str]] = defaultdict(set)

    async def acquire(
        self, conversation_id: str, holder: str, lease_ms: int, now: int
    ) -> SendLease | None:
        log = self._logs[conversation_id]
        if log.holder not in (None, holder) and log.lease_until > now:
            return None
        log.holder = holder
        log.lease_until = now + lease_ms
        return SendLease(
            conversation_id=conversation_id,
            holder=holder,
            last_seq=log.last_seq,
            pending_message_id=log.pending_message_id,
            pending_seq=log.pending_seq,
        )

    async def allocate_seq(
        self, conversation_id: str, holder: str, message_id: str
    ) -> int:
        log = self._logs[conversation_id]
        if log.holder != holder:
            raise LeaseLost(conversation_id)
        if log.pending_message_id == message_id:
            return log.pending_seq
        log.last_seq += 1
        log.pending_message_id = message_id
        log.pending_seq = log.last_seq
        return log.last_seq

    async def release(self, conversation_id: str, holder: str) -> None:
        log = self._logs[conversation_id]
        if log.holder == holder:
            log.holder = None
            log.lease_until = 0
            log.pending_message_id = None
            log.pending_seq = 0

    async def abandon(self, conversation_id: str, holder: str) -> None:
        log = self._logs[conversation_id]
        if log.holder == holder:
            log.holder = None
            log.lease_until = 0

    async def declare_hole(self, conversation_id: str, seq: int) -> None:
        log = self._logs[conversation_id]
        if seq not in log.holes:
            bisect.insort(log.holes, seq)

    async def last_seq(self, conversation_id: str) -> int:
        log = self._logs.get(conversation_id)
        return 0 if log is None else log.last_seq

    async def holes(self, conversation_id: str, after: int, upto: int) -> list[int]:
        log = self._logs.get(conversation_id)
        return [] if log is None else [s for s in log.holes if after < s <= upto]

    async def add_entries(self, entries: Sequence[MailboxEntry]) -> None:
        for entry in entries:
            key = (entry.user_id, entry.conversation_id, entry.seq)
            if key in self._entries:
                continue
            self._entries[key] = entry
            bisect.insort(self._seqs[entry.user_id, entry.conversation_id], entry.seq)
            self._by_seq[entry.conversation_id, entry.seq].add(entry.user_id)

    async def read(
        self, user_id: str, conversation_id: str, after_seq: int, limit: int
    ) -> list[MailboxEntry]:
        seqs = self._seqs.get((user_id, conversation_id), [])
        start = bisect.bisect_right(seqs, after_seq)
        return [
            self._entries[user_id, conversation_id, s]
            for s in seqs[start : start + limit]
        ]

    async def count_unread(
        self, user_id: str, conversation_id: str, after_seq: int, upto_seq: int
    ) -> int:
        seqs = self._seqs.get((user_id, conversation_id), [])
        start = bisect.bisect_right(seqs, after_seq)
        stop = bisect.bisect_right(seqs, upto_seq)
        entries = (self._entries[user_id, conversation_id, s] for s in seqs[start:stop])
        return sum(1 for e in entries if e.sender_id != user_id and not e.deleted)

    async def mark_deleted(self, conversation_id: str, seq: int) -> list[str]:
        holders = sorted(self._by_seq.get((conversation_id, seq), ()))
        for user_id in holders:
            key = (user_id, conversation_id, seq)
            self._entries[key] = attrs.evolve(self._entries[key], deleted=True)
        return holders


class MemoryConversationStore:
    """Keeps conversation summaries in a dict by (user, conversation)."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], ConversationSummary] = {}
        self._version = itertools.count(1)

    async def apply_message(
        self, update: SummaryUpdate, recipients: Collection[str]
    ) -> None:
        for user_id in sorted(set(recipients)):
            key = (user_id, update.conversation_id)
            row = self._rows.get(key)
            if row is not None and row.last_seq >= update.seq:
                continue
            read_seq = 0 if row is None else row.read_seq
            unread = 0 if row is None else row.unread
            if user_id == update.sender_id:
                read_seq, unread = max(read_seq, update.seq), 0
            elif update.seq > read_seq and unread != UNREAD_UNKNOWN:
                unread += 1
            self._rows[key] = ConversationSummary(
                user_id=user_id,
                conversation_id=update.conversation_id,
                last_seq=update.seq,
                last_message_id=update.message_id,
                last_sender_id=update.sender_id,
                last_preview=update.preview,
                last_at=update.created_at,
                read_seq=read_seq,
                unread=unread,
                version=next(self._version),
            )

    async def get(
        self, user_id: str, conversation_id: str
    ) -> ConversationSummary | None:
        return self._rows.get((user_id, conversation_id))

    async def list_changed(
        self, user_id: str, since_version: int, limit: int
    ) -> list[ConversationSummary]:
        rows = [
            r
            for (u, _), r in self._rows.items()
            if u == user_id and r.version > since_version
        ]
        rows.sort(key=lambda r: r.version)
        return rows[:limit]

    async def set_read(
        self,
        user_id: str,
        conversation_id: str,
        read_seq: int,
        unread: int,
        expect_version: int,
    ) -> ConversationSummary | None:
        row = self._rows.get((user_id, conversation_id))
        if row is None or row.version != expect_version:
            return None
        row = attrs.evolve(
            row,
            read_seq=max(row.read_seq, read_seq),
            unread=max(unread, 0),
            version=next(self._version),
        )
        self._rows[user_id, conversation_id] = row
        return row

    async def apply_delete(
        self, conversation_id: str, seq: int, user_ids: Collection[str]
    ) -> None:
        for user_id in sorted(set(user_ids)):
            row = self._rows.get((user_id, conversation_id))
            if row is None or row.read_seq >= seq:
                continue
            preview = row.last_preview if row.last_seq != seq else ""
            self._rows[user_id, conversation_id] = attrs.evolve(
                row,
                unread=UNREAD_UNKNOWN,
                last_preview=preview,
                version=next(self._version),
            )


class MemoryNotificationStore:
    """Keeps notifications in a list; ids count up from 1."""

    def __init__(self) -> None:
        self._rows: list[Notification] = []

    async def add(
        self, user_id: str, kind: str, payload: Mapping[str, Any], created_at: int
    ) -> Notification:
        notification = Notification(
            notification_id=len(self._rows) + 1,
            user_id=user_id,
            kind=kind,
            payload=dict(payload),
            created_at=created_at,
        )
        self._rows.append(notification)
        return notification

    async def list(self, user_id: str, after_id: int, limit: int) -> list[Notification]:
        rows = self._rows[max(after_id, 0) :]
        return [n for n in rows if n.user_id == user_id][:limit]

    async def mark_read(self, user_id: str, notification_id: int) -> bool:
        if not 1 <= notification_id <= len(self._rows):
            return False
        row = self._rows[notification_id - 1]
        if row.user_id != user_id:
            return False
        self._rows[notification_id - 1] = attrs.evolve(row, read=True)
        return True


class MemoryAnalyticsStore:
    """Counts messages and active users per day in dicts."""

    def __init__(self) -> None:
        self._counted: set[str] = set()
        self._counts: defaultdict[str, defaultdict[str, int]] = defaultdict(
            lambda: defaultdict(int)
        )
        self._active: defaultdict[str, set[str]] = defaultdict(set)

    async def record_message(
        self, message_id: str, day: str, conversation_kind: str, sender_id: str
    ) -> bool:
        if message_id in self._counted:
            return False
        self._counted.add(message_id)
        self._counts[day][conversation_kind] += 1
        self._active[day].add(sender_id)
        return True

    async def message_counts(self, day: str) -> dict[str, int]:
        return dict(self._counts.get(day, {}))

    async def active_users(self, day: str) -> int:
        return len(self._active.get(day, ()))


class MemoryDirectory:
    """Knows groups in a dict; direct conversations need no registration.

    ``system_members`` gives the members of system channels (by default
    none, so sending to one raises `UnknownConversation`).
    """

    def __init__(
        self, system_members: Mapping[str, Collection[str]] | None = None
    ) -> None:
        self._groups: dict[str, Group] = {}
        self._system = {k: frozenset(v) for k, v in (system_members or {}).items()}

    async def members(self, conversation_id: str) -> frozenset[str]:
        return await members_of(conversation_id, self._group_members, self._system)

    async def _group_members(self, group_id: str) -> frozenset[str] | None:
        group = self._groups.get(group_id)
        return None if group is None else group.members

    async def create_group(
        self, group_id: str, owner_id: str, name: str, members: Collection[str]
    ) -> Group:
        if group_id in self._groups:
            raise GroupExists(group_id)
        group = Group(group_id, owner_id, name, {owner_id, *members})
        self._groups[group_id] = group
        return group

    async def get_group(self, group_id: str) -> Group:
        group = self._groups.get(group_id)
        if group is None:
            raise UnknownGroup(group_id)
        return group

    async def add_members(self, group_id: str, user_ids: Collection[str]) -> Group:
        group = await self.get_group(group_id)
        group = attrs.evolve(group, members=group.members | set(user_ids))
        self._groups[group_id] = group
        return group

    async def remove_members(self, group_id: str, user_ids: Collection[str]) -> Group:
        group = await self.get_group(group_id)
        group = attrs.evolve(group, members=group.members - set(user_ids))
        self._groups[group_id] = group
        return group

    async def groups_of(self, user_id: str) -> list[Group]:
        groups = [g for g in self._groups.values() if user_id in g.members]
        return sorted(groups, key=lambda g: g.group_id)


class MemoryPresence:
    """Keeps this node's live connections per user."""

    def __init__(self) -> None:
        self._connections: defaultdict[str, dict[str, Connection]] = defaultdict(dict)

    async def connect(self, user_id: str, connection: Connection) -> None:
        self._connections[user_id][connection.connection_id] = connection

    async def disconnect(self, user_id: str, connection: Connection) -> None:
        conns = self._connections.get(user_id)
        if conns is not None:
            conns.pop(connection.connection_id, None)
            if not conns:
                del self._connections[user_id]

    async def connections(self, user_id: str) -> list[Connection]:
        return list(self._connections.get(user_id, {}).values())
