"""The SQL mailbox store: mailbox entries, seq counters and send leases."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import false, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from ...errors import LeaseLost
from ...model import MailboxEntry, SendLease
from ._dialect import Database
from .schema import holes, logs, mailbox_entries

__all__ = ["SqlMailboxStore"]


class SqlMailboxStore:
    """Keeps mailbox entries, and each conversation's seq counter and lease.

    The lease is a conditional UPDATE of the conversation's log row: only
    one holder at a time can allocate seqs, from any number of processes.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._db = Database(engine)

    async def acquire(
        self, conversation_id: str, holder: str, lease_ms: int, now: int
    ) -> SendLease | None:
        key = logs.c.conversation_id == conversation_id
        async with self._db.write() as conn:
            await conn.execute(
                self._db.insert_ignore(logs),
                [
                    {
                        "conversation_id": conversation_id,
                        "last_seq": 0,
                        "holder": None,
                        "lease_until": 0,
                        "pending_message_id": None,
                        "pending_seq": 0,
                    }
                ],
            )
            free = (
                logs.c.holder.is_(None)
                | (logs.c.lease_until <= now)
                | (logs.c.holder == holder)
            )
            taken = await conn.execute(
                update(logs)
                .where(key, free)
                .values(holder=holder, lease_until=now + lease_ms)
            )
            # Matched rows, also on MySQL (SQLAlchemy sets CLIENT_FOUND_ROWS).
            if taken.rowcount == 0:
                return None
            row = (
                await conn.execute(
                    select(
                        logs.c.last_seq,
                        logs.c.pending_message_id,
                        logs.c.pending_seq,
                    ).where(key)
                )
            ).one()
        return SendLease(
            conversation_id=conversation_id,
            holder=holder,
            last_seq=row.last_seq,
            pending_message_id=row.pending_message_id,
            pending_seq=row.pending_seq,
        )

    async def allocate_seq(
        self, conversation_id: str, holder: str, message_id: str
    ) -> int:
        key = logs.c.conversation_id == conversation_id
        async with self._db.write() as conn:
            # pending_seq first: MySQL applies SET clauses in order, reading
            # the values the earlier ones wrote.
            # Not again for the pending message: a retry after a lost answer
            # gets its seq back below instead of burning another.
            not_pending = logs.c.pending_message_id.is_(None) | (
                logs.c.pending_message_id != message_id
            )
            allocated = await conn.execute(
                update(logs)
                .where(key, logs.c.holder == holder, not_pending)
                .ordered_values(
                    (logs.c.pending_seq, logs.c.last_seq + 1),
                    (logs.c.pending_message_id, message_id),
                    (logs.c.last_seq, logs.c.last_seq + 1),
                )
            )
            row = (
                await conn.execute(
                    select(
                        logs.c.holder, logs.c.pending_message_id, logs.c.pending_seq
                    ).where(key)
                )
            ).first()
            if row is None or row.holder != holder:
                raise LeaseLost(conversation_id)
            if allocated.rowcount == 0 and row.pending_message_id != message_id:
                raise LeaseLost(conversation_id)
            return int(row.pending_seq)

    async def release(self, conversation_id: str, holder: str) -> None:
        await self._free(
            conversation_id, holder, pending_message_id=None, pending_seq=0
        )

    async def abandon(self, conversation_id: str, holder: str) -> None:
        await self._free(conversation_id, holder)

    async def _free(self, conversation_id: str, holder: str, **pending: Any) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                update(logs)
                .where(logs.c.conversation_id == conversation_id)
                .where(logs.c.holder == holder)
                .values(holder=None, lease_until=0, **pending)
            )

    async def declare_hole(self, conversation_id: str, seq: int) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                self._db.insert_ignore(holes),
                [{"conversation_id": conversation_id, "seq": seq}],
            )

    async def last_seq(self, conversation_id: str) -> int:
        async with self._db.read() as conn:
            value = await conn.scalar(
                select(logs.c.last_seq).where(logs.c.conversation_id == conversation_id)
            )
        return 0 if value is None else int(value)

    async def holes(self, conversation_id: str, after: int, upto: int) -> list[int]:
        async with self._db.read() as conn:
            result = await conn.scalars(
                select(holes.c.seq)
                .where(
                    holes.c.conversation_id == conversation_id,
                    holes.c.seq > after,
                    holes.c.seq <= upto,
                )
                .order_by(holes.c.seq)
            )
            return [int(seq) for seq in result]

    async def add_entries(self, entries: Sequence[MailboxEntry]) -> None:
        if not entries:
            return
        rows = [
            {
                "user_id": e.user_id,
                "conversation_id": e.conversation_id,
                "seq": e.seq,
                "message_id": e.message_id,
                "sender_id": e.sender_id,
                "created_at": e.created_at,
                "deleted": e.deleted,
            }
            for e in entries
        ]
        async with self._db.write() as conn:
            await conn.execute(self._db.insert_ignore(mailbox_entries), rows)

    async def read(
        self, user_id: str, conversation_id: str, after_seq: int, limit: int
    ) -> list[MailboxEntry]:
        t = mailbox_entries
        async with self._db.read() as conn:
            result = await conn.execute(
                select(t)
                .where(
                    t.c.user_id == user_id,
                    t.c.conversation_id == conversation_id,
                    t.c.seq > after_seq,
                )
                .order_by(t.c.seq)
                .limit(max(limit, 0))
            )
            return [
                MailboxEntry(
                    user_id=row.user_id,
                    conversation_id=row.conversation_id,
                    seq=row.seq,
                    message_id=row.message_id,
                    sender_id=row.sender_id,
                    created_at=row.created_at,
                    deleted=bool(row.deleted),
                )
                for row in result
            ]

    async def count_unread(
        self, user_id: str, conversation_id: str, after_seq: int, upto_seq: int
    ) -> int:
        t = mailbox_entries
        async with self._db.read() as conn:
            count = await conn.scalar(
                select(func.count())
                .select_from(t)
                .where(
                    t.c.user_id == user_id,
                    t.c.conversation_id == conversation_id,
                    t.c.seq > after_seq,
                    t.c.seq <= upto_seq,
                    t.c.sender_id != user_id,
                    t.c.deleted == false(),
                )
            )
        return int(count or 0)

    async def mark_deleted(self, conversation_id: str, seq: int) -> list[str]:
        t = mailbox_entries
        live = (
            (t.c.conversation_id == conversation_id)
            & (t.c.seq == seq)
            & (t.c.deleted == false())
        )
        async with self._db.write() as conn:
            await conn.execute(update(t).where(live).values(deleted=True))
            result = await conn.scalars(
                select(t.c.user_id).where(
                    t.c.conversation_id == conversation_id, t.c.seq == seq
                )
            )
            return sorted(result)
