"""``fleets-mailbox replay``: real dialogues through a running chat server.

Replays the multilingual dialogues of the `chatterbot-corpus` package through
the example server (its own embedded one on a temporary SQLite file, or the
one at ``--url``) the way real clients use it: many users in direct chats and
groups send the utterances in order over HTTP, each with its own client
message id, some of them twice or three times as after a lost reply; every
online user holds a WebSocket and keeps per-conversation state (dedupe by
seq, order by seq, sync on a gap); some users are offline for a while and
catch up by sync when they come back. At the end every user syncs every
conversation it belongs to from the start, and `check_views` compares each
user's live view and full view with what was sent: lost, duplicated and
misordered messages. The command prints one line::

    sent=N stored=N pushed=N synced=N lost=N duplicated=N misordered=N p50_ms=X p99_ms=Y

and exits 0 only if nothing was lost, duplicated or misordered (nor shown
that nobody sent, nor a resend refused: see `ReplayReport.ok`), 1 if
something was, 2 if the replay could not run.
"""

from __future__ import annotations

from .check import CheckResult, Problem, SentMessage, ViewEntry, check_views
from .client import ConversationState, Offer, ReplayError
from .command import add_arguments, run
from .corpus import CorpusError, Dialogue, available_languages, load_dialogues
from .runner import Plan, ReplayReport, build_plan, replay

__all__ = [
    "CheckResult",
    "ConversationState",
    "CorpusError",
    "Dialogue",
    "Offer",
    "Plan",
    "Problem",
    "ReplayError",
    "ReplayReport",
    "SentMessage",
    "ViewEntry",
    "add_arguments",
    "available_languages",
    "build_plan",
    "check_views",
    "load_dialogues",
    "replay",
    "run",
]
