"""`open_demo_service`: the service the demo server runs on.

SQLite in one file (or memory), the in-process `LocalBus` and presence: one
process, no other servers. With a SQL URL (MySQL/MariaDB, say), every store
lives in that database instead of the file. With a MongoDB URI, message
content and mailboxes live in MongoDB and the rest stays in SQL. With
RocketMQ endpoints, events travel over RocketMQ instead of the in-process
bus, so several server processes on the same stores push to each other's
users.
"""

from __future__ import annotations

from typing import Any

from ..adapters.local_bus import LocalBus
from ..adapters.memory import MemoryPresence
from ..protocols import MessageBus
from ..service import MailboxService, Stores

__all__ = ["open_demo_service"]


async def open_demo_service(
    db_path: str | None,
    *,
    sql_url: str | None = None,
    mongo_uri: str | None = None,
    mongo_database: str = "fleets",
    rocketmq_endpoints: str | None = None,
    rocketmq_name_server: str | None = None,
    node_id: str | None = None,
    **options: Any,
) -> MailboxService:
    """Returns a service on SQLite at ``db_path``, or in memory if it is None.

    With ``sql_url`` (a SQLAlchemy URL such as
    ``mysql+asyncmy://user:password@host/db?charset=utf8mb4``), the stores
    live in that database and ``db_path`` is not used; its schema is
    migrated to the newest revision first. With ``mongo_uri``, content and
    mailboxes go to that MongoDB database. With ``rocketmq_endpoints``
    (``host:port`` of RocketMQ's gRPC proxy), the bus is a `RocketMQBus`
    whose push group is this node's own (``node_id``; by default the host
    name and a random part), deleted when the service closes if
    ``rocketmq_name_server`` names RocketMQ's name server. ``options`` go
    to `MailboxService` (``max_body_bytes``, ...).
    """
    if sql_url is None and db_path is None:
        stores = Stores.memory()
    else:
        # Imported here: the SQL adapter needs SQLAlchemy, memory needs nothing.
        from ..adapters.sql import open_sql_stores

        stores = await open_sql_stores(sql_url or f"sqlite+aiosqlite:///{db_path}")
    if mongo_uri is not None:
        from ..adapters.mongo import with_mongo

        try:
            stores = await with_mongo(stores, mongo_uri, mongo_database)
        except BaseException:
            await stores.close()
            raise
    bus: MessageBus
    if rocketmq_endpoints is None:
        bus = LocalBus()
    else:
        try:
            from ..adapters.rocketmq import open_rocketmq_bus

            bus = await open_rocketmq_bus(
                rocketmq_endpoints,
                node_id=node_id,
                name_server=rocketmq_name_server or "",
            )
        except BaseException:
            await stores.close()
            raise
    return MailboxService(stores, bus, MemoryPresence(), **options)
