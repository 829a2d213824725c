"""Push latency and send throughput of the example server, by bus.

``python -m bench push [--messages 5000] [--pairs 8] [--rounds 5]
[--rocketmq ENDPOINTS]``, RocketMQ's endpoints coming from
``FLEETS_TEST_ROCKETMQ_ENDPOINTS`` by default (without them its line is
skipped). It prints one line per bus, then the ratios::

    bus=local messages=5000 p50_ms=.. p99_ms=.. min_ms=.. max_ms=..
    send_p50_ms=.. sends_per_s=.. send_errors=0 late=0 lost=0 duplicates=0
    publish_failures=0
    bus=rocketmq messages=5000 p50_ms=.. (the same fields)
    bus=none messages=5000 send_p50_ms=.. sends_per_s=.. send_errors=0
    ratios p50_rocketmq/local=.. p99_rocketmq/local=.. sends_local/none=..
    sends_rocketmq/none=..

Three example servers run in this process (`BackgroundServer` on
127.0.0.1) over in-memory stores, so that no store cost hides the bus's:

* local: the in-process `LocalBus` of `open_demo_service`;
* rocketmq: a `RocketMQBus` on the broker, with a push group of its own
  (``fleets-push-bench-…``), deleted at the end when the name server is
  known (``--rocketmq-name-server``, by default
  ``FLEETS_TEST_ROCKETMQ_NAME_SERVER``);
* none: a bus whose publish does nothing, so the same sends without the
  publish, and without the push work that follows it.

The analytics consumer is off on all three: on a shared broker its group is
shared with the other processes' consumers.

Each server has ``--pairs`` senders and as many receivers, one direct chat
per pair. A receiver holds a WebSocket (the ``websockets`` package) and
notes the arrival of each message frame as it reads it; its sender sends
over HTTP (httpx), one message after the other, so at most ``--pairs``
sends are in flight. A message's push latency (``p50_ms``, ``p99_ms``...)
runs from just before its ``POST /api/messages`` to the arrival of its
frame at the receiver, so a push may arrive before the send's answer
(``send_p50_ms``, from the same start). Sends per second is the messages
over the time the senders took, from the first request to the last answer:
a closed loop, so whatever a send waits for (the broker's answer to a
publish, for one) lowers it.

The buses take turns: each of ``--rounds`` rounds sends ``--messages /
--rounds`` messages through each server, then waits (up to ``--wait``
seconds) for their pushes before the next server's turn, so machine noise
and stores growing during the run hit the three alike. Before that, each
server is warmed up (connections, caches, the broker's consumers polling)
with ``--warmup`` rounds of one message per pair whose pushes all arrive.
A push still missing after its round's wait is waited for up to ``--late``
seconds more at the end: one that comes then counts in ``late`` (and in the
latencies), one that never comes in ``lost``; a second frame for the same
message counts in ``duplicates``. Clients, servers and the RocketMQ client
share one event loop and process, and with several pairs that loop is
busy, so the latencies include its queueing; compare the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import statistics
import time
import urllib.parse
import uuid
from collections.abc import Sequence

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from fleets_mailbox.adapters.memory import MemoryPresence
from fleets_mailbox.protocols import BusEvent, EventHandler
from fleets_mailbox.server import BackgroundServer, create_app, open_demo_service
from fleets_mailbox.service import MailboxService, Stores

#: Seconds to wait for a warm-up round's pushes before sending another.
_WARMUP_WAIT_S = 5.0

#: Seconds a server's warm-up (and its consumers' start) may take.
_WARMUP_LIMIT_S = 60.0


async def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench push")
    parser.add_argument("--messages", type=int, default=5000, help="per bus")
    parser.add_argument("--pairs", type=int, default=8, help="senders (receivers)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=5, help="rounds")
    parser.add_argument(
        "--wait", type=float, default=10.0, help="seconds for a round's pushes"
    )
    parser.add_argument(
        "--late", type=float, default=40.0, help="seconds more for missing pushes"
    )
    parser.add_argument(
        "--rocketmq",
        default=os.environ.get("FLEETS_TEST_ROCKETMQ_ENDPOINTS"),
        help="host:port of RocketMQ's gRPC proxy",
    )
    parser.add_argument(
        "--rocketmq-name-server",
        default=os.environ.get("FLEETS_TEST_ROCKETMQ_NAME_SERVER"),
        help="host:port of RocketMQ's name server; the bench's push group is "
        "deleted at the end with it",
    )
    args = parser.parse_args(argv)
    if min(args.messages, args.pairs, args.rounds) < 1 or args.warmup < 0:
        parser.error("--messages, --pairs and --rounds must be >= 1, --warmup >= 0")

    run_id = uuid.uuid4().hex[:8]
    buses = ["local", "rocketmq", "none"]
    if not args.rocketmq:
        buses.remove("rocketmq")
        print(
            "bus=rocketmq skipped: set FLEETS_TEST_ROCKETMQ_ENDPOINTS "
            "(scripts/services-rocketmq.sh up prints it) or --rocketmq",
            flush=True,
        )

    async with contextlib.AsyncExitStack() as stack:
        servers: list[_Server] = []
        for bus in buses:
            server = await _Server.open(
                bus, run_id, args.pairs, args.rocketmq, args.rocketmq_name_server, stack
            )
            if not await server.warm_up(args.warmup):
                print(
                    f"bus={bus}: the warm-up pushes did not arrive within "
                    f"{_WARMUP_LIMIT_S:.0f} s"
                )
                return 1
            servers.append(server)

        for round_ in range(args.rounds):
            count = args.messages // args.rounds
            if round_ < args.messages % args.rounds:
                count += 1
            for server in servers:
                await server.send(count)
                await server.wait_for_pushes(args.wait)
        # Longer than RocketMQ's invisible duration (30 s), after which it
        # delivers again a message received but not acknowledged.
        for server in servers:
            await server.wait_for_pushes(args.late)

        for server in servers:
            print(server.line(), flush=True)
        print(_ratios({s.bus: s for s in servers}), flush=True)
    return 0


class _NullBus:
    """A bus that carries nothing: its publish returns at once."""

    async def publish(self, event: BusEvent) -> None:
        """Drops the event."""

    async def subscribe(
        self, topic: str, group: str, handler: EventHandler
    ) -> _NullSubscription:
        return _NullSubscription()

    async def close(self) -> None:
        """Nothing to close."""


class _NullSubscription:
    async def close(self) -> None:
        """Nothing to stop."""


class _Server:
    """One example server on one bus, its senders, receivers and measures."""

    def __init__(
        self,
        bus: str,
        service: MailboxService,
        http: httpx.AsyncClient,
        senders: list[str],
        receivers: list[str],
        tokens: dict[str, str],
    ) -> None:
        self.bus = bus
        self.service = service
        self.http = http
        self.senders = senders
        self.receivers = receivers
        self.tokens = tokens
        self.expects_pushes = bus != "none"

        self.started: dict[str, float] = {}  # client message id -> request start
        self.answered: dict[str, float] = {}  # client message id -> send answer
        self.arrived: dict[str, float] = {}  # client message id -> frame arrival
        self.measured: list[str] = []  # client message ids sent with success
        self.overdue: set[str] = set()  # measured, not pushed within --wait
        self.duplicates = 0
        self.send_errors = 0
        self.send_seconds = 0.0
        self._arrival = asyncio.Event()
        self._next = 0

    @classmethod
    async def open(
        cls,
        bus: str,
        run_id: str,
        pairs: int,
        rocketmq: str | None,
        rocketmq_name_server: str | None,
        stack: contextlib.AsyncExitStack,
    ) -> _Server:
        """Starts a server on ``bus`` and connects its clients.

        What it opens is closed when ``stack`` closes.
        """
        service: MailboxService
        if bus == "none":
            service = MailboxService(
                Stores.memory(), _NullBus(), MemoryPresence(), analytics=False
            )
        elif bus == "rocketmq":
            service = await open_demo_service(
                None,
                rocketmq_endpoints=rocketmq,
                rocketmq_name_server=rocketmq_name_server,
                node_id=f"bench-{run_id}",
                analytics=False,
            )
        else:
            service = await open_demo_service(None, analytics=False)
        # The app's lifespan starts the service and closes it when the
        # server stops.
        server = BackgroundServer(create_app(service, secret=secrets.token_hex(16)))
        try:
            await server.start()
        except BaseException:
            await service.close()
            raise
        stack.push_async_callback(server.stop)
        await _wait_until_polling(service)

        http = await stack.enter_async_context(
            httpx.AsyncClient(
                base_url=server.url,
                limits=httpx.Limits(
                    max_connections=pairs, max_keepalive_connections=pairs
                ),
                timeout=30.0,
            )
        )
        senders = [f"bench-{run_id}-{bus}-s{i}" for i in range(pairs)]
        receivers = [f"bench-{run_id}-{bus}-r{i}" for i in range(pairs)]
        tokens = {}
        for user in senders + receivers:
            response = await http.post("/api/login", json={"userId": user})
            response.raise_for_status()
            tokens[user] = str(response.json()["token"])

        opened = cls(bus, service, http, senders, receivers, tokens)
        for user in receivers:
            url = f"{server.ws_url}/ws?token={urllib.parse.quote(tokens[user])}"
            socket = await stack.enter_async_context(
                connect(url, max_size=None, open_timeout=20)
            )
            async with asyncio.timeout(20):
                hello = json.loads(await socket.recv())
            if hello.get("type") != "hello":
                raise RuntimeError(f"{user}: the first frame is not hello: {hello}")
            # The server registered the connection before its hello: every
            # message committed from now on is pushed to it.
            reader = asyncio.create_task(opened._read(socket))
            stack.push_async_callback(_cancel, reader)
        return opened

    async def _read(self, socket: ClientConnection) -> None:
        with contextlib.suppress(WebSocketException):
            async for raw in socket:
                now = time.perf_counter()
                frame = json.loads(raw)
                if frame.get("type") != "message":
                    continue
                key = frame["message"]["clientMsgId"]
                if key in self.arrived:
                    self.duplicates += 1
                else:
                    self.arrived[key] = now
                    self._arrival.set()

    async def warm_up(self, rounds: int) -> bool:
        """Sends rounds of one message per pair until ``rounds`` are all pushed.

        Returns False if that takes longer than `_WARMUP_LIMIT_S`.
        """
        deadline = time.monotonic() + _WARMUP_LIMIT_S
        done = 0
        while done < rounds:
            keys = await asyncio.gather(
                *(self._send_one(pair, "warmup") for pair in range(len(self.senders)))
            )
            sent = [key for key in keys if key is not None]
            if not self.expects_pushes or await self._pushed(sent, _WARMUP_WAIT_S):
                done += 1
            elif time.monotonic() > deadline:
                return False
        return True

    async def send(self, count: int) -> None:
        """Sends ``count`` messages spread over the pairs, and times them."""
        pairs = len(self.senders)

        async def sender(pair: int) -> None:
            for _ in range(pair, count, pairs):
                key = await self._send_one(pair, self.bus)
                if key is not None:
                    self.measured.append(key)

        start = time.perf_counter()
        await asyncio.gather(*(sender(pair) for pair in range(pairs)))
        self.send_seconds += time.perf_counter() - start

    async def _send_one(self, pair: int, prefix: str) -> str | None:
        """Sends one message of ``pair``; returns its client message id if sent."""
        self._next += 1
        key = f"{prefix}-{self._next}"
        sender = self.senders[pair]
        self.started[key] = time.perf_counter()
        response = await self.http.post(
            "/api/messages",
            json={
                "to": self.receivers[pair],
                "body": f"hello {key}",
                "clientMsgId": key,
            },
            headers={"Authorization": f"Bearer {self.tokens[sender]}"},
        )
        if response.status_code != 201:
            self.send_errors += 1
            return None
        self.answered[key] = time.perf_counter()
        return key

    async def wait_for_pushes(self, seconds: float) -> None:
        """Waits until every measured message is pushed, ``seconds`` at most."""
        if self.expects_pushes and not await self._pushed(self.measured, seconds):
            self.overdue.update(k for k in self.measured if k not in self.arrived)

    async def _pushed(self, keys: Sequence[str], seconds: float) -> bool:
        """Returns whether every one of ``keys`` arrived within ``seconds``."""
        deadline = time.monotonic() + seconds
        pending = [key for key in keys if key not in self.arrived]
        while pending:
            self._arrival.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._arrival.wait()
            pending = [key for key in pending if key not in self.arrived]
        return True

    def line(self) -> str:
        """Returns the line of figures of this bus."""
        send_p50, _ = _percentiles(self._times_ms(self.answered))
        sends = (
            f"send_p50_ms={send_p50:.2f} sends_per_s={self.sends_per_s:.0f} "
            f"send_errors={self.send_errors}"
        )
        if not self.expects_pushes:
            return f"bus={self.bus} messages={len(self.measured)} {sends}"
        latencies = self.latencies_ms()
        p50, p99 = _percentiles(latencies)
        lost = len(self.measured) - len(latencies)
        late = sum(1 for key in self.overdue if key in self.arrived)
        publish_failures = getattr(self.service.bus, "publish_failures", 0)
        return (
            f"bus={self.bus} messages={len(self.measured)} "
            f"p50_ms={p50:.2f} p99_ms={p99:.2f} "
            f"min_ms={min(latencies, default=float('nan')):.2f} "
            f"max_ms={max(latencies, default=float('nan')):.2f} {sends} "
            f"late={late} lost={lost} duplicates={self.duplicates} "
            f"publish_failures={publish_failures}"
        )

    def latencies_ms(self) -> list[float]:
        """Returns the push latency of each measured message that arrived."""
        return self._times_ms(self.arrived)

    def _times_ms(self, ends: dict[str, float]) -> list[float]:
        """Returns the ms from each measured send's start to its time in ``ends``."""
        return [
            (ends[key] - self.started[key]) * 1000
            for key in self.measured
            if key in ends
        ]

    @property
    def sends_per_s(self) -> float:
        return len(self.measured) / self.send_seconds if self.send_seconds else 0.0


async def _wait_until_polling(service: MailboxService) -> None:
    """Waits (a while at most) until the bus's consumers are polling, if it polls."""
    wait_until_polling = getattr(service.bus, "wait_until_polling", None)
    if wait_until_polling is not None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_WARMUP_LIMIT_S):
                await wait_until_polling()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _percentiles(values: list[float]) -> tuple[float, float]:
    """Returns the median and the 99th percentile, NaN for too few values."""
    if len(values) < 2:
        return float("nan"), float("nan")
    cuts = statistics.quantiles(values, n=100)
    return cuts[49], cuts[98]


def _ratios(servers: dict[str, _Server]) -> str:
    none = servers["none"].sends_per_s
    parts = ["ratios"]
    if "rocketmq" in servers:
        local_p50, local_p99 = _percentiles(servers["local"].latencies_ms())
        p50, p99 = _percentiles(servers["rocketmq"].latencies_ms())
        parts += [f"p50_rocketmq/local={p50 / local_p50:.2f}"]
        parts += [f"p99_rocketmq/local={p99 / local_p99:.2f}"]
    for bus in ("local", "rocketmq"):
        if bus in servers:
            parts.append(f"sends_{bus}/none={servers[bus].sends_per_s / none:.2f}")
    return " ".join(parts)
