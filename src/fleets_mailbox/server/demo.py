"""`open_demo_service`: the service the demo server runs on.

SQLite in one file (or memory), the in-process `LocalBus` and presence: one
process, no other servers.
"""

from __future__ import annotations

from typing import Any

from ..adapters.local_bus import LocalBus
from ..adapters.memory import MemoryPresence
from ..service import MailboxService, Stores

__all__ = ["open_demo_service"]


async def open_demo_service(db_path: str | None, **options: Any) -> MailboxService:
    """Returns a service on SQLite at ``db_path``, or in memory if it is None.

    ``options`` go to `MailboxService` (``max_body_bytes``, ...).
    """
    if db_path is None:
        stores = Stores.memory()
    else:
        # Imported here: the SQL adapter needs SQLAlchemy, memory needs nothing.
        from ..adapters.sql import open_sql_stores

        stores = await open_sql_stores(f"sqlite+aiosqlite:///{db_path}")
    return MailboxService(stores, LocalBus(), MemoryPresence(), **options)
