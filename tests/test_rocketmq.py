"""`RocketMQBus` on the RocketMQ proxy of ``FLEETS_TEST_ROCKETMQ_ENDPOINTS``.

`MessageBusSuite` runs on the topic ``fleets-test-events`` (or the one of
``FLEETS_TEST_ROCKETMQ_TOPIC``), which must exist: gRPC clients cannot
create topics. The field cases C10 and C11 run with the real push consumer
on the event topics, C15 in the broker restart test, which starts a second
broker of its own with ``scripts/services-rocketmq.sh`` and stops it twice.
Skipped, with the reason, when the variable is unset.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import SecondBroker, rocketmq_endpoints, rocketmq_name_server
from fleets_mailbox import Stores
from fleets_mailbox.adapters._rocketmq_admin import subscription_groups, topic_names
from fleets_mailbox.adapters.memory import MemoryPresence
from fleets_mailbox.adapters.rocketmq import RocketMQBus, open_rocketmq_bus
from fleets_mailbox.events import PUSH_GROUP, message_event
from fleets_mailbox.model import direct_conversation
from fleets_mailbox.protocols import BusEvent, Connection, MessageBus
from fleets_mailbox.push import PushConsumer
from fleets_mailbox.testing import (
    MessageBusSuite,
    PipelineHarness,
    RecordingConnection,
)

ROOT = Path(__file__).resolve().parent.parent
TOPIC = os.environ.get("FLEETS_TEST_ROCKETMQ_TOPIC", "fleets-test-events")
LOGGER = "fleets_mailbox.adapters.rocketmq"

rocketmq = pytest.mark.rocketmq


@pytest.fixture(scope="session")
def test_topic() -> str:
    """Checks once, with the client's blocking calls, that the test topic exists."""
    import rocketmq as client

    endpoints = rocketmq_endpoints()
    configuration = client.ClientConfiguration(endpoints, client.Credentials())
    producer = client.Producer(configuration, (TOPIC,))
    probe = client.Message()
    probe.topic, probe.body, probe.keys = TOPIC, b'{"probe":true}', "probe"
    producer.startup()
    try:
        producer.send(probe)
    except Exception as exc:
        pytest.fail(
            f"cannot publish to {TOPIC} on {endpoints} ({exc}): create it with "
            f"FLEETS_ROCKETMQ_TOPICS={TOPIC} scripts/services-rocketmq.sh up"
        )
    finally:
        producer.shutdown()
    return TOPIC


def new_bus(endpoints: str, **options: Any) -> RocketMQBus:
    settings: dict[str, Any] = {"topics": (TOPIC,), "node_groups": ()}
    settings.update(options)
    return RocketMQBus(endpoints, **settings)


def unique(name: str) -> str:
    return f"fleets-test-{name}-{uuid.uuid4().hex[:12]}"


async def polling(bus: RocketMQBus) -> None:
    async with asyncio.timeout(20):
        await bus.wait_until_polling()


