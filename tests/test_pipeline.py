"""Refused requests: each raises the right error, with its fields, and changes nothing.

Every test snapshots what the stores hold (through the protocols: seqs,
holes, mailbox entries, summaries, pending and stored messages,
notifications) before the refused call and compares it afterwards, so a
refusal that burned a seq or stored anything fails.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from conftest import require_sql, sqlite_url
from fleets_mailbox import (
    DuplicateMessage,
    EmptyBody,
    FleetsError,
    InvalidId,
    InvalidRange,
    InvalidRequest,
    MessageTooLarge,
    NotAllowed,
    NotAMember,
    NotFound,
    Stores,
    SyncService,
    UnknownConversation,
    UnknownMessage,
)
from fleets_mailbox.model import Message, direct_conversation
from fleets_mailbox.pipeline import DEFAULT_MAX_BODY_BYTES, SendPipeline
from fleets_mailbox.testing import FakeClock, RecordingBus

USERS = ("alice", "bob", "carol")
AB = direct_conversation("alice", "bob")
TEAM = "g:team"
CONVERSATIONS = (
    AB,
    TEAM,
    direct_conversation("alice", "carol"),
    direct_conversation("bob", "carol"),
    "g:nope",
    "s:news",
)


@attrs.define
class Setup:
    """Stores holding a few messages, and the services over them."""

    stores: Stores
    pipeline: SendPipeline
    sync: SyncService
    bus: RecordingBus
    sent: Message
    deleted: Message

    async def snapshot(self) -> dict[Any, Any]:
        """Everything the stores show through their protocols."""
        stores = self.stores
        state: dict[Any, Any] = {}
        message_ids: set[str] = set()
        for conversation in CONVERSATIONS:
            state["last_seq", conversation] = await stores.mailboxes.last_seq(
                conversation
            )
            state["holes", conversation] = await stores.mailboxes.holes(
                conversation, 0, 10_000
            )
            for user in USERS:
                entries = await stores.mailboxes.read(user, conversation, 0, 1000)
                message_ids.update(e.message_id for e in entries)
                state["entries", user, conversation] = entries
        for user in USERS:
            # Every summary of the user, with its read_seq, unread and version.
            state["summaries", user] = await stores.conversations.list_changed(
                user, 0, 1000
            )
            state["notifications", user] = await stores.notifications.list(
                user, 0, 1000
            )
        state["pending"] = await stores.messages.list_pending(2**62, 1000)
        state["messages"] = await stores.messages.get_many(sorted(message_ids))
        state["events"] = list(self.bus.events)
        return state


async def populate(stores: Stores) -> None:
    """Writes what every test starts from: a group and a few messages."""
    await stores.directory.create_group("team", "alice", "Team", ["bob"])
    pipeline = SendPipeline(
        messages=stores.messages,
        mailboxes=stores.mailboxes,
        conversations=stores.conversations,
        directory=stores.directory,
        clock=FakeClock(),
    )
    await pipeline.send("alice", AB, "hello bob", "cm-1")
    await pipeline.send("bob", AB, "hi alice", "cm-2")
    await pipeline.send("alice", TEAM, "hello team", "cm-3")
    doomed = await pipeline.send("alice", AB, "oops", "cm-4")
    await pipeline.delete("alice", doomed.message_id)


@pytest.fixture(scope="module")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file populated once; each test works on a copy of it."""
    sql = require_sql()
    path = tmp_path_factory.mktemp("template") / "populated.sqlite3"

    async def build() -> None:
        stores = await sql.open_sql_stores(sqlite_url(path))
        try:
            await populate(stores)
        finally:
            await stores.close()

    # Its own loop in its own thread: the fixture is first asked for from
    # inside the test's running loop.
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, build()).result()
    return path


@pytest.fixture
async def setup(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Setup]:
    if backend == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        path = tmp_path / "copy.sqlite3"
        shutil.copyfile(template, path)
        stores = await require_sql().open_sql_stores(sqlite_url(path))
    elif backend in ("mongo", "mysql"):
        stores = await request.getfixturevalue("stores_factory")()
        await populate(stores)
    else:
        stores = Stores.memory()
        await populate(stores)
    bus = RecordingBus()
    pipeline = SendPipeline(
        messages=stores.messages,
        mailboxes=stores.mailboxes,
        conversations=stores.conversations,
        directory=stores.directory,
        bus=bus,
        clock=FakeClock(),
    )
    sync = SyncService(
        messages=stores.messages,
        mailboxes=stores.mailboxes,
        conversations=stores.conversations,
        bus=bus,
    )
    sent = await stores.messages.get_by_client_id("alice", "cm-1")
    deleted = await stores.messages.get_by_client_id("alice", "cm-4")
    assert sent is not None
    assert deleted is not None
    assert deleted.deleted
    try:
        yield Setup(stores, pipeline, sync, bus, sent, deleted)
    finally:
        await stores.close()


Call = Callable[[Setup], Awaitable[object]]


def send(sender: Any, conversation: Any, body: Any, client_msg_id: Any = "new") -> Call:
    return lambda s: s.pipeline.send(sender, conversation, body, client_msg_id)


