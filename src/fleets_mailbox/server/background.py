"""`BackgroundServer`: uvicorn serving an app inside the running event loop.

For tests, the replay tool and the demo command: the server shares the loop
of its caller, so the caller can reach the app's service directly while
clients talk to it over real sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from collections.abc import Generator
from types import TracebackType
from typing import Any

import uvicorn

__all__ = ["BackgroundServer"]

logger = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """A uvicorn server that leaves the process's signal handlers alone."""

    def __init__(self, config: uvicorn.Config, *, capture_signals: bool) -> None:
        super().__init__(config)
        self._capture = capture_signals

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if self._capture:
            with super().capture_signals():
                yield
        else:
            yield


_TOKEN = re.compile(r"(token=)[^&\s\"']+")


class _RedactTokens(logging.Filter):
    """Hides ``token=…`` in uvicorn's log lines.

    WebSocket clients pass their bearer token in the query string, and
    uvicorn logs each handshake with its path ("WebSocket /ws?token=…"
    [accepted]) even without the access log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(
            isinstance(a, str) and "token=" in a for a in record.args
        ):
            record.args = tuple(
                _TOKEN.sub(r"\1[hidden]", a) if isinstance(a, str) else a
                for a in record.args
            )
        if isinstance(record.msg, str) and "token=" in record.msg:
            record.msg = _TOKEN.sub(r"\1[hidden]", record.msg)
        return True


def _hide_tokens_in_uvicorn_logs() -> None:
    for name in ("uvicorn.error", "uvicorn.access"):
        target = logging.getLogger(name)
        if not any(isinstance(f, _RedactTokens) for f in target.filters):
            target.addFilter(_RedactTokens())


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio turns Nagle's algorithm off (TCP_NODELAY)
    # on accepted connections only for sockets made with it. Without, every
    # answer after the first on a kept-alive connection waited about 40 ms.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise RuntimeError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


class BackgroundServer:
    """Runs uvicorn for ``app`` on ``host``:``port`` while the block runs.

    ``port=0`` picks a free port; `url` (``http://127.0.0.1:PORT``) and `port`
    tell which once the block is entered. The app's lifespan runs at startup
    and shutdown. With ``capture_signals`` uvicorn handles Ctrl-C itself
    (stopping the server, see `wait`); otherwise signals are left to the
    caller. Other keyword arguments go to `uvicorn.Config`.
    """

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        capture_signals: bool = False,
        **config: Any,
    ) -> None:
        config.setdefault("timeout_graceful_shutdown", 5)
        self.config = uvicorn.Config(
            app, host=host, port=port, log_level=log_level, **config
        )
        self._server = _Server(self.config, capture_signals=capture_signals)
        _hide_tokens_in_uvicorn_logs()
        self._task: asyncio.Task[None] | None = None
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        """The server's base URL, without a trailing slash."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """The base URL for WebSocket clients (``ws://...``)."""
        return "ws" + self.url.removeprefix("http")

    async def start(self) -> None:
        """Starts serving and returns once the server accepts connections.

        Raises `RuntimeError` if the address cannot be bound or the app's
        lifespan fails to start.
        """
        if self._task is not None:
            raise RuntimeError("the server is already started")
        # Bound here, before the lifespan starts the app, so that a busy port
        # fails at once and port 0 is resolved.
        sock = _bind(self.host, self.port)
        self.port = int(sock.getsockname()[1])
        self._task = asyncio.create_task(self._serve(sock), name="uvicorn")
        while not self._server.started:
            if self._task.done():
                task, self._task = self._task, None
                sock.close()
                raise RuntimeError(
                    f"uvicorn did not start on {self.url}"
                ) from task.exception()
            await asyncio.sleep(0.01)
        logger.debug("serving on %s", self.url)

    async def _serve(self, sock: socket.socket) -> None:
        try:
            await self._server.serve(sockets=[sock])
        except SystemExit as exc:
            # uvicorn exits the process when startup fails; not ours to exit.
            raise RuntimeError(f"uvicorn stopped (exit code {exc.code})") from None

    async def wait(self) -> None:
        """Waits until the server stops (after `stop`, or Ctrl-C if captured)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        """Stops accepting, closes connections, runs the lifespan's shutdown."""
        task, self._task = self._task, None
        if task is None:
            return
        self._server.should_exit = True
        try:
            await task
        except Exception:
            logger.warning("uvicorn stopped with an error", exc_info=True)

    async def __aenter__(self) -> BackgroundServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
