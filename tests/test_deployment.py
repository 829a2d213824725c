"""Two example-server processes on shared stores and a real RocketMQ.

Each process is ``fleets-mailbox demo`` with every store in one new
MariaDB database (``--sql``) and events on the RocketMQ proxy of
``FLEETS_TEST_ROCKETMQ_ENDPOINTS`` (``--rocketmq``), with a push group of
its own. A user connected to process A sends; users connected to process B
get the push. Skipped, with the reason, unless both servers are set.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from conftest import (
    SecondBroker,
    create_mysql_database,
    drop_mysql_database,
    mysql_url,
    rocketmq_endpoints,
)

pytestmark = [pytest.mark.mysql, pytest.mark.rocketmq, pytest.mark.slow]

#: How long a push may take to cross from one process to the other.
PUSH_WAIT_S = 20.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Node:
    """One ``fleets-mailbox demo`` process."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, url: str):
        self.name = name
        self.process = process
        self.url = url

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.process.wait(), timeout=30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def start_node(name: str, sql: str, endpoints: str, secret: str) -> Node:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from fleets_mailbox.cli import main; raise SystemExit(main())",
        "demo",
        "--port",
        str(port),
        "--sql",
        sql,
        "--rocketmq",
        endpoints,
        "--node-id",
        name,
        "--secret",
        secret,
        "--log-level",
        "warning",
        stdout=asyncio.subprocess.DEVNULL,
    )
    node = Node(name, process, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(base_url=node.url) as http:
        while True:
            if process.returncode is not None:
                raise AssertionError(f"{name} exited with {process.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/healthz")).status_code == 200:
                    return node
            if time.monotonic() > deadline:
                await node.stop()
                raise AssertionError(f"{name} did not answer within 60 s")
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def deployment(endpoints: str) -> AsyncIterator[tuple[Node, Node]]:
    """Two demo processes on a new MariaDB database and RocketMQ at ``endpoints``."""
    server = mysql_url()
    sql = await create_mysql_database(server)
    secret = secrets.token_hex(16)
    tag = secrets.token_hex(3)
    started: list[Node] = []
    try:
        # One after the other: the first migrates the new database.
        for name in ("a", "b"):
            started.append(
                await start_node(f"test-{tag}-{name}", sql, endpoints, secret)
            )
        yield started[0], started[1]
    finally:
        await asyncio.gather(*(n.stop() for n in started))
        await drop_mysql_database(server, sql)


@pytest.fixture
async def nodes() -> AsyncIterator[tuple[Node, Node]]:
    async with deployment(rocketmq_endpoints()) as pair:
        yield pair


class User:
    """A user logged in on one node, with its WebSocket."""

    def __init__(self, user_id: str, node: Node, http: httpx.AsyncClient) -> None:
        self.user_id = user_id
        self.node = node
        self.http = http
        self.token = ""
        self.socket: ClientConnection | None = None
        self.frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        # Pushes come in no set order: one read while waiting for another
        # is kept here.
        self.seen: set[str] = set()
        self._reader: asyncio.Task[None] | None = None

    async def login(self) -> None:
        answer = await self.http.post(
            f"{self.node.url}/api/login", json={"userId": self.user_id}
        )
        answer.raise_for_status()
        self.token = answer.json()["token"]
        ws = self.node.url.replace("http", "ws", 1)
        self.socket = await connect(f"{ws}/ws?token={self.token}")
        hello = json.loads(await self.socket.recv())
        assert hello["type"] == "hello"
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.socket is not None
        with contextlib.suppress(Exception):
            async for frame in self.socket:
                await self.frames.put(json.loads(frame))

    async def call(self, method: str, path: str, **options: Any) -> Any:
        answer = await self.http.request(
            method,
            f"{self.node.url}{path}",
            headers={"Authorization": f"Bearer {self.token}"},
            **options,
        )
        assert answer.status_code < 300, answer.text
        return answer.json()

    async def send(self, conversation: dict[str, str], body: str) -> dict[str, Any]:
        answer = await self.call(
            "POST",
            "/api/messages",
            json={**conversation, "body": body, "clientMsgId": secrets.token_hex(6)},
        )
        message: dict[str, Any] = answer["message"]
        return message

    async def pushed(self, message_id: str, wait: float = PUSH_WAIT_S) -> bool:
        """Waits for the push of ``message_id``; False if it does not come."""
        try:
            async with asyncio.timeout(wait):
                while message_id not in self.seen:
                    frame = await self.frames.get()
                    if frame.get("type") == "message":
                        self.seen.add(frame["message"]["messageId"])
                return True
        except TimeoutError:
            return False

    async def close(self) -> None:
        if self.socket is not None:
            await self.socket.close()
        if self._reader is not None:
            await self._reader


