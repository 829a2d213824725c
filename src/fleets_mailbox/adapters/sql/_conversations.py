"""The SQL conversation store: each user's conversation list."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    bindparam,
    case,
    literal_column,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ...model import ConversationSummary
from ...protocols import UNREAD_UNKNOWN, SummaryUpdate
from ._counters import SUMMARY_VERSION, Counters
from ._dialect import Columns, Database, DriverStatement
from .schema import summaries

__all__ = ["SqlConversationStore"]


class SqlConversationStore:
    """Keeps conversation summaries in ``fleets_summaries``.

    Every change takes a new ``version`` from the user's counter row, bumped
    in the same transaction. The counter's row lock orders the writers of
    one user, so that user's versions become visible in increasing order
    and a reader paging with ``since_version`` never skips a row; writers
    of different users do not wait for each other.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._db = Database(engine)
        self._versions = Counters(self._db, SUMMARY_VERSION)
        self._apply = DriverStatement(
            self._db.upsert(
                summaries, ["user_id", "conversation_id"], _apply_assignments, _is_newer
            ),
            [
                "user_id",
                "conversation_id",
                "last_seq",
                "last_message_id",
                "last_sender_id",
                "last_preview",
                "last_at",
                "read_seq",
                "unread",
                "version",
            ],
        )

    async def apply_message(
        self, update: SummaryUpdate, recipients: Collection[str]
    ) -> None:
        users = sorted(set(recipients))
        if not users:
            return
        await self._db.run_write(self._apply_message, update, users)

    def _apply_message(
        self, conn: Connection, update: SummaryUpdate, users: list[str]
    ) -> None:
        # What MySQL (InnoDB) needs, and gets here: a user's counter row
        # locked before the user's summary rows, by every writer; rows of
        # many users in sorted user order (the driver turns an executemany
        # into one multi-row INSERT and InnoDB locks rows in VALUES order);
        # and READ COMMITTED (create_sql_engine), so that inserting new rows
        # takes no gap locks. A deadlock left over is error 1213, a
        # TransientStoreError that the pipeline retries.
        versions = self._versions.bump(conn, users)
        sender = update.sender_id
        message = (
            update.conversation_id,
            update.seq,
            update.message_id,
            sender,
            update.preview,
            update.created_at,
        )
        # read_seq and unread: the sender has read its own message.
        own, other = (update.seq, 0), (0, 1)
        rows = [
            (
                user_id,
                *message,
                *(own if user_id == sender else other),
                versions[user_id],
            )
            for user_id in users
        ]
        self._apply.execute(conn, rows)

    async def get(
        self, user_id: str, conversation_id: str
    ) -> ConversationSummary | None:
        async with self._db.read() as conn:
            return await _summary(conn, user_id, conversation_id)

    async def list_changed(
        self, user_id: str, since_version: int, limit: int
    ) -> list[ConversationSummary]:
        t = summaries
        async with self._db.read() as conn:
            result = await conn.execute(
                select(t)
                .where(t.c.user_id == user_id, t.c.version > since_version)
                .order_by(t.c.version)
                .limit(max(limit, 0))
            )
            return [_summary_of(row) for row in result]

    async def set_read(
        self,
        user_id: str,
        conversation_id: str,
        read_seq: int,
        unread: int,
        expect_version: int,
    ) -> ConversationSummary | None:
        t = summaries
        async with self._db.write() as conn:
            versions = await conn.run_sync(self._versions.bump, [user_id])
            version = versions[user_id]
            moved = await conn.execute(
                update(t)
                .where(
                    t.c.user_id == user_id,
                    t.c.conversation_id == conversation_id,
                    t.c.version == expect_version,
                )
                .values(
                    read_seq=case(
                        (t.c.read_seq > read_seq, t.c.read_seq), else_=read_seq
                    ),
                    unread=max(unread, 0),
                    version=version,
                )
            )
            if moved.rowcount == 0:
                return None
            return await _summary(conn, user_id, conversation_id)

    async def apply_delete(
        self, conversation_id: str, seq: int, user_ids: Collection[str]
    ) -> None:
        users = sorted(set(user_ids))
        if not users:
            return
        t = summaries
        async with self._db.write() as conn:
            versions = await conn.run_sync(self._versions.bump, users)
            await conn.execute(
                update(t)
                .where(
                    t.c.user_id == bindparam("b_user_id"),
                    t.c.conversation_id == conversation_id,
                    t.c.read_seq < seq,
                )
                .values(
                    unread=UNREAD_UNKNOWN,
                    last_preview=case(
                        (t.c.last_seq == seq, ""), else_=t.c.last_preview
                    ),
                    version=bindparam("b_version"),
                ),
                [{"b_user_id": u, "b_version": versions[u]} for u in users],
            )


# Constants of the upsert's UPDATE part, written into the SQL: the MySQL
# drivers turn an executemany into one multi-row INSERT by repeating its
# VALUES clause, and fail on parameters that come after it.
_ZERO: ColumnElement[Any] = literal_column("0")
_ONE: ColumnElement[Any] = literal_column("1")
_UNKNOWN: ColumnElement[Any] = literal_column(str(UNREAD_UNKNOWN))


def _apply_assignments(new: Columns) -> list[tuple[str, ColumnElement[Any]]]:
    t = summaries
    own = new.last_sender_id == t.c.user_id
    # last_seq last: the other assignments and the guard read its old value.
    return [
        (
            "unread",
            case(
                (own, _ZERO),
                (t.c.unread == _UNKNOWN, _UNKNOWN),
                (new.last_seq > t.c.read_seq, t.c.unread + _ONE),
                else_=t.c.unread,
            ),
        ),
        (
            "read_seq",
            case(
                (own & (new.last_seq > t.c.read_seq), new.last_seq), else_=t.c.read_seq
            ),
        ),
        ("last_message_id", new.last_message_id),
        ("last_sender_id", new.last_sender_id),
        ("last_preview", new.last_preview),
        ("last_at", new.last_at),
        ("version", new.version),
        ("last_seq", new.last_seq),
    ]


def _is_newer(new: Columns) -> ColumnElement[bool]:
    return summaries.c.last_seq < new.last_seq


async def _summary(
    conn: AsyncConnection, user_id: str, conversation_id: str
) -> ConversationSummary | None:
    result = await conn.execute(
        select(summaries).where(
            summaries.c.user_id == user_id,
            summaries.c.conversation_id == conversation_id,
        )
    )
    row = result.first()
    return None if row is None else _summary_of(row)


def _summary_of(row: Row[Any]) -> ConversationSummary:
    return ConversationSummary(
        user_id=row.user_id,
        conversation_id=row.conversation_id,
        last_seq=row.last_seq,
        last_message_id=row.last_message_id,
        last_sender_id=row.last_sender_id,
        last_preview=row.last_preview,
        last_at=row.last_at,
        read_seq=row.read_seq,
        unread=row.unread,
        version=row.version,
    )
