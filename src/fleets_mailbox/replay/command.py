"""The ``fleets-mailbox replay`` command: its options and its run."""

from __future__ import annotations

import argparse
import sys

from ..errors import StoreError
from .client import ReplayError
from .corpus import CorpusError

__all__ = ["add_arguments", "run"]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def _users(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2 (got {value})")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1 (got {value})")
    return value


def _languages(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("name at least one language")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the options of ``fleets-mailbox replay`` to ``parser``."""
    parser.description = (
        "Replay the multilingual dialogues of chatterbot-corpus through a chat "
        "server (its own embedded one unless --url is given) with many users, "
        "over HTTP and WebSocket, then check that no user lost, duplicated or "
        "misordered a message. Prints one line; exits 0 only if all is well."
    )
    parser.add_argument(
        "--url",
        action="append",
        help="base URL of a running server (default: an embedded one); repeat "
        "it for the processes of one deployment, and users are spread over them",
    )
    parser.add_argument(
        "--users", type=_users, default=60, help="number of users (default 60)"
    )
    parser.add_argument(
        "--messages",
        type=_positive,
        default=1000,
        help="distinct sends to make; dialogues loop as needed (default 1000)",
    )
    parser.add_argument(
        "--conversations",
        type=_positive,
        default=None,
        help="number of conversations (default: as many as users)",
    )
    parser.add_argument(
        "--groups-share",
        type=_share,
        default=0.3,
        help="share of conversations that are groups of 3-8 (default 0.3)",
    )
    parser.add_argument(
        "--offline-share",
        type=_share,
        default=0.25,
        help="share of users offline for a while, then catching up (default 0.25)",
    )
    parser.add_argument(
        "--retry-share",
        type=_share,
        default=0.05,
        help="share of sends resent with the same clientMsgId (default 0.05)",
    )
    parser.add_argument(
        "--concurrency",
        type=_positive,
        default=16,
        help="conversations replayed at once (default 16)",
    )
    parser.add_argument(
        "--seed", type=int, default=1, help="seed of every random choice (default 1)"
    )
    parser.add_argument(
        "--languages",
        type=_languages,
        default=None,
        help="comma-separated corpus languages, e.g. english,japanese (default: all)",
    )
    parser.add_argument(
        "--sql",
        metavar="URL",
        default=None,
        help="embedded server only: keep the stores in this SQL database "
        "(e.g. mysql+asyncmy://user:password@host/db?charset=utf8mb4) "
        "instead of a temporary SQLite file",
    )
    parser.add_argument(
        "--mongo",
        metavar="URI",
        default=None,
        help="embedded server only: keep content and mailboxes in a new "
        "database of this MongoDB",
    )
    parser.add_argument(
        "--store",
        choices=("sqlite", "memory"),
        default="sqlite",
        help="store of the embedded server (default: a temporary SQLite file)",
    )
    parser.add_argument(
        "--run-id",
        default=None,
        help="prefix of user, group and message ids (default: none on the "
        "embedded server, a random tag with --url)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar and no details on stderr, only the result line",
    )


async def run(args: argparse.Namespace) -> int:
    """Runs the replay of ``args``; returns 0 if `ReplayReport.ok`, else 1.

    Prints exactly one line on stdout; a replay that cannot run prints its
    error on stderr instead and returns 2.
    """
    from .runner import replay

    quiet = bool(getattr(args, "quiet", False))
    try:
        report = await replay(
            args.url,
            users=args.users,
            messages=args.messages,
            conversations=args.conversations,
            groups_share=args.groups_share,
            offline_share=args.offline_share,
            retry_share=args.retry_share,
            concurrency=args.concurrency,
            seed=args.seed,
            languages=args.languages,
            run_id=args.run_id,
            store=args.store,
            sql_url=args.sql,
            mongo_uri=args.mongo,
            progress=not quiet and sys.stderr.isatty(),
        )
    except (ReplayError, CorpusError, ValueError, StoreError) as exc:
        print(f"fleets-mailbox replay: error: {exc}", file=sys.stderr)
        return 2
    if not quiet:
        print(report.details(), file=sys.stderr)
    print(report.line(), flush=True)
    return 0 if report.ok else 1