async def until(
    predicate: Callable[[], bool], seconds: float, what: str | Callable[[], str]
) -> None:
    """Waits until ``predicate()`` holds; ``what`` names it if it does not."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            said = what if isinstance(what, str) else what()
            raise AssertionError(f"{said}: not within {seconds} s")
        await asyncio.sleep(0.05)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ---------------------------------------------------------------- the suite


@rocketmq
class TestRocketMQBus(MessageBusSuite):
    delivery_timeout = 20.0
    redelivery_timeout = 30.0
    settle_seconds = 2.0

    @pytest.fixture(autouse=True)
    def _broker(self, test_topic: str) -> None:
        self._endpoints = rocketmq_endpoints()

    async def make_bus(self) -> MessageBus:
        bus = new_bus(self._endpoints)
        await bus.start()
        return bus

    async def subscribed(self, bus: MessageBus) -> None:
        assert isinstance(bus, RocketMQBus)
        await polling(bus)

    def topic(self) -> str:
        return TOPIC


# ---------------------------------------------------------------- events


@rocketmq
async def test_an_event_travels_with_its_tag_and_key(test_topic: str) -> None:
    import rocketmq as client

    endpoints = rocketmq_endpoints()
    group, run = unique("raw"), uuid.uuid4().hex
    configuration = client.ClientConfiguration(endpoints, client.Credentials())
    consumer = client.SimpleConsumer(
        configuration, group, {TOPIC: client.FilterExpression("*")}, await_duration=5
    )
    await asyncio.to_thread(consumer.startup)
    bus = new_bus(endpoints)

    async def receive() -> list[Any]:
        for _ in range(20):
            try:
                return list(await asyncio.to_thread(consumer.receive, 32, 10))
            except Exception:  # the startup race, 50001
                await asyncio.sleep(0.2)
        raise AssertionError("the raw consumer cannot receive")

    try:
        await receive()  # sets the new group's place in the queues
        key = f"{run} spaced key ✓"
        await bus.publish(BusEvent(TOPIC, "group", key, {"run": run}))

        # A new group may first get the topic's older messages.
        found, deadline = None, time.monotonic() + 20
        while found is None and time.monotonic() < deadline:
            for message in await receive():
                if json.loads(message.body).get("run") == run:
                    found = message
    finally:
        await bus.close()
        await asyncio.to_thread(consumer.shutdown)

    assert found is not None
    assert found.tag == "group"
    # The broker splits keys at spaces; the exact key is a property.
    assert found.keys == set(key.split())
    assert found.properties["event_key"] == key
    assert json.loads(found.body) == {"run": run}


@rocketmq
async def test_a_node_group_is_per_node_and_a_role_group_is_shared(
    test_topic: str,
) -> None:
    endpoints, run = rocketmq_endpoints(), uuid.uuid4().hex
    push, analytics = unique("push"), unique("analytics")
    buses = [
        new_bus(endpoints, node_id=f"{name}-{run[:8]}", node_groups=(push,))
        for name in ("web1", "web2")
    ]
    seen: dict[str, list[str]] = {}

    def recorder(name: str) -> Any:
        seen[name] = []

        async def handle(event: BusEvent) -> None:
            if event.payload.get("run") == run:
                seen[name].append(event.key)

        return handle

    try:
        for i, bus in enumerate(buses):
            await bus.subscribe(TOPIC, push, recorder(f"push{i}"))
            await bus.subscribe(TOPIC, analytics, recorder(f"analytics{i}"))
        for bus in buses:
            await polling(bus)
        keys = sorted(f"{run}-{i:02d}" for i in range(12))
        for key in keys:
            await buses[0].publish(BusEvent(TOPIC, "direct", key, {"run": run}))

        await until(
            lambda: (
                sorted(set(seen["push0"])) == keys
                and sorted(set(seen["push1"])) == keys
                and sorted(set(seen["analytics0"] + seen["analytics1"])) == keys
            ),
            20,
            lambda: f"every node's push and one analytics delivery per event {seen}",
        )
        await asyncio.sleep(2)
    finally:
        for bus in buses:
            await bus.close()

    assert buses[0].group_name(push) == f"{push}-web1-{run[:8]}"
    assert buses[0].group_name(analytics) == analytics
    assert sorted(seen["analytics0"] + seen["analytics1"]) == keys
    assert not set(seen["analytics0"]) & set(seen["analytics1"])


@rocketmq
@pytest.mark.slow
async def test_a_node_group_outlives_its_bus(test_topic: str) -> None:
    # Without a name server the bus cannot delete a group (the gRPC proxy
    # has no call for it), so a node that comes back with the same node_id
    # joins its old group again; what that group acknowledged is not
    # delivered again. (Events published
    # while no member polled may be skipped: a queue the group never read
    # starts at its end, see initPopOffsetByCheckMsgInMem in docs.)
    # Marked slow: see the wait below.
    endpoints, run = rocketmq_endpoints(), uuid.uuid4().hex
    push, node_id = unique("push"), f"web-{run[:8]}"
    seen: list[str] = []

    async def record(event: BusEvent) -> None:
        if event.payload.get("run") == run:
            seen.append(event.key)

    first = new_bus(endpoints, node_id=node_id, node_groups=(push,))
    await first.subscribe(TOPIC, push, record)
    await polling(first)
    await first.publish(BusEvent(TOPIC, "direct", "before", {"run": run}))
    await until(lambda: seen == ["before"], 20, "the first delivery")
    await first.close()

    second = new_bus(endpoints, node_id=node_id, node_groups=(push,))
    try:
        assert second.group_name(push) == first.group_name(push)
        await second.subscribe(TOPIC, push, record)
        await polling(second)
        await second.publish(BusEvent(TOPIC, "direct", "after", {"run": run}))
        # The first bus's last long poll may have taken "after" on the
        # proxy; the broker then hands it out again when its invisible
        # duration (30 s) ends.
        await until(lambda: "after" in seen, 60, "the delivery after coming back")
        await asyncio.sleep(2)
    finally:
        await second.close()

    assert seen == ["before", "after"]


@rocketmq
async def test_close_deletes_the_node_groups_given_the_name_server(
    test_topic: str,
) -> None:
    endpoints, name_server = rocketmq_endpoints(), rocketmq_name_server()
    run = uuid.uuid4().hex
    push, analytics = unique("push"), unique("analytics")
    seen: list[str] = []

    async def record(event: BusEvent) -> None:
        if event.payload.get("run") == run:
            seen.append(event.key)

    bus = new_bus(
        endpoints,
        name_server=name_server,
        node_id=f"web-{run[:8]}",
        node_groups=(push,),
    )
    try:
        await bus.subscribe(TOPIC, push, record)
        await bus.subscribe(TOPIC, analytics, record)
        await polling(bus)
        await bus.publish(BusEvent(TOPIC, "direct", "hello", {"run": run}))
        await until(lambda: sorted(seen) == ["hello", "hello"], 20, "both deliveries")
        groups = await subscription_groups([name_server])
        assert {bus.group_name(push), analytics} <= groups
    finally:
        await bus.close()

    groups = await subscription_groups([name_server])
    assert bus.group_name(push) not in groups
    assert analytics in groups  # a role group is shared by every node: kept
    assert bus.cleanup_failures == 0


@rocketmq
@pytest.mark.slow
async def test_start_deletes_the_node_groups_of_nodes_that_are_gone(
    test_topic: str,
) -> None:
    # Marked slow: the sweep looks twice, 10 s apart, before it deletes.
    endpoints, name_server = rocketmq_endpoints(), rocketmq_name_server()
    push, run = unique("push"), uuid.uuid4().hex[:8]

    async def ignore(event: BusEvent) -> None:
        pass

    # A node that stops without deleting its group, as a killed one would.
    gone = new_bus(endpoints, node_id=f"gone-{run}", node_groups=(push,))
    await gone.subscribe(TOPIC, push, ignore)
    await polling(gone)
    await gone.close()
    assert gone.group_name(push) in await subscription_groups([name_server])

    alive = new_bus(
        endpoints, node_id=f"alive-{run}", node_groups=(push,), name_server=name_server
    )
    try:
        await alive.subscribe(TOPIC, push, ignore)
        await polling(alive)
        await alive.start()
        await until(lambda: alive.swept == 1, 40, "the sweep")
        groups = await subscription_groups([name_server])
    finally:
        await alive.close()

    assert gone.group_name(push) not in groups
    assert alive.group_name(push) in groups  # its consumer is connected: kept
    assert alive.cleanup_failures == 0


@rocketmq
async def test_a_name_server_that_cannot_be_reached_does_not_fail_close(
    test_topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    push = unique("push")
    bus = new_bus(
        rocketmq_endpoints(),
        name_server=f"127.0.0.1:{closed_port()}",
        node_groups=(push,),
    )
    await bus.subscribe(TOPIC, push, lambda event: asyncio.sleep(0))
    await polling(bus)
    with caplog.at_level("WARNING", logger=LOGGER):
        await bus.close()

    assert bus.cleanup_failures == 1
    assert any(
        "could not delete the node groups" in r.getMessage()
        and bus.group_name(push) in r.getMessage()
        for r in caplog.records
    )


# ---------------------------------------------------------------- failures


@rocketmq
async def test_publishing_to_an_unreachable_broker_never_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rocketmq_endpoints()
    bus = await open_rocketmq_bus(f"127.0.0.1:{closed_port()}", topics=(TOPIC,))
    subscription = await bus.subscribe(TOPIC, unique("a"), _never_called)
    started = time.monotonic()
    try:
        for i in range(5):
            await bus.publish(BusEvent(TOPIC, "direct", f"k{i}", {"n": i}))
        elapsed = time.monotonic() - started
        await until(lambda: bus.receive_failures >= 3, 10, "failed receives")
    finally:
        await subscription.close()
        await bus.close()
    await bus.publish(BusEvent(TOPIC, "direct", "after-close", {}))

    assert (bus.published, bus.publish_failures) == (0, 6)
    assert elapsed < 5 * bus.publish_timeout
    assert bus.reconnects >= 1
    warnings = [r for r in caplog.records if r.name == LOGGER]
    assert any("publishing" in r.getMessage() for r in warnings), warnings
    assert all(r.levelname in ("WARNING", "DEBUG", "INFO") for r in warnings)


async def _never_called(event: BusEvent) -> None:
    raise AssertionError(f"no event can arrive from a closed port: {event}")


@rocketmq
async def test_a_failing_or_stuck_event_does_not_stall_the_others(
    test_topic: str,
) -> None:
    endpoints, run = rocketmq_endpoints(), uuid.uuid4().hex
    bus = new_bus(endpoints, concurrency=4, max_attempts=2, retry_delay=0.01)
    release = asyncio.Event()
    calls: dict[str, int] = {}

    async def handle(event: BusEvent) -> None:
        if event.payload.get("run") != run:
            return
        calls[event.key] = calls.get(event.key, 0) + 1
        if event.key == "poison":
            raise RuntimeError("this event always fails")
        if event.key == "stuck":
            await release.wait()

    try:
        await bus.subscribe(TOPIC, unique("a"), handle)
        await polling(bus)
        await bus.publish(BusEvent(TOPIC, "direct", "stuck", {"run": run}))
        await bus.publish(BusEvent(TOPIC, "direct", "poison", {"run": run}))
        others = [f"other-{i}" for i in range(20)]
        for key in others:
            await bus.publish(BusEvent(TOPIC, "direct", key, {"run": run}))

        await until(
            lambda: all(k in calls for k in others) and calls.get("poison", 0) >= 2,
            20,
            "the other events while one is stuck and one fails",
        )
        assert not release.is_set()
    finally:
        release.set()
        await bus.close()

    assert bus.failures >= 2
    assert bus.returned >= 1
    assert all(calls[k] == 1 for k in others)


@pytest.mark.slow
@rocketmq
async def test_the_broker_delivers_again_what_was_not_acknowledged(
    test_topic: str,
) -> None:
    endpoints, run = rocketmq_endpoints(), uuid.uuid4().hex
    # A node group, so that close deletes it with the retry topic the
    # broker made for the redelivery, when the name server is known.
    name_server, flaky = (
        os.environ.get("FLEETS_TEST_ROCKETMQ_NAME_SERVER", ""),
        unique("flaky"),
    )
    bus = new_bus(
        endpoints,
        max_attempts=1,
        redelivery_delay=10,
        node_groups=(flaky,),
        name_server=name_server,
    )
    attempts: list[float] = []

    async def group_topics() -> list[str]:
        names = await topic_names([name_server])
        return [name for name in names if bus.group_name(flaky) in name]

    async def fail_first(event: BusEvent) -> None:
        if event.payload.get("run") != run:
            return
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise RuntimeError("the first delivery fails")

    try:
        await bus.subscribe(TOPIC, flaky, fail_first)
        await polling(bus)
        await bus.publish(BusEvent(TOPIC, "direct", "once", {"run": run}))
        await until(lambda: len(attempts) >= 2, 40, "the redelivery")
        await asyncio.sleep(1)
        retry_topics = await group_topics() if name_server else []
    finally:
        await bus.close()

    assert len(attempts) == 2
    assert 8 <= attempts[1] - attempts[0] <= 30
    assert (bus.failures, bus.returned) == (1, 1)
    if name_server:
        assert retry_topics, "the broker made no retry topic for the redelivery"
        assert await group_topics() == []
        assert bus.cleanup_failures == 0


@rocketmq
async def test_subscribing_logs_no_warning(
    test_topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    bus = new_bus(rocketmq_endpoints())
    try:
        for name in ("a", "b", "c"):
            await bus.subscribe(TOPIC, unique(name), _ignore)
        await polling(bus)
        await asyncio.sleep(1)
    finally:
        await bus.close()

    assert [r.getMessage() for r in caplog.records if r.name == LOGGER] == []
    assert bus.receive_failures == 0


async def _ignore(event: BusEvent) -> None:
    return None


@rocketmq
async def test_closing_leaves_no_client_threads(test_topic: str) -> None:
    endpoints, run = rocketmq_endpoints(), uuid.uuid4().hex
    before = {t.ident for t in threading.enumerate()}
    bus = new_bus(endpoints)
    got = asyncio.Event()

    async def handle(event: BusEvent) -> None:
        if event.payload.get("run") == run:
            got.set()

    await bus.subscribe(TOPIC, unique("a"), handle)
    await polling(bus)
    await bus.publish(BusEvent(TOPIC, "direct", "k", {"run": run}))
    async with asyncio.timeout(20):
        await got.wait()
    await bus.close()

    def left() -> list[str]:
        return [
            t.name
            for t in threading.enumerate()
            if t.ident not in before and t.name != "channel_io_loop_thread"
        ]

    await until(lambda: not left(), 10, lambda: f"threads to end: {left()}")


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="endpoints"):
        RocketMQBus("localhost")
    with pytest.raises(ValueError, match="endpoints"):
        RocketMQBus("")
    with pytest.raises(ValueError, match="node_id"):
        RocketMQBus("127.0.0.1:8081", node_id="web 1")
    with pytest.raises(ValueError, match="invisible_duration"):
        RocketMQBus("127.0.0.1:8081", invisible_duration=5)
    bus = RocketMQBus("127.0.0.1:8081;127.0.0.2:8081", node_id="web-1")
    assert bus.group_name(PUSH_GROUP) == "fleets-push-web-1"
    assert bus.group_name("fleets-analytics") == "fleets-analytics"
    assert (
        RocketMQBus("127.0.0.1:8081").node_id != RocketMQBus("127.0.0.1:8081").node_id
    )


def test_logging_handlers_survive_the_client_import(tmp_path: Path) -> None:
    program = textwrap.dedent(
        """
        import logging, sys

        log_file = logging.FileHandler(sys.argv[1], mode="w")
        logging.getLogger().addHandler(log_file)
        app = logging.getLogger("app")
        app.setLevel(logging.INFO)
        app.addHandler(logging.StreamHandler(sys.stdout))

        assert "rocketmq" not in sys.modules
        import fleets_mailbox.adapters.rocketmq
        assert "rocketmq" in sys.modules

        app.info("logged after the import")
        log_file.flush()
        client = logging.getLogger("rocketmq-python-client")
        print("client handlers:", len(client.handlers))
        """
    )
    log_path = tmp_path / "app.log"
    done = subprocess.run(
        [sys.executable, "-c", program, str(log_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOME": str(tmp_path)},
    )

    assert done.returncode == 0, done.stderr
    assert "logged after the import" in log_path.read_text()
    assert "logged after the import" in done.stdout
    # The client keeps its own log file.
    assert "client handlers: 1" in done.stdout
    assert (tmp_path / "logs" / "rocketmq_python").is_dir()


# ---------------------------------------------------------------- cases


class _BrokenPresence(MemoryPresence):
    """A presence whose lookups fail, so the push handler raises."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    async def connections(self, user_id: str) -> list[Connection]:
        self.asked.append(user_id)
        raise RuntimeError("presence lookup failed (injected)")


