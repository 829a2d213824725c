"""Counters per user in ``fleets_user_counters``, bumped in a write transaction.

Bumping locks the users' rows until the transaction ends, so whoever bumps
one of them next sees this transaction committed first. Many users' rows
are bumped in sorted user order by one statement: two transactions that
share users wait for each other instead of deadlocking.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import literal_column, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Insert

from ._dialect import Database
from .schema import user_counters

__all__ = ["NOTIFICATIONS", "SUMMARY_VERSION", "Counters"]

#: The version of a user's conversation summaries.
SUMMARY_VERSION = "summary_version"
#: Bumped by every writer of a user's notifications, to order them.
NOTIFICATIONS = "notifications"


class Counters:
    """Bumps one named counter of many users at once."""

    def __init__(self, db: Database, name: str) -> None:
        self._name = name
        t = user_counters
        # A constant, not a parameter: see `Database.upsert`.
        self._bump: Insert = db.upsert(
            t,
            ["user_id", "name"],
            lambda new: [("value", t.c.value + literal_column("1"))],
        )

    async def bump(self, conn: AsyncConnection, users: Sequence[str]) -> dict[str, int]:
        """Adds one to the counter of each of ``users``; returns the new values.

        ``users`` must be sorted and distinct.
        """
        if not users:
            return {}
        name = self._name
        await conn.execute(
            self._bump, [{"user_id": u, "name": name, "value": 1} for u in users]
        )
        t = user_counters
        rows: Any = await conn.execute(
            select(t.c.user_id, t.c.value).where(
                t.c.name == name, t.c.user_id.in_(users)
            )
        )
        return {row.user_id: int(row.value) for row in rows}
