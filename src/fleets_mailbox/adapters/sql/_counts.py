"""The SQL notification and analytics stores."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from ...errors import StoreError
from ...model import Notification
from ._counters import NOTIFICATIONS, Counters
from ._dialect import Database, IntegrityViolation
from .schema import analytics_active, analytics_counted, analytics_counts, notifications

__all__ = ["SqlAnalyticsStore", "SqlNotificationStore"]


class SqlNotificationStore:
    """Keeps notifications in ``fleets_notifications``; payloads as JSON."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._db = Database(engine)
        self._writers = Counters(self._db, NOTIFICATIONS)

    async def add(
        self, user_id: str, kind: str, payload: Mapping[str, Any], created_at: int
    ) -> Notification:
        async with self._db.write() as conn:
            # Serialises the user's writers so that the user's ids commit in
            # increasing order: a client listing after the last id it saw
            # misses none.
            await conn.run_sync(self._writers.bump, [user_id])
            result = await conn.execute(
                notifications.insert().values(
                    user_id=user_id,
                    kind=kind,
                    payload=json.dumps(dict(payload)),
                    created_at=created_at,
                    is_read=False,
                )
            )
            (notification_id,) = result.inserted_primary_key or (None,)
        if notification_id is None:
            raise StoreError("the database gave no id to a new notification")
        return Notification(
            notification_id=int(notification_id),
            user_id=user_id,
            kind=kind,
            payload=dict(payload),
            created_at=created_at,
        )

    async def list(self, user_id: str, after_id: int, limit: int) -> list[Notification]:
        t = notifications
        async with self._db.read() as conn:
            result = await conn.execute(
                select(t)
                .where(t.c.user_id == user_id, t.c.notification_id > after_id)
                .order_by(t.c.notification_id)
                .limit(max(limit, 0))
            )
            return [
                Notification(
                    notification_id=row.notification_id,
                    user_id=row.user_id,
                    kind=row.kind,
                    payload=json.loads(row.payload),
                    created_at=row.created_at,
                    read=bool(row.is_read),
                )
                for row in result
            ]

    async def mark_read(self, user_id: str, notification_id: int) -> bool:
        t = notifications
        async with self._db.write() as conn:
            result = await conn.execute(
                update(t)
                .where(t.c.notification_id == notification_id, t.c.user_id == user_id)
                .values(is_read=True)
            )
        return result.rowcount > 0


class SqlAnalyticsStore:
    """Counts messages per day and kind, and active users per day."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._db = Database(engine)
        self._count = self._db.upsert(
            analytics_counts,
            ["day", "kind"],
            lambda new: [("count", analytics_counts.c.count + new.count)],
        )

    async def record_message(
        self, message_id: str, day: str, conversation_kind: str, sender_id: str
    ) -> bool:
        try:
            async with self._db.write() as conn:
                await conn.execute(
                    analytics_counted.insert().values(message_id=message_id, day=day)
                )
                await conn.execute(
                    self._count, [{"day": day, "kind": conversation_kind, "count": 1}]
                )
                await conn.execute(
                    self._db.insert_ignore(analytics_active),
                    [{"day": day, "user_id": sender_id}],
                )
        except IntegrityViolation:
            return False
        return True

    async def message_counts(self, day: str) -> dict[str, int]:
        t = analytics_counts
        async with self._db.read() as conn:
            result = await conn.execute(
                select(t.c.kind, t.c.count).where(t.c.day == day)
            )
            return {kind: int(count) for kind, count in result}

    async def active_users(self, day: str) -> int:
        t = analytics_active
        async with self._db.read() as conn:
            count = await conn.scalar(
                select(func.count()).select_from(t).where(t.c.day == day)
            )
        return int(count or 0)
