"""Named counters in ``fleets_counters``, bumped inside a write transaction."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ._dialect import Database
from .schema import counters

__all__ = ["NOTIFICATIONS", "SUMMARY_VERSION", "bump"]

#: The version of conversation summaries.
SUMMARY_VERSION = "summary_version"
#: Bumped by every notification writer, to order them.
NOTIFICATIONS = "notifications"


async def bump(db: Database, conn: AsyncConnection, name: str, n: int) -> int:
    """Adds ``n`` to a counter and returns its new value.

    The counter's row stays locked until the transaction ends, so whoever
    bumps it next sees this transaction committed first.
    """
    stmt = (
        update(counters)
        .where(counters.c.name == name)
        .values(value=counters.c.value + n)
    )
    if (await conn.execute(stmt)).rowcount == 0:
        await conn.execute(db.insert_ignore(counters), [{"name": name, "value": 0}])
        await conn.execute(stmt)
    result = await conn.execute(select(counters.c.value).where(counters.c.name == name))
    return int(result.scalar_one())
