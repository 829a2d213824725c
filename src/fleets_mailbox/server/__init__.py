"""The example chat server: FastAPI over a `MailboxService`, with a browser page.

* `create_app` serves the HTTP and WebSocket API of docs/http-api.md and the
  browser page at ``/``;
* `open_demo_service` opens the one-process service the demo runs on;
* `BackgroundServer` runs uvicorn for an app inside the running event loop.

Needs the ``[server]`` extra (FastAPI, uvicorn, websockets).
"""

from __future__ import annotations

from .app import create_app
from .background import BackgroundServer
from .demo import open_demo_service

__all__ = ["BackgroundServer", "create_app", "open_demo_service"]