@pytest.fixture
async def memory_stores() -> AsyncIterator[Stores]:
    opened = Stores.memory()
    try:
        yield opened
    finally:
        await opened.close()


def people() -> tuple[str, str]:
    """Two users of one test: old events of other runs name other users."""
    run = uuid.uuid4().hex[:12]
    return f"alice-{run}", f"bob-{run}"


@rocketmq
async def test_c10_push_handler_fails(memory_stores: Stores) -> None:
    alice, bob = people()
    conversation = direct_conversation(alice, bob)
    bus = await open_rocketmq_bus(
        rocketmq_endpoints(), max_attempts=2, retry_delay=0.01
    )
    world = PipelineHarness(memory_stores, bus)
    presence = _BrokenPresence()
    push = PushConsumer(bus, presence)
    await push.start()
    try:
        await polling(bus)
        sent = await world.pipeline.send(alice, conversation, "into the void", "cm-1")
        await until(lambda: presence.asked.count(bob) >= 2, 20, "two push attempts")
        await until(lambda: bus.returned >= 1, 5, "the event handed back")
    finally:
        await push.close()
        await bus.close()

    page = await world.sync.sync(bob, conversation, 0, 100)
    assert [m.message_id for m in page.messages] == [sent.message_id]
    assert page.messages[0].body == "into the void"
    assert await world.unread(bob, conversation) == 1


