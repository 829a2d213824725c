"""The SQL message store: each message once, with its pending recipients."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from sqlalchemy import ColumnElement, Row, false, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from ...errors import StoreError, UnknownMessage
from ...model import Message, MessageStatus
from ._dialect import Database, IntegrityViolation
from .schema import messages

__all__ = ["SqlMessageStore"]

# Rows per IN (...) list, well below SQLite's bound-parameter limit.
_IN_CHUNK = 500


class SqlMessageStore:
    """Keeps messages in ``fleets_messages``, each once.

    A pending message keeps its recipients in a JSON array column, one row
    whatever the size of the group; committing clears it.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._db = Database(engine)

    async def insert_pending(
        self, message: Message, recipients: Collection[str]
    ) -> Message:
        row = _message_row(message)
        row["recipients"] = json.dumps(sorted(set(recipients)))
        try:
            async with self._db.write() as conn:
                await conn.execute(messages.insert().values(row))
        except IntegrityViolation:
            # A concurrent or earlier send under the same key won.
            existing = await self.get_by_client_id(
                message.sender_id, message.client_msg_id
            )
            if existing is None:
                raise StoreError(
                    f"message id {message.message_id!r} is taken"
                ) from None
            return existing
        return message

    async def get(self, message_id: str) -> Message | None:
        async with self._db.read() as conn:
            result = await conn.execute(
                select(messages).where(messages.c.message_id == message_id)
            )
            row = result.first()
        return None if row is None else _message(row)

    async def get_many(self, message_ids: Collection[str]) -> dict[str, Message]:
        ids = list(dict.fromkeys(message_ids))
        found: dict[str, Message] = {}
        if not ids:
            return found
        async with self._db.read() as conn:
            for start in range(0, len(ids), _IN_CHUNK):
                chunk = ids[start : start + _IN_CHUNK]
                result = await conn.execute(
                    select(messages).where(messages.c.message_id.in_(chunk))
                )
                for row in result:
                    found[row.message_id] = _message(row)
        return found

    async def get_by_client_id(
        self, sender_id: str, client_msg_id: str
    ) -> Message | None:
        async with self._db.read() as conn:
            result = await conn.execute(
                select(messages).where(
                    messages.c.sender_id == sender_id,
                    messages.c.client_msg_id == client_msg_id,
                )
            )
            row = result.first()
        return None if row is None else _message(row)

    async def pending_recipients(self, message_id: str) -> tuple[str, ...]:
        async with self._db.read() as conn:
            text = await conn.scalar(
                select(messages.c.recipients).where(messages.c.message_id == message_id)
            )
        return () if text is None else tuple(json.loads(text))

    async def assign_seq(self, message_id: str, seq: int) -> None:
        async with self._db.write() as conn:
            result = await conn.execute(
                update(messages)
                .where(messages.c.message_id == message_id, messages.c.seq == 0)
                .values(seq=seq)
            )
            if result.rowcount == 1:
                return
            stored = await conn.scalar(
                select(messages.c.seq).where(messages.c.message_id == message_id)
            )
        if stored is None:
            raise UnknownMessage(message_id)
        if stored != seq:
            raise StoreError(f"message {message_id!r} has seq {stored}, not {seq}")

    async def mark_committed(self, message_id: str) -> None:
        async with self._db.write() as conn:
            result = await conn.execute(
                update(messages)
                .where(messages.c.message_id == message_id)
                .values(status=MessageStatus.COMMITTED.value, recipients=None)
            )
            if result.rowcount == 0:
                raise UnknownMessage(message_id)

    async def list_pending(self, created_before: int, limit: int) -> list[Message]:
        async with self._db.read() as conn:
            result = await conn.execute(
                select(messages)
                .where(
                    messages.c.status == MessageStatus.PENDING.value,
                    messages.c.created_at < created_before,
                )
                .order_by(messages.c.created_at, messages.c.message_id)
                .limit(max(limit, 0))
            )
            return [_message(row) for row in result]

    async def edit(self, message_id: str, body: str, edited_at: int) -> Message:
        return await self._change(message_id, body=body, edited_at=edited_at)

    async def mark_deleted(self, message_id: str, deleted_at: int) -> Message:
        return await self._change(
            message_id,
            only_if=messages.c.deleted == false(),
            body="",
            deleted=True,
            edited_at=deleted_at,
        )

    async def _change(
        self,
        message_id: str,
        only_if: ColumnElement[bool] | None = None,
        **values: Any,
    ) -> Message:
        """Updates a message (where ``only_if`` holds) and returns it."""
        key = messages.c.message_id == message_id
        async with self._db.write() as conn:
            condition = key if only_if is None else key & only_if
            await conn.execute(update(messages).where(condition).values(**values))
            row = (await conn.execute(select(messages).where(key))).first()
        if row is None:
            raise UnknownMessage(message_id)
        return _message(row)


def _message_row(message: Message) -> dict[str, Any]:
    return {
        "message_id": message.message_id,
        "conversation_id": message.conversation_id,
        "sender_id": message.sender_id,
        "client_msg_id": message.client_msg_id,
        "body": message.body,
        "created_at": message.created_at,
        "seq": message.seq,
        "status": message.status.value,
        "kind": message.kind,
        "edited_at": message.edited_at,
        "deleted": message.deleted,
    }


def _message(row: Row[Any]) -> Message:
    return Message(
        message_id=row.message_id,
        conversation_id=row.conversation_id,
        sender_id=row.sender_id,
        client_msg_id=row.client_msg_id,
        body=row.body,
        created_at=row.created_at,
        seq=row.seq,
        status=MessageStatus(row.status),
        kind=row.kind,
        edited_at=row.edited_at,
        deleted=bool(row.deleted),
    )
