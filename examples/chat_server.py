"""Embedding fleets_mailbox in a chat server of your own.

An application builds the stores, a bus and presence, wraps them in one
`MailboxService`, and serves it: here with the example FastAPI app of
`fleets_mailbox.server` (HTTP calls, WebSocket push, the browser page), to
which it adds a route of its own. Run it and open http://127.0.0.1:8000/::

    python examples/chat_server.py               # in memory
    CHAT_DB=chat.sqlite3 python examples/chat_server.py

Needs the ``[server]`` extra.
"""

from __future__ import annotations

import asyncio
import os
import secrets

import uvicorn
from fastapi import FastAPI

from fleets_mailbox import MailboxService, Stores
from fleets_mailbox.adapters.local_bus import LocalBus
from fleets_mailbox.adapters.memory import MemoryPresence
from fleets_mailbox.analytics import day_of
from fleets_mailbox.model import now_ms
from fleets_mailbox.server import create_app


async def build_app(db_path: str | None) -> FastAPI:
    """Returns the chat app over SQLite at ``db_path``, or memory if None."""
    # 1. The stores: where messages, mailboxes and conversation lists live.
    if db_path:
        from fleets_mailbox.adapters.sql import open_sql_stores

        stores = await open_sql_stores(f"sqlite+aiosqlite:///{db_path}")
    else:
        stores = Stores.memory()

    # 2. The bus carries "something happened" to the push consumer; in
    #    production a RocketMQ bus, here one inside the process. Presence
    #    knows which users hold a WebSocket on this node.
    service = MailboxService(
        stores, LocalBus(), MemoryPresence(), max_body_bytes=16 * 1024
    )

    # 3. The HTTP and WebSocket API; its lifespan starts and closes the service.
    #    The secret signs the demo login tokens: put your own auth here.
    secret = os.environ.get("CHAT_SECRET") or secrets.token_hex(32)
    app = create_app(service, secret=secret, title="My chat")

    # 4. The app is yours: add routes next to the library's.
    @app.get("/api/stats/today")
    async def stats_today() -> dict[str, object]:
        day = day_of(now_ms())
        return {
            "day": day,
            "messages": await stores.analytics.message_counts(day),
            "activeUsers": await stores.analytics.active_users(day),
        }

    return app


async def main() -> None:
    app = await build_app(os.environ.get("CHAT_DB"))
    config = uvicorn.Config(app, host="127.0.0.1", port=8000)
    await uvicorn.Server(config).serve()


if __name__ == "__main__":
    asyncio.run(main())