@rocketmq
async def test_c11_bus_redelivers(memory_stores: Stores) -> None:
    alice, bob = people()
    conversation = direct_conversation(alice, bob)
    bus = await open_rocketmq_bus(rocketmq_endpoints())
    world = PipelineHarness(memory_stores, bus)
    presence = MemoryPresence()
    phone = RecordingConnection("phone")
    await presence.connect(bob, phone)
    push = PushConsumer(bus, presence)
    await push.start()
    try:
        await polling(bus)
        sent = await world.pipeline.send(alice, conversation, "once", "cm-1")
        await bus.publish(message_event(sent, [alice, bob]))
        await phone.wait_for(lambda frames: len(frames) >= 2, 20)
        await asyncio.sleep(1)
    finally:
        await push.close()
        await bus.close()

    assert len(phone.of_type("message")) == 2
    assert [m["message_id"] for m in phone.messages()] == [sent.message_id]
    assert await world.unread(bob, conversation) == 1


# ---------------------------------------------------------------- restart


@pytest.mark.slow
@rocketmq
async def test_c15_the_broker_restarts(tmp_path: Path, memory_stores: Stores) -> None:
    rocketmq_endpoints()
    if shutil.which("java") is None:
        pytest.skip("java is not on PATH; the second broker needs it")
    broker = SecondBroker(tmp_path / "services", topics=TOPIC)
    run = uuid.uuid4().hex
    alice, bob = people()
    conversation = direct_conversation(alice, bob)
    seen: list[str] = []

    async def record(event: BusEvent) -> None:
        if event.payload.get("run") == run:
            seen.append(event.key)

    await broker.run("up")
    try:
        bus = await open_rocketmq_bus(broker.endpoints, topics=(TOPIC,))
        world = PipelineHarness(memory_stores, bus)
        try:
            await bus.subscribe(TOPIC, "fleets-test-restart", record)
            await polling(bus)
            await bus.publish(BusEvent(TOPIC, "direct", "before", {"run": run}))
            await until(lambda: "before" in seen, 20, "delivery before the restart")

            await broker.run("down")
            started = time.monotonic()
            for i in range(3):
                await bus.publish(BusEvent(TOPIC, "direct", f"down-{i}", {"run": run}))
            sent = await world.pipeline.send(alice, conversation, "while down", "cm-1")
            assert time.monotonic() - started < 4 * bus.publish_timeout
            assert bus.publish_failures >= 4

            await broker.run("up")
            for i in range(90):
                await bus.publish(BusEvent(TOPIC, "direct", f"after-{i}", {"run": run}))
                if any(k.startswith("after-") for k in seen):
                    break
                await asyncio.sleep(1)
            assert any(k.startswith("after-") for k in seen), seen
        finally:
            await bus.close()
    finally:
        await broker.run("down")

    assert bus.reconnects >= 1
    assert not any(k.startswith("down-") for k in seen)
    page = await world.sync.sync(bob, conversation, 0, 100)
    assert [m.message_id for m in page.messages] == [sent.message_id]
