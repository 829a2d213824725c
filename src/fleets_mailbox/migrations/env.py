"""The Alembic environment of the SQL stores' schema.

`fleets_mailbox.adapters.sql.upgrade_schema` runs it on a connection given
in ``config.attributes["connection"]``, inside that connection's
transaction. Run by the ``alembic`` command instead, it connects to the
``sqlalchemy.url`` option (asyncio driver URLs such as
``sqlite+aiosqlite:///path`` are fine), or writes SQL with ``--sql``.
Only tables named ``fleets_*`` are this library's; autogenerate leaves the
others alone.
"""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from fleets_mailbox.adapters.sql import create_sql_engine, schema

config = context.config


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Says whether autogenerate compares a table: only ``fleets_*`` ones."""
    if type_ != "table":
        return True
    return (
        name is not None and name.startswith("fleets_") and name != schema.VERSION_TABLE
    )


def _options() -> dict[str, Any]:
    return {
        "target_metadata": schema.metadata,
        "version_table": schema.VERSION_TABLE,
        "include_name": include_name,
        "compare_type": True,
    }


def run_on(connection: Connection) -> None:
    """Runs the migrations on ``connection``."""
    context.configure(
        connection=connection,
        render_as_batch=connection.dialect.name == "sqlite",
        **_options(),
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_on_url(url: str) -> None:
    engine = create_sql_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(run_on)
    finally:
        await engine.dispose()


def _main() -> None:
    if context.is_offline_mode():
        context.configure(
            url=config.get_main_option("sqlalchemy.url"),
            literal_binds=True,
            **_options(),
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        run_on(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url or pass a connection to migrate")
    asyncio.run(_run_on_url(url))


_main()
