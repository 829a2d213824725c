"""The conformance suite of `MessageBus`.

It uses only the protocol: every test publishes on a topic and consumer
groups of its own (from `topic` and `group`, which a subclass may override,
e.g. to use topics created beforehand) and ignores events of other runs, so
it also runs against a shared broker. Expected deliveries are awaited with
``delivery_timeout``; checks that something did *not* happen call `settle`
first, which waits until the bus has handled what was published.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

from ..errors import StoreError
from ..protocols import BusEvent, EventHandler, MessageBus

__all__ = ["MessageBusSuite"]


class _Deliveries:
    """What the handlers of one test saw, with a way to wait for more."""

    def __init__(self, run: str) -> None:
        self.run = run
        self.seen: list[tuple[str, BusEvent]] = []
        self._changed = asyncio.Condition()

    def handler(
        self, name: str, *, fail: Callable[[BusEvent], bool] | None = None
    ) -> EventHandler:
        """Returns a handler that records events as ``name``.

        ``fail(event)`` returning True makes the handler raise after recording
        the attempt under ``name + "!"``.
        """

        async def handle(event: BusEvent) -> None:
            if event.payload.get("run") != self.run:
                return
            failing = fail is not None and fail(event)
            async with self._changed:
                self.seen.append((name + "!" if failing else name, event))
                self._changed.notify_all()
            if failing:
                raise RuntimeError(f"handler {name} fails for {event.key}")

        return handle

    def keys(self, name: str) -> list[str]:
        return [e.key for n, e in self.seen if n == name]

    async def wait(self, predicate: Callable[[], bool], seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds), self._changed:
                await self._changed.wait_for(predicate)
        except TimeoutError:
            raise AssertionError(
                f"not delivered within {seconds} s; seen: "
                f"{[(n, e.key) for n, e in self.seen]}"
            ) from None


class MessageBusSuite(abc.ABC):
    """The contract of `MessageBus`: at least once per consumer group."""

    #: Seconds to wait for an expected first delivery.
    delivery_timeout: float = 10.0
    #: Seconds to wait for a redelivery after a handler raised.
    redelivery_timeout: float = 60.0
    #: Seconds the default `settle` waits for in-flight deliveries.
    settle_seconds: float = 1.0

    @abc.abstractmethod
    async def make_bus(self) -> MessageBus:
        """Returns a connected bus; called once at the start of each test."""

    async def close_bus(self, bus: MessageBus) -> None:
        """Closes the bus at the end of each test (`MessageBus.close` by default)."""
        await bus.close()

    async def settle(self, bus: MessageBus) -> None:
        """Waits until the events published so far have been handled or dropped.

        The default waits ``settle_seconds``; override it with the bus's own
        way to wait (`LocalBus.drain`, for one).
        """
        await asyncio.sleep(self.settle_seconds)

    async def subscribed(self, bus: MessageBus) -> None:  # noqa: B027 (optional hook)
        """Waits until new subscriptions receive what is published from now on.

        A broker that assigns queues to consumers asynchronously overrides it;
        the default returns at once.
        """

    def topic(self) -> str:
        """Returns the topic of one test (a new name each time by default)."""
        return f"fleets-test-{uuid.uuid4().hex[:12]}"

    def group(self, name: str) -> str:
        """Returns a consumer group name of one test, unique to the run."""
        return f"fleets-test-{name}-{uuid.uuid4().hex[:12]}"

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[MessageBus]:
        """Yields a bus from `make_bus` and closes it afterwards."""
        bus = await self.make_bus()
        try:
            yield bus
        finally:
            await self.close_bus(bus)

    def _events(self, run: str, topic: str, count: int) -> list[BusEvent]:
        return [
            BusEvent(
                topic=topic,
                tag="group" if i % 2 else "direct",
                key=f"{run}-{i}",
                payload={"run": run, "n": i, "text": f"event {i} ✓"},
            )
            for i in range(count)
        ]

    async def test_is_a_message_bus(self) -> None:
        async with self.opened() as bus:
            assert isinstance(bus, MessageBus)

    async def test_an_event_arrives_intact(self) -> None:
        async with self.opened() as bus:
            run, topic = uuid.uuid4().hex, self.topic()
            seen = _Deliveries(run)
            await bus.subscribe(topic, self.group("a"), seen.handler("a"))
            await self.subscribed(bus)
            payload: dict[str, Any] = {
                "run": run,
                "type": "message",
                "message": {
                    "body": 'it\'s "quoted" 漢字 😀',
                    "seq": 12,
                    "deleted": False,
                },
                "recipients": ["alice", "bob"],
                "nothing": None,
                "ratio": 0.5,
            }
            event = BusEvent(topic=topic, tag="group", key=f"{run}-k", payload=payload)

            await bus.publish(event)

            await seen.wait(lambda: len(seen.seen) >= 1, self.delivery_timeout)
            got = seen.seen[0][1]
            assert (got.topic, got.tag, got.key) == (topic, "group", f"{run}-k")
            assert dict(got.payload) == payload

    async def test_every_group_gets_every_event(self) -> None:
        async with self.opened() as bus:
            run, topic = uuid.uuid4().hex, self.topic()
            seen = _Deliveries(run)
            names = ["push", "analytics", "audit"]
            for name in names:
                await bus.subscribe(topic, self.group(name), seen.handler(name))
            await self.subscribed(bus)
            events = self._events(run, topic, 20)

            for event in events:
                await bus.publish(event)

            expected = sorted(e.key for e in events)
            await seen.wait(
                lambda: all(sorted(set(seen.keys(n))) == expected for n in names),
                self.delivery_timeout,
            )
            await self.settle(bus)
            for name in names:
                assert sorted(seen.keys(name)) == expected, name

    async def test_subscribers_of_one_group_share_its_events(self) -> None:
        async with self.opened() as bus:
            run, topic, group = uuid.uuid4().hex, self.topic(), self.group("shared")
            seen = _Deliveries(run)

            async def slow(name: str) -> EventHandler:
                record = seen.handler(name)

                async def handle(event: BusEvent) -> None:
                    await record(event)
                    await asyncio.sleep(0)

                return handle

            await bus.subscribe(topic, group, await slow("one"))
            await bus.subscribe(topic, group, await slow("two"))
            await self.subscribed(bus)
            events = self._events(run, topic, 20)

            await asyncio.gather(*(bus.publish(e) for e in events))

            expected = sorted(e.key for e in events)
            await seen.wait(
                lambda: sorted(set(seen.keys("one") + seen.keys("two"))) == expected,
                self.delivery_timeout,
            )
            await self.settle(bus)
            assert sorted(seen.keys("one") + seen.keys("two")) == expected
            assert not set(seen.keys("one")) & set(seen.keys("two"))

    async def test_many_concurrent_publishes_all_arrive(self) -> None:
        async with self.opened() as bus:
            run, topic = uuid.uuid4().hex, self.topic()
            seen = _Deliveries(run)
            await bus.subscribe(topic, self.group("a"), seen.handler("a"))
            await self.subscribed(bus)
            events = self._events(run, topic, 100)

            await asyncio.gather(*(bus.publish(e) for e in events))

            expected = sorted(e.key for e in events)
            await seen.wait(
                lambda: sorted(set(seen.keys("a"))) == expected, self.delivery_timeout
            )

    async def test_a_raising_handler_gets_the_event_again(self) -> None:
        async with self.opened() as bus:
            run, topic = uuid.uuid4().hex, self.topic()
            seen = _Deliveries(run)
            attempts: Counter[str] = Counter()

            def first_attempt_fails(event: BusEvent) -> bool:
                attempts[event.key] += 1
                return attempts[event.key] == 1

            await bus.subscribe(
                topic,
                self.group("flaky"),
                seen.handler("flaky", fail=first_attempt_fails),
            )
            await bus.subscribe(topic, self.group("healthy"), seen.handler("healthy"))
            await self.subscribed(bus)
            events = self._events(run, topic, 3)

            for event in events:
                await bus.publish(event)

            expected = sorted(e.key for e in events)
            await seen.wait(
                lambda: sorted(set(seen.keys("flaky"))) == expected,
                self.redelivery_timeout,
            )
            await self.settle(bus)
            assert sorted(seen.keys("flaky!")) == expected
            assert sorted(seen.keys("healthy")) == expected

    async def test_closing_a_subscription_stops_its_delivery(self) -> None:
        async with self.opened() as bus:
            run, topic = uuid.uuid4().hex, self.topic()
            seen = _Deliveries(run)
            closed = await bus.subscribe(topic, self.group("closed"), seen.handler("x"))
            await bus.subscribe(topic, self.group("open"), seen.handler("open"))
            await self.subscribed(bus)
            before, after = self._events(run, topic, 2)
            await bus.publish(before)
            await seen.wait(
                lambda: (
                    seen.keys("x") == [before.key] and seen.keys("open") == [before.key]
                ),
                self.delivery_timeout,
            )

            await closed.close()
            await bus.publish(after)

            await seen.wait(
                lambda: after.key in seen.keys("open"), self.delivery_timeout
            )
            await self.settle(bus)
            assert seen.keys("x") == [before.key]

    async def test_close_leaves_no_handler_running(self) -> None:
        async with self.opened() as bus:
            run, topic = uuid.uuid4().hex, self.topic()
            started = asyncio.Event()
            release = asyncio.Event()
            running = 0

            async def handler(event: BusEvent) -> None:
                nonlocal running
                if event.payload.get("run") != run:
                    return
                running += 1
                try:
                    started.set()
                    await release.wait()
                finally:
                    running -= 1

            subscription = await bus.subscribe(topic, self.group("a"), handler)
            await self.subscribed(bus)
            await bus.publish(self._events(run, topic, 1)[0])
            async with asyncio.timeout(self.delivery_timeout):
                await started.wait()

            # Whether close cancels the handler in flight or waits for it,
            # no handler runs once close has returned.
            closing = asyncio.create_task(subscription.close())
            await asyncio.sleep(0)
            release.set()
            async with asyncio.timeout(self.delivery_timeout):
                await closing

            assert running == 0

    async def test_closing_the_bus_stops_every_subscription(self) -> None:
        bus = await self.make_bus()
        run, topic = uuid.uuid4().hex, self.topic()
        seen = _Deliveries(run)
        await bus.subscribe(topic, self.group("a"), seen.handler("a"))
        await bus.subscribe(topic, self.group("b"), seen.handler("b"))
        await self.subscribed(bus)

        await self.close_bus(bus)
        with contextlib.suppress(StoreError):
            await bus.publish(self._events(run, topic, 1)[0])

        await self.settle(bus)
        assert seen.seen == []
