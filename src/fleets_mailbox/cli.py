"""The ``fleets-mailbox`` command.

* ``fleets-mailbox demo``: runs the example chat server (SQLite in one file,
  or memory with ``--memory``) and prints the URL of its browser page;
* ``fleets-mailbox replay``: replays real conversations through a server
  (`fleets_mailbox.replay`).

The server modules need the ``[server]`` extra; they are imported only by
the command that runs them.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import re
import secrets
import socket
import sys
from collections.abc import Sequence
from types import ModuleType

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)

DEFAULT_DB = "./fleets-demo.sqlite3"


def build_parser(*, with_replay: bool = False) -> argparse.ArgumentParser:
    """Returns the command's parser; ``with_replay`` adds the replay options."""
    parser = argparse.ArgumentParser(
        prog="fleets-mailbox",
        description="Store, order, sync and push chat messages: demo and tools.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="run the example chat server with its browser page",
        description="Runs the example chat server and prints the URL to open.",
    )
    demo.add_argument("--host", default="127.0.0.1", help="address to listen on")
    demo.add_argument("--port", type=int, default=8000, help="port (0 picks one)")
    demo.add_argument(
        "--db",
        default=DEFAULT_DB,
        metavar="PATH",
        help=f"SQLite file that keeps the chats (default {DEFAULT_DB})",
    )
    demo.add_argument(
        "--memory", action="store_true", help="keep everything in memory instead"
    )
    demo.add_argument(
        "--sql",
        default=os.environ.get("FLEETS_SQL_URL"),
        metavar="URL",
        help="keep the chats in this SQL database instead of --db, e.g. "
        "mysql+asyncmy://user:password@127.0.0.1:3306/chat?charset=utf8mb4 "
        "(default: $FLEETS_SQL_URL)",
    )
    demo.add_argument(
        "--mongo",
        default=os.environ.get("FLEETS_MONGO_URI"),
        metavar="URI",
        help="keep message content and mailboxes in this MongoDB "
        "(default: $FLEETS_MONGO_URI, else SQLite)",
    )
    demo.add_argument(
        "--rocketmq",
        default=os.environ.get("FLEETS_ROCKETMQ_ENDPOINTS"),
        metavar="ENDPOINTS",
        help="carry events over the RocketMQ 5 gRPC proxy at host:port, so "
        "several demo processes on the same --sql/--mongo stores push to each "
        "other's users (default: $FLEETS_ROCKETMQ_ENDPOINTS, else in-process)",
    )
    demo.add_argument(
        "--rocketmq-name-server",
        default=os.environ.get("FLEETS_ROCKETMQ_NAME_SERVER"),
        metavar="HOST:PORT",
        help="RocketMQ's name server, so that this process deletes its push "
        "group when it stops (default: $FLEETS_ROCKETMQ_NAME_SERVER, else the "
        "group stays on the broker)",
    )
    demo.add_argument(
        "--node-id",
        default=None,
        help="this process's name in RocketMQ push groups (default: host "
        "name and port); give each process its own",
    )
    demo.add_argument(
        "--secret",
        default=os.environ.get("FLEETS_DEMO_SECRET"),
        help="secret that signs the demo tokens (default: $FLEETS_DEMO_SECRET, "
        "else a random one, so tokens end with the process)",
    )
    demo.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level of the server (default info)",
    )

    replay = commands.add_parser(
        "replay",
        help="replay real multilingual conversations through a server and check them",
        description="Replays chatterbot-corpus dialogues through a server.",
        add_help=with_replay,
    )
    if with_replay:
        _replay_module().add_arguments(replay)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command; returns its exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    with_replay = bool(args_list) and args_list[0] == "replay"
    try:
        parser = build_parser(with_replay=with_replay)
    except ImportError as exc:
        print(f"fleets-mailbox replay is not available: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(args_list)

    if args.command == "demo":
        return _demo(args)
    code = asyncio.run(_replay_module().run(args))
    return int(code or 0)


def _replay_module() -> ModuleType:
    return importlib.import_module("fleets_mailbox.replay")


def _demo(args: argparse.Namespace) -> int:
    # Warnings from everyone; our own loggers at the chosen level.
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("fleets_mailbox").setLevel(args.log_level.upper())
    if args.memory and args.sql:
        print(
            "fleets-mailbox demo: --memory and --sql exclude each other",
            file=sys.stderr,
        )
        return 2
    db_path = None if args.memory else args.db
    try:
        return asyncio.run(_serve_demo(args, db_path))
    except KeyboardInterrupt:
        return 130
    except ImportError as exc:
        print(
            f"fleets-mailbox demo is missing a package: {exc}\n  in the "
            "checkout: pip install -e '.[server]' (plus the mysql, mongo or "
            "rocketmq extra for --sql, --mongo or --rocketmq), or run with --memory",
            file=sys.stderr,
        )
        return 2
    except ValueError as exc:
        print(f"fleets-mailbox demo: {exc}", file=sys.stderr)
        return 2


async def _serve_demo(args: argparse.Namespace, db_path: str | None) -> int:
    from .errors import StoreError
    from .server import BackgroundServer, create_app, open_demo_service

    node_id = args.node_id
    if args.rocketmq and node_id is None:
        host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:40]
        node_id = f"{host}-{args.port}" if args.port else None
    try:
        service = await open_demo_service(
            db_path,
            sql_url=args.sql,
            mongo_uri=args.mongo,
            rocketmq_endpoints=args.rocketmq,
            rocketmq_name_server=args.rocketmq_name_server,
            node_id=node_id,
        )
    except StoreError as exc:
        print(f"fleets-mailbox demo: cannot open the stores: {exc}", file=sys.stderr)
        return 2
    app = create_app(service, secret=args.secret or secrets.token_hex(32))
    server = BackgroundServer(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        # The access log would print the WebSocket's ?token= with each
        # connection, so the demo goes without it.
        access_log=False,
        capture_signals=True,
    )
    try:
        await server.start()
    except RuntimeError as exc:
        print(f"fleets-mailbox demo: {exc}", file=sys.stderr)
        await service.close()
        return 1
    where = "memory" if db_path is None else db_path
    if args.sql:
        where = _without_password(args.sql)
    if args.mongo:
        where += " and MongoDB"
    if args.rocketmq:
        where += f", events over RocketMQ at {args.rocketmq}"
    print(
        f"fleets-mailbox demo: open {server.url}/ (chats kept in {where})", flush=True
    )
    print("  log in as any user id; Ctrl-C stops the server", flush=True)
    await server.wait()
    await server.stop()
    return 0


def _without_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
