"""A message bus on Apache RocketMQ 5: `RocketMQBus`.

It talks to RocketMQ's gRPC proxy through the official 5.x Python client,
``rocketmq-python-client`` (import name ``rocketmq``; the ``rocketmq``
extra). The older ``rocketmq-client-python`` 2.0.0 is not supported: it
wraps a native C++ library that no package registry ships, only gets bug
fixes upstream, and installs the same ``rocketmq`` import name. Importing
this module imports the client, which sets up its own log file under
``~/logs/rocketmq_python``; the application's logging handlers are kept.

Publishing: each event becomes one message on the event's topic: the JSON
payload as body, the event's tag (``direct``, ``group``...) as tag and its
key (the message id, for message events) as key, so the broker can find it
by key. The exact key also travels in the ``event_key`` property, because
the broker splits keys at spaces. A publish never raises: a failure is
logged at WARNING (then at most every 10 s while failures go on) and
counted in ``publish_failures``. `publish` waits at most ``publish_timeout``
seconds; at most ``max_in_flight`` sends are pending at once.

Consuming: each subscription is one ``SimpleConsumer`` of its consumer
group, long polling in a thread of its own, so the event loop never blocks.
Up to ``concurrency`` events of a subscription are handled at once; an
event is acknowledged once its handler has returned. A handler that raises
gets the event again at once, up to ``max_attempts`` calls with a growing
pause; then the event is left unacknowledged, and the broker delivers it
again ``redelivery_delay`` seconds later (RocketMQ 5.3 adds about 10 s),
until its retry limit (16 by default) moves it to the group's dead-letter
queue. A handler must finish within ``invisible_duration`` seconds, or the
event is delivered again. A subscription whose receive fails twice in a
row makes a new consumer, with a growing pause: a consumer that lived
through a broker restart never recovers by itself.

Groups: each role has one consumer group (``fleets-push``,
``fleets-analytics``), so each role sees every event. A group named in
``node_groups`` (by default ``fleets-push``) becomes ``<group>-<node_id>``:
push must reach the connections held by every node, so every node needs
every push event, and RocketMQ gives each event to one member of a group.
The gRPC proxy cannot delete a group, so with ``name_server`` (the name
servers' ``host:port``) `close` deletes this node's groups, their queue
positions and their retry topics through RocketMQ's remoting protocol, as
``mqadmin deleteSubGroup`` does, and `start` deletes in the background
the node groups that no consumer is connected to (`sweep_node_groups`):
those of nodes that were killed, and those the broker made again after a
`close` (it makes a group when it serves a poll it still held, or when it
returns an event that a poll took). Without it a node group stays on the
broker after `close` (docs/rocketmq.md says how to delete them).

Not supported: FIFO, delayed and transactional messages; ordering (seq
orders messages, not the bus).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, MutableMapping
from typing import Any, Protocol, TypeVar

from ..events import MESSAGE_TOPIC, NOTIFICATION_TOPIC, PUSH_GROUP, READ_TOPIC
from ..protocols import BusEvent, EventHandler
from . import _rocketmq_admin

__all__ = ["RocketMQBus", "open_rocketmq_bus"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: The user property that carries the event's key unchanged.
_KEY_PROPERTY = "event_key"

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ENDPOINT = re.compile(r"(?:https?://)?[^\s:;/]+:\d{1,5}")
_WARN_EVERY_S = 10.0
# Seconds between the two looks of a sweep at a node group with no consumer.
_SWEEP_RECHECK_S = 10.0


@contextlib.contextmanager
def _keeping_log_handlers() -> Iterator[None]:
    """Keeps every existing logging handler open across the block.

    ``import rocketmq`` calls `logging.config.dictConfig` for its own log
    file, and dictConfig first closes every handler that exists, those of
    the application too. Handlers are hidden from it for the block and put
    back afterwards; the client's own handler stays as it made it.
    """
    handlers = getattr(logging, "_handlerList", None)
    named = getattr(logging, "_handlers", None)
    if not isinstance(handlers, list) or not isinstance(named, MutableMapping):
        yield
        return
    saved, saved_named = handlers[:], dict(named)
    del handlers[:]
    named.clear()
    try:
        yield
    finally:
        handlers[:0] = saved
        named.update(saved_named)


with _keeping_log_handlers():
    import rocketmq  # type: ignore[import-untyped]


class _Producer(Protocol):
    def startup(self) -> None: ...

    def shutdown(self) -> None: ...

    def send_async(self, message: Any) -> concurrent.futures.Future[Any]: ...


class _Consumer(Protocol):
    def startup(self) -> None: ...

    def shutdown(self) -> None: ...

    def receive(self, max_message_num: int, invisible_duration: int) -> list[Any]: ...

    def ack(self, message: Any) -> None: ...

    def change_invisible_duration(
        self, message: Any, invisible_duration: int
    ) -> None: ...


def _to_message(event: BusEvent) -> Any:
    """Returns the RocketMQ message of an event."""
    message = rocketmq.Message()
    message.topic = event.topic
    message.body = json.dumps(
        dict(event.payload), ensure_ascii=False, separators=(",", ":")
    ).encode()
    if event.tag:
        message.tag = event.tag
    message.keys = event.key
    message.add_property(_KEY_PROPERTY, event.key)
    return message


def _to_event(topic: str, message: Any) -> BusEvent:
    """Returns the event a received message carries; raises ValueError if none."""
    payload = json.loads(bytes(message.body))
    if not isinstance(payload, dict):
        raise ValueError("the message body is not a JSON object")
    properties: dict[str, str] = dict(message.properties or {})
    key = properties.get(_KEY_PROPERTY) or " ".join(sorted(message.keys or ()))
    return BusEvent(topic, str(message.tag or ""), key, payload)


def _describe(exc: BaseException) -> str:
    """Returns a one-line description of a client or gRPC error."""
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    if callable(code) and callable(details):  # grpc.aio.AioRpcError
        status = getattr(code(), "name", code())
        return f"gRPC {status}: {details()}"
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _consume_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _start_consumer(consumer: _Consumer) -> None:
    consumer.startup()
    # Limitation: startup returns before the proxy has the consumer's
    # settings, and a receive sent before them fails (50001, "settings is
    # null"); wait for them on the client's private event, for a while
    # (test_subscribing_logs_no_warning).
    settings = getattr(consumer, "_init_settings_event", None)
    if isinstance(settings, threading.Event):
        settings.wait(2.0)


def _default_node_id() -> str:
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:40].strip("-")
    return f"{host or 'node'}-{uuid.uuid4().hex[:8]}"


class _RocketMQSubscription:
    """One consumer of a topic in a group, and the handlers it runs."""

    def __init__(
        self, bus: RocketMQBus, topic: str, group: str, handler: EventHandler
    ) -> None:
        self.topic = topic
        self.group = group
        self._bus = bus
        self._handler = handler
        self._consumer: _Consumer | None = None
        self._startup: asyncio.Future[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        # Long polls block a thread of their own; a receive that is still
        # waiting when the consumer shuts down ends there, quietly (the
        # callback of ``receive_async`` would log an error instead).
        self._receiver = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"fleets-rocketmq-{topic}"
        )
        self._closed = False
        self.polling = asyncio.Event()
        self._task = asyncio.create_task(
            self._run(), name=f"rocketmq {topic} as {group}"
        )

    async def _run(self) -> None:
        bus = self._bus
        failures = 0
        while True:
            free = bus.concurrency - len(self._in_flight)
            if free <= 0:
                await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
                continue

            try:
                consumer = await self._connect()
                receiving = asyncio.get_running_loop().run_in_executor(
                    self._receiver,
                    consumer.receive,
                    min(free, bus.batch_size),
                    bus.invisible_duration,
                )
                # Still running when close cancels this task, it ends with
                # an error that nobody else would read.
                receiving.add_done_callback(_consume_outcome)
                # A receive still waiting after a second is long polling at
                # the broker, so the group's position in each queue is set.
                await asyncio.wait((receiving,), timeout=1.0)
                if not receiving.done() or receiving.exception() is None:
                    self.polling.set()
                messages = await receiving
            except Exception as exc:
                failures += 1
                bus.receive_failures += 1
                log = logger.warning if failures == 1 else logger.debug
                log(
                    "receiving %s as %s failed (%s); retrying",
                    self.topic,
                    self.group,
                    _describe(exc),
                )
                # A consumer that lived through a broker restart keeps
                # failing (50001, "settings is null"): make a new one.
                if failures >= 2 and self._consumer is not None:
                    bus.reconnects += 1
                    await self._disconnect()
                await asyncio.sleep(min(5.0, 0.1 * 2 ** (failures - 1)))
                continue

            if failures:
                logger.info(
                    "receiving %s as %s works again after %d failures",
                    self.topic,
                    self.group,
                    failures,
                )
                failures = 0
            for message in messages:
                task = asyncio.create_task(self._handle(message))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)

    async def _connect(self) -> _Consumer:
        if self._consumer is None or self._startup is None:
            bus = self._bus
            self._consumer = rocketmq.SimpleConsumer(
                bus._configuration,
                self.group,
                {self.topic: rocketmq.FilterExpression("*")},
                await_duration=bus.long_poll,
            )
            self._startup = bus._call(_start_consumer, self._consumer)
        consumer = self._consumer
        # Shielded: a startup that goes on in its thread must be waited for
        # before the consumer can be shut down (`_disconnect` does).
        await asyncio.shield(self._startup)
        return consumer

    async def _disconnect(self) -> None:
        consumer, startup = self._consumer, self._startup
        self._consumer = self._startup = None
        if consumer is None or startup is None:
            return
        try:
            await startup
        except Exception:
            return
        try:
            await self._bus._call(consumer.shutdown)
        except Exception:
            logger.debug(
                "shutting down the consumer of %s as %s failed",
                self.topic,
                self.group,
                exc_info=True,
            )
        # Limitation: the 5.1.2 client leaves a consumer's message decoding
        # threads running after shutdown; without this each closed or remade
        # consumer would leave some behind (test_closing_leaves_no_client_threads).
        decoder = getattr(consumer, "_Consumer__message_decode_executor", None)
        if isinstance(decoder, concurrent.futures.ThreadPoolExecutor):
            decoder.shutdown(wait=False)

    async def _handle(self, message: Any) -> None:
        bus = self._bus
        try:
            event = _to_event(self.topic, message)
        except Exception:
            bus.dropped += 1
            logger.warning(
                "dropping message %s on %s: it carries no event",
                message.message_id,
                self.topic,
                exc_info=True,
            )
            await self._ack(message)
            return

        for attempt in range(bus.max_attempts):
            try:
                await self._handler(event)
            except Exception:
                bus.failures += 1
                if attempt + 1 < bus.max_attempts:
                    logger.warning(
                        "handler failed for %s %s, retrying", event.topic, event.key
                    )
                    await asyncio.sleep(bus.retry_delay * 2**attempt)
                    continue
                bus.returned += 1
                logger.warning(
                    "handler failed %d times for %s %s; the broker delivers it "
                    "again in %d s or more",
                    attempt + 1,
                    event.topic,
                    event.key,
                    bus.redelivery_delay,
                    exc_info=True,
                )
                await self._postpone(message)
                return
            bus.delivered += 1
            await self._ack(message)
            return

    async def _ack(self, message: Any) -> None:
        try:
            consumer = self._consumer
            if consumer is None:
                raise ConnectionError("no consumer: the broker is unreachable")
            await self._bus._call(consumer.ack, message)
        except Exception as exc:
            self._bus.ack_failures += 1
            logger.warning(
                "acknowledging %s on %s failed (%s); it will be delivered again",
                message.message_id,
                self.topic,
                _describe(exc),
            )

    async def _postpone(self, message: Any) -> None:
        """Asks the broker to deliver a message again after ``redelivery_delay``.

        Without it the message comes back when ``invisible_duration`` ends.
        """
        consumer = self._consumer
        if consumer is None:
            return
        try:
            await self._bus._call(
                consumer.change_invisible_duration,
                message,
                self._bus.redelivery_delay,
            )
        except Exception:
            logger.debug("could not postpone %s", message.message_id, exc_info=True)

    async def close(self) -> None:
        """Stops receiving, waits for the handlers in flight, then disconnects."""
        if self._closed:
            return
        self._closed = True
        self._bus._subscriptions.discard(self)

        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

        if self._in_flight:
            _, late = await asyncio.wait(
                self._in_flight, timeout=self._bus.close_timeout
            )
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        await self._disconnect()
        self._receiver.shutdown(wait=False)


class RocketMQBus:
    """A message bus on RocketMQ 5, through its gRPC proxy at ``endpoints``.

    ``endpoints`` is ``host:port`` of the proxy, or several joined by ``;``.
    Call `start` (or use `open_rocketmq_bus`) before publishing, and `close`
    at the end. The counters (``published``, ``publish_failures``,
    ``delivered``, ``failures``, ``returned``, ``dropped``, ``ack_failures``,
    ``receive_failures``, ``reconnects``, ``cleanup_failures``, ``swept``)
    say how it went. With ``name_server``, `close` deletes the node groups it
    used and `start` those of nodes that are gone.
    """

    def __init__(
        self,
        endpoints: str,
        *,
        access_key: str = "",
        secret_key: str = "",
        namespace: str = "",
        name_server: str = "",
        node_id: str | None = None,
        node_groups: Collection[str] = (PUSH_GROUP,),
        topics: Collection[str] = (MESSAGE_TOPIC, NOTIFICATION_TOPIC, READ_TOPIC),
        request_timeout: int = 3,
        publish_timeout: float = 2.0,
        max_in_flight: int = 256,
        concurrency: int = 32,
        batch_size: int = 16,
        long_poll: int = 20,
        invisible_duration: int = 30,
        redelivery_delay: int = 10,
        max_attempts: int = 3,
        retry_delay: float = 0.05,
        close_timeout: float = 10.0,
    ) -> None:
        addresses = [a for a in endpoints.split(";") if a]
        if not addresses or not all(_ENDPOINT.fullmatch(a) for a in addresses):
            raise ValueError(
                f"endpoints must be host:port, several joined by ';' "
                f"(got {endpoints!r})"
            )
        name_servers = [a for a in name_server.split(";") if a]
        if not all(_ENDPOINT.fullmatch(a) for a in name_servers) or (
            name_server and not name_servers
        ):
            raise ValueError(
                f"name_server must be host:port, several joined by ';' "
                f"(got {name_server!r})"
            )
        if node_id is not None and not _NAME.fullmatch(node_id):
            raise ValueError(
                f"node_id must be 1-64 letters, digits, '-' or '_' (got {node_id!r})"
            )
        if min(concurrency, batch_size, max_in_flight, max_attempts) < 1:
            raise ValueError(
                "concurrency, batch_size, max_in_flight and max_attempts must be >= 1"
            )
        if min(invisible_duration, redelivery_delay) < 10:
            raise ValueError(
                "invisible_duration and redelivery_delay must be >= 10 (seconds)"
            )
        if request_timeout < 1 or long_poll < 1:
            raise ValueError("request_timeout and long_poll must be >= 1 (seconds)")

        self.endpoints = endpoints
        self.name_servers = tuple(a.split("://")[-1] for a in name_servers)
        self.node_id = node_id or _default_node_id()
        self.node_groups = frozenset(node_groups)
        self.topics = tuple(topics)
        self.publish_timeout = publish_timeout
        self.max_in_flight = max_in_flight
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.long_poll = long_poll
        self.invisible_duration = invisible_duration
        self.redelivery_delay = redelivery_delay
        self.max_attempts = max_attempts
        self.retry_delay = retry_delay
        self.close_timeout = close_timeout

        self.published = 0
        self.publish_failures = 0
        self.delivered = 0
        self.failures = 0
        self.returned = 0
        self.dropped = 0
        self.ack_failures = 0
        self.receive_failures = 0
        self.reconnects = 0
        self.cleanup_failures = 0
        self.swept = 0
        self._sweep: asyncio.Task[set[str]] | None = None

        self._credentials = (access_key, secret_key)
        self._namespace = namespace
        # The node groups this bus consumed as, with their topics.
        self._node_groups: dict[str, set[str]] = {}
        self._configuration = rocketmq.ClientConfiguration(
            endpoints,
            rocketmq.Credentials(access_key, secret_key),
            namespace=namespace,
            request_timeout=request_timeout,
        )
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=16, thread_name_prefix="fleets-rocketmq"
        )
        self._producer: _Producer | None = None
        self._producer_lock = asyncio.Lock()
        self._send_slots = asyncio.Semaphore(max_in_flight)
        self._sends: set[asyncio.Task[None]] = set()
        self._subscriptions: set[_RocketMQSubscription] = set()
        self._next_warning = 0.0
        self._closed = False

    def group_name(self, group: str) -> str:
        """Returns the consumer group used on the broker for ``group``.

        A group in ``node_groups`` gets this node's id appended.
        """
        if group in self.node_groups:
            return f"{group}-{self.node_id}"
        return group

    async def start(self) -> None:
        """Starts the producer; an unreachable broker is retried when publishing.

        With ``name_server``, also starts deleting in the background the
        node groups of nodes that are gone (`sweep_node_groups`).
        """
        try:
            await self._ready_producer()
        except Exception as exc:
            logger.warning(
                "RocketMQ producer for %s did not start (%s); retrying on publish",
                self.endpoints,
                _describe(exc),
            )
        if self.name_servers and self.node_groups and self._sweep is None:
            self._sweep = asyncio.create_task(
                self.sweep_node_groups(), name="rocketmq node group sweep"
            )

    async def sweep_node_groups(self, recheck: float = _SWEEP_RECHECK_S) -> set[str]:
        """Deletes the node groups that no consumer has used for a while.

        Node groups are those named ``<node group>-<anything>`` (such as
        ``fleets-push-web-7``) other than this node's own. One that no
        consumer is connected to, checked twice ``recheck`` seconds apart,
        belongs to a node that is gone: killed before its `close`, or
        closed while the broker still held its polls, which make the group
        again. Returns the groups deleted; a failure is logged and counted
        in ``cleanup_failures``, never raised. `start` runs it when
        ``name_server`` is given.
        """
        prefix = f"{self._namespace}%" if self._namespace else ""
        prefixes = [f"{prefix}{group}-" for group in self.node_groups]
        own = {prefix + self.group_name(group) for group in self.node_groups}
        keys = {"access_key": self._credentials[0], "secret_key": self._credentials[1]}
        try:
            async with asyncio.timeout(self.close_timeout):
                stale = await _rocketmq_admin.offline_groups(
                    self.name_servers, prefixes, **keys
                )
            stale -= own
            if stale:
                # A node that is starting has made its group, and registers
                # its consumer a moment later.
                await asyncio.sleep(recheck)
                async with asyncio.timeout(self.close_timeout):
                    stale &= await _rocketmq_admin.offline_groups(
                        self.name_servers, prefixes, **keys
                    )
            if stale:
                topics = {prefix + topic for topic in self.topics}
                async with asyncio.timeout(self.close_timeout):
                    await _rocketmq_admin.delete_groups(
                        self.name_servers, dict.fromkeys(stale, topics), **keys
                    )
                self.swept += len(stale)
                logger.info(
                    "deleted the node groups of nodes that are gone: %s",
                    ", ".join(sorted(stale)),
                )
            return stale
        except (_rocketmq_admin.AdminError, TimeoutError) as exc:
            self.cleanup_failures += 1
            logger.warning(
                "could not delete the node groups of nodes that are gone (%s)",
                exc or "timed out",
            )
            return set()

    async def publish(self, event: BusEvent) -> None:
        """Sends an event; never raises: a failure is logged and counted."""
        if self._closed:
            self._publish_failed(event, "the bus is closed")
            return
        try:
            message = _to_message(event)
        except Exception as exc:
            self._publish_failed(event, _describe(exc))
            return

        try:
            async with asyncio.timeout(self.publish_timeout):
                await self._send_slots.acquire()
        except TimeoutError:
            self._publish_failed(event, f"{self.max_in_flight} sends are pending")
            return
        task = asyncio.create_task(self._send(event, message))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

        # The send goes on (and is counted) if it takes longer than this.
        await asyncio.wait((task,), timeout=self.publish_timeout)

    async def subscribe(
        self, topic: str, group: str, handler: EventHandler
    ) -> _RocketMQSubscription:
        """Starts consuming ``topic`` as ``group`` (see `group_name`)."""
        if self._closed:
            raise RuntimeError("the RocketMQBus is closed")
        subscription = _RocketMQSubscription(
            self, topic, self.group_name(group), handler
        )
        self._subscriptions.add(subscription)
        if group in self.node_groups:
            self._node_groups.setdefault(subscription.group, set()).add(topic)
        return subscription

    async def wait_until_polling(self) -> None:
        """Waits until every subscription's consumer has asked for messages.

        Bound it with `asyncio.timeout`: it waits for ever while the broker
        is unreachable.
        """
        for subscription in list(self._subscriptions):
            await subscription.polling.wait()

    async def close(self) -> None:
        """Stops every subscription, waits for pending sends, disconnects.

        With ``name_server``, then deletes the node groups it consumed as.
        """
        if self._closed:
            return
        self._closed = True

        if self._sweep is not None and not self._sweep.done():
            self._sweep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweep
        await asyncio.gather(*(s.close() for s in list(self._subscriptions)))
        if self._sends:
            _, late = await asyncio.wait(self._sends, timeout=self.close_timeout)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)

        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await self._call(producer.shutdown)
            except Exception:
                logger.debug("shutting down the producer failed", exc_info=True)
        self._executor.shutdown(wait=False)
        await self._delete_node_groups()

    async def _delete_node_groups(self) -> None:
        if not self.name_servers or not self._node_groups:
            return
        prefix = f"{self._namespace}%" if self._namespace else ""
        groups = {
            prefix + group: {prefix + topic for topic in topics}
            for group, topics in self._node_groups.items()
        }
        try:
            async with asyncio.timeout(self.close_timeout):
                await _rocketmq_admin.delete_groups(
                    self.name_servers,
                    groups,
                    access_key=self._credentials[0],
                    secret_key=self._credentials[1],
                )
        except (_rocketmq_admin.AdminError, TimeoutError) as exc:
            self.cleanup_failures += 1
            logger.warning(
                "could not delete the node groups %s (%s); delete them with "
                "mqadmin deleteSubGroup",
                ", ".join(sorted(groups)),
                exc or "timed out",
            )
        else:
            logger.debug("deleted the node groups %s", ", ".join(sorted(groups)))

    async def _send(self, event: BusEvent, message: Any) -> None:
        try:
            producer = await self._ready_producer()
            future = await self._call(producer.send_async, message)
            await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            self._publish_failed(event, "the bus closed before the broker answered")
            raise
        except Exception as exc:
            self._publish_failed(event, _describe(exc))
        else:
            self.published += 1
        finally:
            self._send_slots.release()

    async def _ready_producer(self) -> _Producer:
        async with self._producer_lock:
            if self._producer is None:
                producer: _Producer = rocketmq.Producer(
                    self._configuration, self.topics
                )
                await self._call(producer.startup)
                self._producer = producer
            return self._producer

    def _publish_failed(self, event: BusEvent, reason: str) -> None:
        self.publish_failures += 1
        now = time.monotonic()
        if now >= self._next_warning:
            self._next_warning = now + _WARN_EVERY_S
            log = logger.warning
        else:
            log = logger.debug
        log(
            "publishing %s %s failed (%s); %d publish failures so far",
            event.topic,
            event.key,
            reason,
            self.publish_failures,
        )

    def _call(self, function: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        """Runs a blocking call of the client in the bus's threads."""
        return asyncio.get_running_loop().run_in_executor(
            self._executor, function, *args
        )


async def open_rocketmq_bus(endpoints: str, **options: Any) -> RocketMQBus:
    """Returns a started `RocketMQBus`; ``options`` are its keyword arguments."""
    bus = RocketMQBus(endpoints, **options)
    await bus.start()
    return bus
