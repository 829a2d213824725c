"""SQL adapters for every store protocol and the group directory.

One SQLAlchemy 2 (asyncio) code path serves SQLite through aiosqlite, and
MySQL/MariaDB (asyncmy) and PostgreSQL (asyncpg) with the same statements;
what differs between them lives in ``_dialect.py``. Tables are prefixed
``fleets_`` (see `schema`):

=============================  ==================================================
store                          tables
=============================  ==================================================
`SqlMessageStore`              messages (pending recipients: a JSON column)
`SqlMailboxStore`              mailbox entries, conversation logs, holes
`SqlConversationStore`         summaries, per-user version counters
`SqlNotificationStore`         notifications
`SqlAnalyticsStore`            counted messages, counts and active users per day
`SqlDirectory`                 groups, group members
=============================  ==================================================

`open_sql_stores` opens them all over one engine and, unless told not to,
brings the schema to the newest revision with the Alembic migrations shipped
in ``fleets_mailbox/migrations``. To share an engine of one's own, make it
with `create_sql_engine`, run `upgrade_schema` and pass it to each store.

Every method is one statement or one transaction, safe when many tasks and
several processes call it at once. SQLite runs in WAL mode (readers never
wait) with a busy timeout of `BUSY_TIMEOUT_MS` and ``synchronous=NORMAL``
(a committed send survives the process dying; a power cut can lose the last
transactions, never corrupt the file); its write transactions take the
write lock up front (``BEGIN IMMEDIATE``). MySQL runs in READ COMMITTED.
Driver errors become `StoreError` at one place
(``_dialect.translate_errors``): a lock held past the timeout, a deadlock or
a lost connection is a `TransientStoreError`.

Options: the URL picks the database (``sqlite+aiosqlite:///path``,
``mysql+asyncmy://…``, ``postgresql+asyncpg://…``); ``echo`` logs SQL;
``system_members`` configures system channels as in `MemoryDirectory`.

Not supported, or different: SQLite ``:memory:`` databases live in one
connection, so their transactions run one at a time (fine for tests, not
for load). Summary versions increase per user, one counter row each (see
`SqlConversationStore`). Notification payloads must be JSON-ready.
Migrations on MySQL are not transactional (its DDL commits at once). SQLite
and MySQL/MariaDB are proven by this package's tests (docs/mysql.md);
PostgreSQL is not yet.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from ...service import Stores
from . import schema
from ._conversations import SqlConversationStore
from ._counts import SqlAnalyticsStore, SqlNotificationStore
from ._dialect import BUSY_TIMEOUT_MS, Database, create_sql_engine
from ._directory import SqlDirectory
from ._mailboxes import SqlMailboxStore
from ._messages import SqlMessageStore

__all__ = [
    "BUSY_TIMEOUT_MS",
    "SqlAnalyticsStore",
    "SqlConversationStore",
    "SqlDirectory",
    "SqlMailboxStore",
    "SqlMessageStore",
    "SqlNotificationStore",
    "alembic_config",
    "create_sql_engine",
    "open_sql_stores",
    "schema",
    "upgrade_schema",
]

#: Where the migrations live, as an Alembic package resource.
_MIGRATIONS = "fleets_mailbox:migrations"


async def open_sql_stores(
    url: str,
    *,
    create_schema: bool = True,
    echo: bool = False,
    system_members: Mapping[str, Collection[str]] | None = None,
) -> Stores:
    """Opens every SQL store over one engine; `Stores.close` disposes of it.

    With ``create_schema`` the database is first migrated to the newest
    revision (creating the tables in an empty one).
    """
    engine = create_sql_engine(url, echo=echo)
    try:
        if create_schema:
            await upgrade_schema(engine)
    except BaseException:
        await engine.dispose()
        raise
    return Stores(
        messages=SqlMessageStore(engine),
        mailboxes=SqlMailboxStore(engine),
        conversations=SqlConversationStore(engine),
        notifications=SqlNotificationStore(engine),
        analytics=SqlAnalyticsStore(engine),
        directory=SqlDirectory(engine, system_members),
        on_close=engine.dispose,
    )


async def upgrade_schema(engine: AsyncEngine, revision: str = "head") -> None:
    """Migrates the database to ``revision`` with the shipped Alembic scripts.

    Runs in one write transaction; processes that start together migrate one
    after the other, and the later ones find nothing to do.
    """
    db = Database(engine)
    async with db.migrating() as conn:
        await conn.run_sync(_upgrade, revision)


def _upgrade(connection: Connection, revision: str) -> None:
    command.upgrade(alembic_config(connection), revision)


def alembic_config(connection: Connection | None = None) -> Config:
    """Returns an Alembic configuration of the shipped migrations.

    With ``connection``, the migrations run on it (in its transaction);
    without, set ``sqlalchemy.url`` on the result.
    """
    config = Config()
    config.set_main_option("script_location", _MIGRATIONS)
    config.attributes["connection"] = connection
    return config