OVERSIZED = "é" * (DEFAULT_MAX_BODY_BYTES // 2 + 1)
INJECTIONS: list[Any] = [
    {"$ne": ""},
    {"$gt": None},
    "$where",
    "$ne",
    7,
    None,
    ["alice"],
    "",
    "a b",
    "x" * 129,
    "alice\n",
    "ali'ce",
]

REFUSED: list[Any] = [
    pytest.param(
        send("carol", TEAM, "let me in"),
        NotAMember,
        {"user_id": "carol", "conversation_id": TEAM},
        id="non-member-group",
    ),
    pytest.param(
        send("carol", AB, "hi"),
        NotAMember,
        {"user_id": "carol", "conversation_id": AB},
        id="non-member-direct",
    ),
    pytest.param(
        send("alice", "g:nope", "anyone?"),
        UnknownConversation,
        {"conversation_id": "g:nope"},
        id="unknown-group",
    ),
    pytest.param(
        send("alice", "s:news", "anyone?"),
        UnknownConversation,
        {"conversation_id": "s:news"},
        id="unknown-system-channel",
    ),
    pytest.param(send("alice", AB, ""), EmptyBody, {"field": "body"}, id="empty"),
    pytest.param(
        send("alice", AB, " \n\t\u3000"), EmptyBody, {"field": "body"}, id="blank"
    ),
    pytest.param(
        send("alice", AB, OVERSIZED),
        MessageTooLarge,
        {
            "size": len(OVERSIZED.encode()),
            "limit": DEFAULT_MAX_BODY_BYTES,
            "field": "body",
        },
        id="body-over-the-limit-in-bytes",
    ),
    pytest.param(
        send("alice", AB, 42), InvalidRequest, {"field": "body"}, id="body-int"
    ),
    pytest.param(
        send("alice", AB, {"$set": "x"}),
        InvalidRequest,
        {"field": "body"},
        id="body-dict",
    ),
    pytest.param(
        send("alice", AB, None), InvalidRequest, {"field": "body"}, id="body-none"
    ),
    pytest.param(
        send("alice", AB, "half a pair \ud800"),
        InvalidRequest,
        {"field": "body"},
        id="body-lone-surrogate",
    ),
    *(
        pytest.param(
            send(bad, AB, "x"),
            InvalidId,
            {"field": "sender_id"},
            id=f"sender-{bad!r}"[:40],
        )
        for bad in INJECTIONS
    ),
    *(
        pytest.param(
            send("alice", bad, "x"),
            InvalidId,
            {"field": "conversation_id"},
            id=f"conversation-{bad!r}"[:40],
        )
        for bad in [
            *INJECTIONS,
            "d:bob:alice",
            "d:alice:alice",
            "d:alice",
            "d:alice:bob:carol",
            "g:",
            "g:a:b",
            "x:team",
            "team",
            "g:$where",
        ]
    ),
    *(
        pytest.param(
            send("alice", AB, "x", bad),
            InvalidId,
            {"field": "client_msg_id"},
            id=f"client-msg-id-{bad!r}"[:40],
        )
        for bad in INJECTIONS
    ),
    pytest.param(
        lambda s: s.pipeline.send("alice", AB, "x", "new", kind="$where"),
        InvalidId,
        {"field": "kind"},
        id="kind",
    ),
    pytest.param(
        send("alice", AB, "another body", "cm-1"),
        DuplicateMessage,
        {"sender_id": "alice", "client_msg_id": "cm-1"},
        id="client-msg-id-reused-for-other-content",
    ),
    pytest.param(
        send("alice", TEAM, "hello bob", "cm-1"),
        DuplicateMessage,
        {"sender_id": "alice", "client_msg_id": "cm-1"},
        id="client-msg-id-reused-in-other-conversation",
    ),
    *(
        pytest.param(
            lambda s, bad=bad: s.sync.sync("bob", AB, bad, 10),
            InvalidRange,
            {"field": "from_seq"},
            id=f"sync-from-seq-{bad!r}",
        )
        for bad in [-1, -(2**40), "3", 1.5, True, None]
    ),
    *(
        pytest.param(
            lambda s, bad=bad: s.sync.sync("bob", AB, 0, bad),
            InvalidRange,
            {"field": "limit"},
            id=f"sync-limit-{bad!r}",
        )
        for bad in [0, 1001, -1, True, "10", 10.0, None]
    ),
    pytest.param(
        lambda s: s.sync.sync({"$ne": ""}, AB, 0, 10),
        InvalidId,
        {"field": "user_id"},
        id="sync-user-dict",
    ),
    pytest.param(
        lambda s: s.sync.sync("bob", "$where", 0, 10),
        InvalidId,
        {"field": "conversation_id"},
        id="sync-conversation-dollar",
    ),
    *(
        pytest.param(
            lambda s, bad=bad: s.sync.mark_read("bob", AB, bad),
            InvalidRange,
            {"field": "read_seq"},
            id=f"read-seq-{bad!r}",
        )
        for bad in [-1, "2", 2.0, None]
    ),
    pytest.param(
        lambda s: s.sync.mark_read("$where", AB, 1),
        InvalidId,
        {"field": "user_id"},
        id="mark-read-user-dollar",
    ),
    pytest.param(
        lambda s: s.sync.mark_read("carol", AB, 1),
        NotFound,
        {},
        id="mark-read-without-a-summary",
    ),
    pytest.param(
        lambda s: s.sync.conversations_since("bob", -1, 10),
        InvalidRange,
        {"field": "since_version"},
        id="conversations-since-negative",
    ),
    pytest.param(
        lambda s: s.sync.conversations_since("bob", 0, 0),
        InvalidRange,
        {"field": "limit"},
        id="conversations-limit-0",
    ),
    pytest.param(
        lambda s: s.pipeline.edit("bob", s.sent.message_id, "mine now"),
        NotAllowed,
        {"user_id": "bob"},
        id="edit-by-another",
    ),
    pytest.param(
        lambda s: s.pipeline.delete("bob", s.sent.message_id),
        NotAllowed,
        {"user_id": "bob"},
        id="delete-by-another",
    ),
    pytest.param(
        lambda s: s.pipeline.edit("alice", "0" * 26, "x"),
        UnknownMessage,
        {"message_id": "0" * 26},
        id="edit-unknown",
    ),
    pytest.param(
        lambda s: s.pipeline.delete("alice", "0" * 26),
        UnknownMessage,
        {"message_id": "0" * 26},
        id="delete-unknown",
    ),
    pytest.param(
        lambda s: s.pipeline.edit("alice", s.sent.message_id, "  "),
        EmptyBody,
        {"field": "body"},
        id="edit-empty",
    ),
    pytest.param(
        lambda s: s.pipeline.edit("alice", s.sent.message_id, OVERSIZED),
        MessageTooLarge,
        {"limit": DEFAULT_MAX_BODY_BYTES},
        id="edit-over-the-limit",
    ),
    pytest.param(
        lambda s: s.pipeline.edit("alice", {"$ne": ""}, "x"),
        InvalidId,
        {"field": "message_id"},
        id="edit-message-id-dict",
    ),
    pytest.param(
        lambda s: s.pipeline.delete("alice", "$where"),
        InvalidId,
        {"field": "message_id"},
        id="delete-message-id-dollar",
    ),
    pytest.param(
        lambda s: s.pipeline.edit("alice", s.deleted.message_id, "back again"),
        NotAllowed,
        {"user_id": "alice"},
        id="edit-deleted",
    ),
]


@pytest.mark.parametrize(("call", "error", "fields"), REFUSED)
async def test_refused_request_changes_nothing(
    setup: Setup, call: Call, error: type[FleetsError], fields: dict[str, Any]
) -> None:
    before = await setup.snapshot()

    with pytest.raises(error) as raised:
        await call(setup)

    for name, value in fields.items():
        assert getattr(raised.value, name) == value, name
    if isinstance(raised.value, DuplicateMessage):
        assert raised.value.message_id == setup.sent.message_id
    assert raised.value.to_dict()["error"] == error.code
    after = await setup.snapshot()
    assert after == before


async def test_a_refused_request_leaves_the_next_send_its_seq(setup: Setup) -> None:
    for call in (send("carol", TEAM, "no"), send("alice", AB, ""), send("$x", AB, "y")):
        with pytest.raises(FleetsError):
            await call(setup)

    sent = await setup.pipeline.send("alice", AB, "next", "cm-next")
    team = await setup.pipeline.send("bob", TEAM, "next", "cm-next")

    assert sent.seq == 4
    assert team.seq == 2


def test_a_pipeline_refuses_nonsense_settings() -> None:
    stores = Stores.memory()
    for bad in ({"chunk_size": 0}, {"max_body_bytes": 0}, {"lease_ms": 0}):
        with pytest.raises(ValueError):
            SendPipeline(
                messages=stores.messages,
                mailboxes=stores.mailboxes,
                conversations=stores.conversations,
                directory=stores.directory,
                **bad,
            )


@pytest.mark.parametrize(
    "payload",
    [
        {"when": datetime.datetime(2026, 1, 1)},
        {"raw": b"bytes"},
        {"tags": {"a", "b"}},
        {"nested": {1: "int key"}},
        {"ratio": float("nan")},
        {"pair": ("a", "b")},
    ],
    ids=["datetime", "bytes", "set", "int-key", "nan", "tuple"],
)
async def test_a_payload_that_is_not_json_is_refused_and_not_stored(
    stores: Stores, payload: dict[str, Any]
) -> None:
    from fleets_mailbox.notifications import NotificationService

    service = NotificationService(stores.notifications, RecordingBus())
    with pytest.raises(InvalidRequest) as refused:
        await service.notify("ann", "reminder", payload)
    assert refused.value.field == "payload"
    assert await service.list("ann") == []
    stored = await service.notify("ann", "reminder", {"ok": ["a", 1, None, True]})
    assert (await service.list("ann"))[0].payload == stored.payload
