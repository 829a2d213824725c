"""The example server's HTTP API (docs/http-api.md), call by call.

Runs over httpx's ASGI transport with the app's lifespan, once per embedded
backend. Every refused request is checked twice: the documented status and
JSON error, and that nothing was stored and no seq was used.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import websockets

from fleets_mailbox import (
    MailboxService,
    Stores,
    TransientStoreError,
    direct_conversation,
)
from fleets_mailbox.adapters.local_bus import LocalBus
from fleets_mailbox.adapters.memory import MemoryPresence
from fleets_mailbox.server import BackgroundServer, create_app
from fleets_mailbox.server.auth import TokenSigner

SECRET = "test-secret"
AB = direct_conversation("alice", "bob")
TEAM = "g:team"


@pytest.fixture
async def service(stores: Stores) -> MailboxService:
    return MailboxService(stores, LocalBus(), MemoryPresence())


@pytest.fixture
async def client(service: MailboxService) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(service, secret=SECRET)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as http,
    ):
        yield http


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TokenSigner(SECRET).token(user)}"}


async def send(
    client: httpx.AsyncClient, user: str, body: str = "hi", **target: Any
) -> httpx.Response:
    payload = {"body": body, "clientMsgId": target.pop("cmid", uuid.uuid4().hex)}
    payload.update(target or {"conversationId": AB})
    return await client.post("/api/messages", json=payload, headers=auth(user))


def refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    return body


async def snapshot(service: MailboxService) -> dict[str, Any]:
    """What a refused request must leave alone: seqs, mailboxes, summaries."""
    stores = service.stores
    users = ("alice", "bob", "carol")
    conversations = (AB, TEAM, "g:nope", direct_conversation("alice", "carol"))
    return {
        "last_seq": [await stores.mailboxes.last_seq(c) for c in conversations],
        "entries": [
            await stores.mailboxes.read(u, c, 0, 1000)
            for u in users
            for c in conversations
        ],
        "summaries": [
            await stores.conversations.list_changed(u, 0, 1000) for u in users
        ],
        "notifications": [await stores.notifications.list(u, 0, 1000) for u in users],
    }


@pytest.fixture
async def seeded(client: httpx.AsyncClient, service: MailboxService) -> dict[str, Any]:
    """alice and bob have one message; alice owns the group team with bob."""
    assert (await send(client, "alice", "hello")).status_code == 201
    created = await client.post(
        "/api/groups",
        json={"groupId": "team", "name": "Team", "members": ["bob"]},
        headers=auth("alice"),
    )
    assert created.status_code == 201
    return await snapshot(service)


# -- every call works ------------------------------------------------------------


async def test_login_gives_a_token_that_acts_as_the_user(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/api/login", json={"userId": "alice"})
    assert response.status_code == 200
    token = response.json()["token"]
    assert response.json()["userId"] == "alice"

    listed = await client.get(
        "/api/conversations", headers={"Authorization": f"Bearer {token}"}
    )
    assert listed.status_code == 200
    assert listed.json() == {"conversations": [], "nextVersion": 0, "hasMore": False}


async def test_healthz_page_and_openapi(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"ok": True}

    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'id="login-user"' in page.text
    assert (await client.get("/static/app.js")).status_code == 200
    assert (await client.get("/static/style.css")).status_code == 200

    schema = (await client.get("/openapi.json")).json()
    assert "/api/messages" in schema["paths"]
    assert "/api/sync" in schema["paths"]


async def test_send_resend_sync_and_read(
    client: httpx.AsyncClient, service: MailboxService
) -> None:
    first = await send(client, "alice", "hi bob", to="bob", cmid="c-1")
    assert first.status_code == 201
    message = first.json()["message"]
    assert message["conversationId"] == AB
    assert message["senderId"] == "alice"
    assert message["clientMsgId"] == "c-1"
    assert message["seq"] == 1
    assert message["status"] == "committed"
    assert set(message) == {
        "messageId",
        "conversationId",
        "senderId",
        "clientMsgId",
        "body",
        "createdAt",
        "seq",
        "status",
        "kind",
        "editedAt",
        "deleted",
    }

    again = await send(client, "alice", "hi bob", to="bob", cmid="c-1")
    assert again.status_code == 200
    assert again.json()["message"]["messageId"] == message["messageId"]
    reused = await send(client, "alice", "other words", to="bob", cmid="c-1")
    duplicate = refused(reused, 400, "duplicate_message")
    assert duplicate["messageId"] == message["messageId"]
    assert duplicate["clientMsgId"] == "c-1"
    assert duplicate["senderId"] == "alice"
    assert await service.stores.mailboxes.last_seq(AB) == 1
    second = await send(client, "bob", "hi alice", conversationId=AB, cmid="c-1")
    assert second.status_code == 201
    assert second.json()["message"]["seq"] == 2

    page = await client.get(
        "/api/sync", params={"conversationId": AB}, headers=auth("bob")
    )
    assert page.status_code == 200
    body = page.json()
    assert [m["body"] for m in body["messages"]] == ["hi bob", "hi alice"]
    assert body["nextFromSequence"] == 2
    assert body["hasMore"] is False
    assert body["lastSeq"] == 2
    assert body["holes"] == []
    paged = await client.get(
        "/api/sync",
        params={"conversationId": AB, "fromSequence": 1, "limit": 1},
        headers=auth("alice"),
    )
    assert [m["seq"] for m in paged.json()["messages"]] == [2]

    listed = (await client.get("/api/conversations", headers=auth("alice"))).json()
    (summary,) = listed["conversations"]
    assert summary["conversationId"] == AB
    assert summary["unread"] == 1
    assert summary["lastSeq"] == 2
    assert summary["lastPreview"] == "hi alice"
    assert listed["nextVersion"] == summary["version"]
    later = await client.get(
        "/api/conversations",
        params={"since": listed["nextVersion"]},
        headers=auth("alice"),
    )
    assert later.json()["conversations"] == []

    read = await client.post(
        f"/api/conversations/{AB}/read", json={"readSeq": 2}, headers=auth("alice")
    )
    assert read.status_code == 200
    assert read.json()["unread"] == 0
    assert read.json()["readSeq"] == 2
    stored = await service.stores.conversations.get("alice", AB)
    assert stored is not None and stored.unread == 0


async def test_concurrent_copies_of_a_send_create_one_message(
    client: httpx.AsyncClient, service: MailboxService
) -> None:
    copies = await asyncio.gather(
        *(send(client, "alice", "once", to="bob", cmid="c-1") for _ in range(5))
    )
    assert sorted(r.status_code for r in copies) == [200, 200, 200, 200, 201]
    assert len({r.json()["message"]["messageId"] for r in copies}) == 1
    assert await service.stores.mailboxes.last_seq(AB) == 1
    bob = await service.stores.conversations.get("bob", AB)
    assert bob is not None and bob.unread == 1


async def test_edit_and_delete_own_messages_only(client: httpx.AsyncClient) -> None:
    sent = (await send(client, "alice", "tpyo")).json()["message"]
    path = f"/api/messages/{sent['messageId']}"

    edited = await client.patch(path, json={"body": "typo"}, headers=auth("alice"))
    assert edited.status_code == 200
    assert edited.json()["message"]["body"] == "typo"
    assert edited.json()["message"]["editedAt"] is not None

    refused(
        await client.patch(path, json={"body": "mine"}, headers=auth("bob")),
        403,
        "not_allowed",
    )
    refused(await client.delete(path, headers=auth("bob")), 403, "not_allowed")
    refused(
        await client.patch(path, json={"body": " "}, headers=auth("alice")),
        400,
        "empty_body",
    )
    refused(
        await client.delete("/api/messages/nope", headers=auth("alice")),
        404,
        "unknown_message",
    )

    deleted = await client.delete(path, headers=auth("alice"))
    assert deleted.status_code == 200
    assert deleted.json()["message"]["deleted"] is True
    assert deleted.json()["message"]["seq"] == sent["seq"]
    bob = (await client.get("/api/conversations", headers=auth("bob"))).json()
    assert bob["conversations"][0]["unread"] == 0


async def test_groups_members_and_invites(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/api/groups",
        json={"groupId": "team", "name": "Team", "members": ["bob", "carol"]},
        headers=auth("alice"),
    )
    assert created.status_code == 201
    assert created.json() == {
        "groupId": "team",
        "conversationId": TEAM,
        "ownerId": "alice",
        "name": "Team",
        "members": ["alice", "bob", "carol"],
    }
    refused(
        await client.post("/api/groups", json={"groupId": "team"}, headers=auth("bob")),
        409,
        "group_exists",
    )

    assert (
        await client.get("/api/groups/team", headers=auth("bob"))
    ).status_code == 200
    refused(
        await client.get("/api/groups/team", headers=auth("dave")), 403, "not_a_member"
    )
    refused(
        await client.get("/api/groups/nope", headers=auth("bob")), 404, "unknown_group"
    )
    mine = (await client.get("/api/groups", headers=auth("carol"))).json()
    assert [g["groupId"] for g in mine["groups"]] == ["team"]

    invites = (await client.get("/api/notifications", headers=auth("carol"))).json()
    (invite,) = invites["notifications"]
    assert invite["kind"] == "group_invite"
    assert invite["payload"]["groupId"] == "team"
    assert invite["payload"]["invitedBy"] == "alice"
    assert invite["read"] is False

    members = "/api/groups/team/members"
    refused(
        await client.post(members, json={"add": ["dave"]}, headers=auth("bob")),
        403,
        "not_allowed",
    )
    refused(
        await client.post(members, json={"remove": ["alice"]}, headers=auth("alice")),
        403,
        "not_allowed",
    )
    refused(
        await client.post(members, json={"add": ["x"]}, headers=auth("dave")),
        403,
        "not_a_member",
    )
    added = await client.post(
        members,
        json={"add": ["dave", "bob"], "remove": ["carol"]},
        headers=auth("alice"),
    )
    assert added.status_code == 200
    assert added.json()["members"] == ["alice", "bob", "dave"]
    left = await client.post(members, json={"remove": ["bob"]}, headers=auth("bob"))
    assert left.json()["members"] == ["alice", "dave"]

    # Only the new member was invited; bob was a member already.
    bob_notes = (await client.get("/api/notifications", headers=auth("bob"))).json()
    assert len(bob_notes["notifications"]) == 1
    dave_notes = (await client.get("/api/notifications", headers=auth("dave"))).json()
    assert [n["kind"] for n in dave_notes["notifications"]] == ["group_invite"]

    sent = await send(client, "dave", "hi team", conversationId=TEAM)
    assert sent.status_code == 201
    refused(
        await send(client, "bob", "still here?", conversationId=TEAM),
        403,
        "not_a_member",
    )


async def test_notifications_read_and_paging(client: httpx.AsyncClient) -> None:
    await client.post(
        "/api/groups",
        json={"groupId": "one", "members": ["bob"]},
        headers=auth("alice"),
    )
    await client.post(
        "/api/groups",
        json={"groupId": "two", "members": ["bob"]},
        headers=auth("alice"),
    )
    listed = (await client.get("/api/notifications", headers=auth("bob"))).json()
    first, second = listed["notifications"]
    after = await client.get(
        "/api/notifications",
        params={"after": first["notificationId"]},
        headers=auth("bob"),
    )
    assert after.json()["notifications"] == [second]

    path = f"/api/notifications/{first['notificationId']}/read"
    refused(await client.post(path, headers=auth("alice")), 404, "not_found")
    done = await client.post(path, headers=auth("bob"))
    assert done.status_code == 200
    assert done.json() == {"read": True}
    again = (await client.get("/api/notifications", headers=auth("bob"))).json()
    assert [n["read"] for n in again["notifications"]] == [True, False]
    refused(
        await client.post("/api/notifications/0/read", headers=auth("bob")),
        404,
        "not_found",
    )
    refused(
        await client.post("/api/notifications/x/read", headers=auth("bob")),
        422,
        "invalid_request",
    )


# -- refused sends: the error, and nothing stored -----------------------------------


def payload(**changes: Any) -> dict[str, Any]:
    """A send by alice to bob, with ``changes``; a value of ``...`` drops a key."""
    base: dict[str, Any] = {"conversationId": AB, "body": "x", "clientMsgId": "b"}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}


# (case, sender, payload, status, error): nothing may be stored by any of them.
BAD_SENDS: list[tuple[str, str, str | dict[str, Any], int, str]] = [
    ("non-member sender", "carol", payload(conversationId=TEAM), 403, "not_a_member"),
    ("unknown conversation", "alice", payload(conversationId="g:nope"), 404,
     "unknown_conversation"),
    ("empty body", "alice", payload(body=""), 400, "empty_body"),
    ("blank body", "alice", payload(body=" \n\t"), 400, "empty_body"),
    ("body over the limit", "alice", payload(body="é" * 20_000), 413,
     "message_too_large"),
    ("unsorted direct id", "alice", payload(conversationId="d:bob:alice"), 400,
     "invalid_id"),
    ("$ in conversation id", "alice", payload(conversationId="g:$where"), 400,
     "invalid_id"),
    ("$ in to", "alice", payload(conversationId=..., to="$ne"), 400, "invalid_id"),
    ("bad client msg id", "alice", payload(clientMsgId="a b"), 400, "invalid_id"),
    ("to oneself", "alice", payload(conversationId=..., to="alice"), 400,
     "invalid_request"),
    ("both targets", "alice", payload(to="bob"), 400, "invalid_request"),
    ("no target", "alice", payload(conversationId=...), 400, "invalid_request"),
    ("operator as conversation id", "alice", payload(conversationId={"$ne": ""}),
     422, "invalid_request"),
    ("operator as to", "alice", payload(conversationId=..., to={"$gt": ""}), 422,
     "invalid_request"),
    ("number as to", "alice", payload(conversationId=..., to=7), 422,
     "invalid_request"),
    ("list as conversation id", "alice", payload(conversationId=[AB]), 422,
     "invalid_request"),
    ("number as body", "alice", payload(body=5), 422, "invalid_request"),
    ("number as client msg id", "alice", payload(clientMsgId=5), 422,
     "invalid_request"),
    ("missing body", "alice", payload(body=...), 422, "invalid_request"),
    ("sender in the request", "carol", payload(senderId="alice"), 422,
     "invalid_request"),
    ("$ key", "alice", payload(**{"$where": "1"}), 422, "invalid_request"),
    ("malformed JSON", "alice", '{"conversationId": "d:alice:bob", "body": ', 422,
     "invalid_request"),
    ("JSON array", "alice", "[1, 2]", 422, "invalid_request"),
    ("JSON nested past the parser", "alice", "[" * 10000 + "]" * 10000, 422,
     "invalid_request"),
    ("empty request", "alice", "", 422, "invalid_request"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("sender", "request_body", "status", "code"),
    [case[1:] for case in BAD_SENDS],
    ids=[case[0] for case in BAD_SENDS],
)
async def test_refused_send_stores_nothing(
    client: httpx.AsyncClient,
    service: MailboxService,
    seeded: dict[str, Any],
    sender: str,
    request_body: str | dict[str, Any],
    status: int,
    code: str,
) -> None:
    headers = {**auth(sender), "Content-Type": "application/json"}
    content = (
        request_body if isinstance(request_body, str) else json.dumps(request_body)
    )
    response = await client.post("/api/messages", content=content, headers=headers)

    body = refused(response, status, code)
    if code == "message_too_large":
        assert body["size"] == 40_000
        assert body["limit"] == service.pipeline.max_body_bytes
    if code == "not_a_member":
        assert body["userId"] == "carol"
        assert body["conversationId"] == TEAM
    if status == 422:
        assert body["details"]
    assert await service.stores.messages.get_by_client_id("carol", "b") is None
    assert await service.stores.messages.get_by_client_id("alice", "b") is None
    assert await snapshot(service) == seeded


async def test_request_body_over_the_server_limit_is_refused(
    client: httpx.AsyncClient, service: MailboxService, seeded: dict[str, Any]
) -> None:
    huge = json.dumps(
        {"conversationId": AB, "body": "x" * (2 << 20), "clientMsgId": "b"}
    )
    response = await client.post(
        "/api/messages",
        content=huge,
        headers={**auth("alice"), "Content-Type": "application/json"},
    )
    refused(response, 413, "request_too_large")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"x" * 65536

    streamed = await client.post(
        "/api/messages", content=chunks(), headers=auth("alice")
    )
    refused(streamed, 413, "request_too_large")
    assert await snapshot(service) == seeded


# -- sync, lists and reads: bad input ----------------------------------------------


BAD_SYNCS: list[tuple[str, str, dict[str, Any], int, str]] = [
    ("negative fromSequence", "alice", {"conversationId": AB, "fromSequence": -1},
     400, "invalid_range"),
    ("limit 0", "alice", {"conversationId": AB, "limit": 0}, 400, "invalid_range"),
    ("limit 1001", "alice", {"conversationId": AB, "limit": 1001}, 400,
     "invalid_range"),
    ("huge fromSequence", "alice", {"conversationId": AB, "fromSequence": 10**30},
     400, "invalid_range"),
    ("text fromSequence", "alice", {"conversationId": AB, "fromSequence": "one"},
     422, "invalid_request"),
    ("missing conversation", "alice", {}, 422, "invalid_request"),
    ("malformed conversation", "alice", {"conversationId": "alice"}, 400,
     "invalid_id"),
    ("operator conversation", "alice", {"conversationId": '{"$ne": ""}'}, 400,
     "invalid_id"),
    ("another's conversation", "carol", {"conversationId": AB}, 403,
     "not_a_member"),
    ("naming another user", "carol", {"conversationId": TEAM, "userId": "bob"},
     403, "not_a_member"),
    ("unknown group", "alice", {"conversationId": "g:nope"}, 404,
     "unknown_conversation"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("user", "params", "status", "code"),
    [case[1:] for case in BAD_SYNCS],
    ids=[case[0] for case in BAD_SYNCS],
)
async def test_refused_sync(
    client: httpx.AsyncClient,
    service: MailboxService,
    seeded: dict[str, Any],
    user: str,
    params: dict[str, Any],
    status: int,
    code: str,
) -> None:
    response = await client.get("/api/sync", params=params, headers=auth(user))
    body = refused(response, status, code)
    if code == "invalid_range":
        assert body["field"] in ("fromSequence", "limit")
    assert await snapshot(service) == seeded


async def test_lists_and_reads_refuse_bad_input(
    client: httpx.AsyncClient, service: MailboxService, seeded: dict[str, Any]
) -> None:
    read = f"/api/conversations/{AB}/read"
    members = "/api/groups/team/members"
    calls: list[tuple[str, str, dict[str, Any], int, str]] = [
        ("GET", "/api/conversations", {"since": -1}, 400, "invalid_range"),
        ("GET", "/api/conversations", {"limit": 0}, 400, "invalid_range"),
        ("GET", "/api/conversations", {"limit": 1001}, 400, "invalid_range"),
        ("GET", "/api/notifications", {"after": -1}, 400, "invalid_range"),
        ("GET", "/api/notifications", {"limit": "x"}, 422, "invalid_request"),
        ("POST", read, {"readSeq": -1}, 400, "invalid_range"),
        ("POST", read, {"readSeq": "1"}, 422, "invalid_request"),
        ("POST", read, {"readSeq": 1.5}, 422, "invalid_request"),
        ("POST", read, {"readSeq": True}, 422, "invalid_request"),
        ("POST", read, {"readSeq": 1, "userId": "bob"}, 422, "invalid_request"),
        ("POST", "/api/conversations/d:alice:carol/read", {"readSeq": 1}, 404,
         "not_found"),
        ("POST", "/api/conversations/nope/read", {"readSeq": 1}, 400, "invalid_id"),
        ("POST", "/api/groups", {"groupId": {"$ne": ""}}, 422, "invalid_request"),
        ("POST", "/api/groups", {"groupId": "$x"}, 400, "invalid_id"),
        ("POST", "/api/groups", {"groupId": "ok", "members": ["$ne"]}, 400,
         "invalid_id"),
        ("POST", "/api/groups", {"groupId": "ok", "members": [1]}, 422,
         "invalid_request"),
        ("POST", "/api/groups", {"groupId": "ok", "name": "n" * 101}, 400,
         "invalid_request"),
        ("POST", "/api/groups", {"groupId": "ok", "ownerId": "bob"}, 422,
         "invalid_request"),
        ("POST", members, {"add": ["x"], "remove": ["x"]}, 400, "invalid_request"),
        ("POST", members, {"add": "bob"}, 422, "invalid_request"),
        ("GET", "/api/groups/$where", {}, 400, "invalid_id"),
        ("PATCH", "/api/messages/$where", {"body": "x"}, 400, "invalid_id"),
        ("POST", "/api/login", {"userId": "$ne"}, 400, "invalid_id"),
        ("POST", "/api/login", {"userId": {"$ne": ""}}, 422, "invalid_request"),
        ("GET", "/api/nothing-here", {}, 404, "not_found"),
        ("PUT", "/api/messages", {}, 405, "method_not_allowed"),
    ]  # fmt: skip
    for method, path, data, status, code in calls:
        if method == "GET":
            response = await client.get(path, params=data, headers=auth("alice"))
        else:
            response = await client.request(
                method, path, json=data, headers=auth("alice")
            )
        refused(response, status, code)
    assert await snapshot(service) == seeded
    # A refused group id created nothing.
    assert [g.group_id for g in await service.directory.groups_of("alice")] == ["team"]


async def test_nobody_acts_as_another_user(
    client: httpx.AsyncClient, service: MailboxService, seeded: dict[str, Any]
) -> None:
    # Query fields naming a user are not parameters: the token's user is used.
    mine = await client.get(
        "/api/conversations", params={"userId": "bob"}, headers=auth("carol")
    )
    assert mine.json()["conversations"] == []
    page = await client.get(
        "/api/sync",
        params={"conversationId": AB, "userId": "alice"},
        headers=auth("carol"),
    )
    refused(page, 403, "not_a_member")
    # A token for alice with bob's name in front is refused.
    alice_token = TokenSigner(SECRET).token("alice")
    forged = "bob." + alice_token.split(".", 1)[1]
    refused(
        await client.get(
            "/api/conversations", headers={"Authorization": f"Bearer {forged}"}
        ),
        401,
        "unauthorized",
    )
    assert await snapshot(service) == seeded


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer nonsense"},
        {"Authorization": "Bearer alice.0000"},
        {"Authorization": f"Bearer {TokenSigner('other-secret').token('alice')}"},
        {"Authorization": f"Basic {TokenSigner(SECRET).token('alice')}"},
    ],
    ids=["missing", "empty", "garbage", "bad-signature", "other-secret", "basic"],
)
async def test_missing_or_bad_token_is_401(
    client: httpx.AsyncClient,
    service: MailboxService,
    seeded: dict[str, Any],
    headers: dict[str, str],
) -> None:
    calls = [
        client.get("/api/conversations", headers=headers),
        client.get("/api/sync", params={"conversationId": AB}, headers=headers),
        client.post(
            "/api/messages",
            json={"conversationId": AB, "body": "x", "clientMsgId": "b"},
            headers=headers,
        ),
        client.post(
            f"/api/conversations/{AB}/read", json={"readSeq": 1}, headers=headers
        ),
        client.post("/api/groups", json={"groupId": "g2"}, headers=headers),
        client.get("/api/groups", headers=headers),
        client.get("/api/notifications", headers=headers),
    ]
    for response in await asyncio.gather(*calls):
        refused(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
    assert await snapshot(service) == seeded


async def test_transient_store_errors_answer_503(
    client: httpx.AsyncClient, service: MailboxService, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def down(*args: object) -> None:
        raise TransientStoreError("the conversation store is unreachable")

    monkeypatch.setattr(service.stores.conversations, "list_changed", down)
    response = await client.get("/api/conversations", headers=auth("alice"))
    refused(response, 503, "store_unavailable")
    assert response.headers["retry-after"] == "1"


WEIRD_VALUES: list[Any] = [
    None,
    True,
    -1,
    2**70,
    1.5,
    "",
    "$",
    "x" * 300,
    [],
    {},
    {"$ne": 1},
    "\ud800",
]


async def test_no_client_input_gets_a_500(
    client: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    alice = {**auth("alice"), "Content-Type": "application/json"}
    bodies = {
        "/api/login": ["userId"],
        "/api/messages": ["conversationId", "to", "body", "clientMsgId"],
        f"/api/conversations/{AB}/read": ["readSeq"],
        "/api/groups": ["groupId", "name", "members"],
        "/api/groups/team/members": ["add", "remove"],
    }
    for path, fields in bodies.items():
        for name in fields:
            for value in WEIRD_VALUES:
                payload = {"conversationId": AB, "body": "x", "clientMsgId": "w"}
                if path != "/api/messages":
                    payload = {}
                payload[name] = value
                content = json.dumps(payload).encode("utf-8", "surrogatepass")
                response = await client.post(path, content=content, headers=alice)
                assert response.status_code < 500, (path, name, value, response.text)
                assert "error" in response.json() or response.status_code < 300
    for value in ["-1", "1e3", "0x10", "", "99999999999999999999999", "%00", "$ne"]:
        for path, param in [
            ("/api/sync", "fromSequence"),
            ("/api/sync", "limit"),
            ("/api/sync", "conversationId"),
            ("/api/conversations", "since"),
            ("/api/notifications", "after"),
        ]:
            params = {"conversationId": AB, param: value}
            response = await client.get(path, params=params, headers=alice)
            assert response.status_code < 500, (path, param, value, response.text)


# -- C14 over a real server: oversized body while the receiver is connected ------------


async def test_c14_oversized_body_with_receiver_connected() -> None:
    service = MailboxService(Stores.memory(), LocalBus(), MemoryPresence())
    app = create_app(service, secret=SECRET)
    async with (
        BackgroundServer(app) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        token = TokenSigner(SECRET).token("bob")
        async with websockets.connect(f"{server.ws_url}/ws?token={token}") as bob:
            assert json.loads(await bob.recv())["type"] == "hello"

            big = await http.post(
                "/api/messages",
                json={"to": "bob", "body": "x" * 65536, "clientMsgId": "big"},
                headers=auth("alice"),
            )
            body = refused(big, 413, "message_too_large")
            assert body["size"] == 65536
            assert await service.stores.mailboxes.last_seq(AB) == 0
            assert (
                await service.stores.messages.get_by_client_id("alice", "big") is None
            )
            assert await service.stores.conversations.get("bob", AB) is None

            small = await http.post(
                "/api/messages",
                json={"to": "bob", "body": "after the big one", "clientMsgId": "ok"},
                headers=auth("alice"),
            )
            assert small.status_code == 201
            frame = json.loads(await asyncio.wait_for(bob.recv(), 5))
            assert frame["type"] == "message"
            assert frame["message"]["body"] == "after the big one"
            assert frame["message"]["seq"] == 1
            await bob.send(json.dumps({"type": "ping"}))
            assert json.loads(await asyncio.wait_for(bob.recv(), 5)) == {"type": "pong"}


# -- the examples run ----------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_example_chat_server_serves_the_api_and_its_own_route() -> None:
    app = await load_example("chat_server.py").build_app(None)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as http,
    ):
        login = await http.post("/api/login", json={"userId": "alice"})
        headers = {"Authorization": f"Bearer {login.json()['token']}"}
        sent = await http.post(
            "/api/messages",
            json={"to": "bob", "body": "hi", "clientMsgId": "c-1"},
            headers=headers,
        )
        assert sent.status_code == 201
        await app.state.service.bus.drain()
        stats = (await http.get("/api/stats/today")).json()
        assert stats["messages"] == {"direct": 1}
        assert stats["activeUsers"] == 1


async def test_example_custom_directory_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    await load_example("custom_directory.py").main()
    out = capsys.readouterr().out
    assert "ada reads: ['COBOL at 3?']" in out
    assert "refused: 'linus' is not a member of 'g:compilers'" in out
    assert "refused: unknown conversation 'd:ada:mallory'" in out


async def test_body_that_is_not_utf8_is_refused_like_malformed_json(
    client: httpx.AsyncClient, service: MailboxService, seeded: dict[str, Any]
) -> None:
    response = await client.post(
        "/api/messages",
        content=b'{"to": "bob", "body": "\xff", "clientMsgId": "b"}',
        headers={**auth("alice"), "Content-Type": "application/json"},
    )
    body = refused(response, 422, "invalid_request")
    assert body["details"]
    assert await snapshot(service) == seeded


async def test_sync_with_a_cursor_ahead_reports_the_real_last_seq(
    client: httpx.AsyncClient, service: MailboxService
) -> None:
    sent = await client.post(
        "/api/messages",
        json={"to": "bob", "body": "hi", "clientMsgId": "ahead-1"},
        headers=auth("alice"),
    )
    conversation = sent.json()["message"]["conversationId"]
    page = await client.get(
        "/api/sync",
        params={"conversationId": conversation, "fromSequence": 500},
        headers=auth("bob"),
    )
    assert page.status_code == 200
    assert page.json()["messages"] == []
    assert page.json()["lastSeq"] == 1
