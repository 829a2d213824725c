"""Counters per user in ``fleets_user_counters``, bumped in a write transaction.

Bumping locks the users' rows until the transaction ends, so whoever bumps
one of them next sees this transaction committed first. Many users' rows
are bumped in sorted user order by one statement: two transactions that
share users wait for each other instead of deadlocking.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import bindparam, literal_column, select
from sqlalchemy.engine import Connection

from ._dialect import Database, DriverStatement
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
        upsert = db.upsert(
            t,
            ["user_id", "name"],
            lambda new: [("value", t.c.value + literal_column("1"))],
        )
        self._bump = DriverStatement(upsert, ["user_id", "name", "value"])
        self._read = DriverStatement(
            select(t.c.user_id, t.c.value).where(
                t.c.name == bindparam("name"),
                t.c.user_id.in_(bindparam("users", expanding=True)),
            ),
            ["name", "users"],
            expanding=True,
        )

    def bump(self, conn: Connection, users: Sequence[str]) -> dict[str, int]:
        """Adds one to the counter of each of ``users``; returns the new values.

        ``users`` must be sorted and distinct. It runs on a synchronous
        connection: ``await conn.run_sync(counters.bump, users)``.
        """
        if not users:
            return {}
        name = self._name
        self._bump.execute(conn, [(user_id, name, 1) for user_id in users])
        rows = self._read.execute(conn, (name, users)).all()
        return {user_id: int(value) for user_id, value in rows}