async def pushes_flow(sender: User, receiver: User, within: float) -> bool:
    """Sends until one message reaches ``receiver`` by push, for ``within`` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        probe = await sender.send({"to": receiver.user_id}, "are you there?")
        if await receiver.pushed(probe["messageId"], wait=3):
            return True
    return False


async def test_a_push_crosses_from_one_process_to_the_other(
    nodes: tuple[Node, Node],
) -> None:
    a, b = nodes
    async with httpx.AsyncClient(timeout=30) as http:
        ann, bob = User("ann", a, http), User("bob", b, http)
        carol, dave = User("carol", a, http), User("dave", b, http)
        users = [ann, bob, carol, dave]
        for user in users:
            await user.login()
        try:
            # A node's consumers may still be joining their groups.
            assert await pushes_flow(ann, bob, within=60), "B never got a push"

            # Direct, A to B, and B to A.
            to_bob = await ann.send({"to": "bob"}, "hello from A")
            assert await bob.pushed(to_bob["messageId"])
            to_ann = await bob.send({"to": "ann"}, "hello from B")
            assert await ann.pushed(to_ann["messageId"])

            # A group spread over both processes: every member gets it,
            # the sender too (on their other devices).
            group = await ann.call(
                "POST",
                "/api/groups",
                json={
                    "groupId": "crew",
                    "name": "Crew",
                    "members": ["bob", "carol", "dave"],
                },
            )
            conversation = {"conversationId": group["conversationId"]}
            sent = [await dave.send(conversation, f"group {i}") for i in range(5)]
            for user in users:
                for message in sent:
                    assert await user.pushed(message["messageId"]), user.user_id
            assert [m["seq"] for m in sent] == [1, 2, 3, 4, 5]

            # What was pushed is also what sync returns, on either process.
            page = await carol.call(
                "GET",
                "/api/sync",
                params={"conversationId": group["conversationId"]},
            )
            assert [m["messageId"] for m in page["messages"]] == [
                m["messageId"] for m in sent
            ]
        finally:
            for user in users:
                await user.close()


async def test_replay_across_two_processes(nodes: tuple[Node, Node]) -> None:
    from fleets_mailbox.replay import replay

    a, b = nodes
    report = await replay([a.url, b.url], messages=200, users=12, seed=11)
    assert report.sent == report.stored == 200
    assert (report.lost, report.duplicated, report.misordered) == (0, 0, 0)
    assert report.ok
    assert report.pushed > 0


async def test_a_replay_survives_the_broker_stopping_and_coming_back(
    tmp_path: Path,
) -> None:
    """C10, C11, C15 across processes: the bus goes away in mid-replay."""
    from fleets_mailbox.replay import replay

    rocketmq_endpoints()
    broker = SecondBroker(tmp_path / "services")
    await broker.run("up")
    try:
        async with deployment(broker.endpoints) as (a, b):
            # Long enough to outlast the broker's stop (15-20 s).
            replaying = asyncio.create_task(
                replay([a.url, b.url], messages=2000, users=20, seed=13)
            )
            await asyncio.sleep(3)
            await broker.run("down")
            assert not replaying.done(), "the replay ended before the broker stopped"
            await broker.run("up")
            report = await asyncio.wait_for(replaying, timeout=600)

            assert report.sent == report.stored == 2000
            assert (report.lost, report.duplicated, report.misordered) == (0, 0, 0)
            assert report.ok
            assert report.synced > 0, "nobody had to catch up: the outage missed"

            async with httpx.AsyncClient(timeout=30) as http:
                eve, fay = User("eve", a, http), User("fay", b, http)
                for user in (eve, fay):
                    await user.login()
                try:
                    assert await pushes_flow(eve, fay, within=90)
                    assert await pushes_flow(fay, eve, within=30)
                finally:
                    for user in (eve, fay):
                        await user.close()
    finally:
        await broker.run("down")
