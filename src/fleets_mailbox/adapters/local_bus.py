"""An in-process message bus: `LocalBus`.

Each consumer group of a topic has its own queue; a group's subscribers take
turns, each handling up to ``concurrency`` events at once, in no promised
order (as on any bus). A handler that raises gets the event again, up to
``max_attempts`` times with a growing pause; after that the event is dropped
and counted in ``dropped``: the data is in the mailboxes, only the push is
lost. Events do not survive the process, and nothing is kept for a group
that subscribes after they were published, just as a bus's history can be
gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

from ..protocols import BusEvent, EventHandler

__all__ = ["LocalBus"]

logger = logging.getLogger(__name__)


class _Group:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[BusEvent, int]] = asyncio.Queue()
        self.workers: list[_LocalSubscription] = []


class _LocalSubscription:
    def __init__(
        self, bus: LocalBus, group: _Group, handler: EventHandler, name: str
    ) -> None:
        self._bus = bus
        self._group = group
        self._handler = handler
        self._slots = asyncio.Semaphore(bus.concurrency)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._task = asyncio.create_task(self._run(), name=name)

    async def _run(self) -> None:
        queue = self._group.queue
        while True:
            await self._slots.acquire()
            try:
                event, attempt = await queue.get()
            except BaseException:
                self._slots.release()
                raise
            task = asyncio.create_task(self._deliver(event, attempt))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _deliver(self, event: BusEvent, attempt: int) -> None:
        try:
            await self._handler(event)
        except Exception:
            self._bus.failures += 1
            if attempt + 1 < self._bus.max_attempts:
                logger.warning(
                    "handler failed for %s %s, redelivering", event.topic, event.key
                )
                self._bus._retrying += 1
                asyncio.get_running_loop().call_later(
                    self._bus.retry_delay * 2**attempt,
                    self._requeue,
                    event,
                    attempt + 1,
                )
            else:
                self._bus.dropped += 1
                logger.warning(
                    "dropping %s %s after %d attempts",
                    event.topic,
                    event.key,
                    attempt + 1,
                    exc_info=True,
                )
        else:
            self._bus.delivered += 1
        finally:
            self._slots.release()
            self._group.queue.task_done()

    def _requeue(self, event: BusEvent, attempt: int) -> None:
        self._bus._retrying -= 1
        self._group.queue.put_nowait((event, attempt))

    async def close(self) -> None:
        if self in self._group.workers:
            self._group.workers.remove(self)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self._in_flight:
            await asyncio.wait(self._in_flight)


class LocalBus:
    """A message bus inside one process, for the embedded default and tests."""

    def __init__(
        self, *, max_attempts: int = 3, retry_delay: float = 0.05, concurrency: int = 32
    ) -> None:
        if concurrency < 1 or max_attempts < 1:
            raise ValueError("concurrency and max_attempts must be >= 1")
        self.max_attempts = max_attempts
        self.concurrency = concurrency
        self.retry_delay = retry_delay
        self.published = 0
        self.delivered = 0
        self.failures = 0
        self.dropped = 0
        self._groups: defaultdict[str, dict[str, _Group]] = defaultdict(dict)
        self._retrying = 0

    async def publish(self, event: BusEvent) -> None:
        self.published += 1
        for group in self._groups.get(event.topic, {}).values():
            group.queue.put_nowait((event, 0))

    async def subscribe(
        self, topic: str, group: str, handler: EventHandler
    ) -> _LocalSubscription:
        state = self._groups[topic].setdefault(group, _Group())
        subscription = _LocalSubscription(self, state, handler, f"{topic}/{group}")
        state.workers.append(subscription)
        return subscription

    async def drain(self) -> None:
        """Waits until every queued event has been handled or dropped."""
        while True:
            for groups in list(self._groups.values()):
                for group in list(groups.values()):
                    if group.workers:
                        await group.queue.join()
            if not self._retrying:
                return
            await asyncio.sleep(self.retry_delay / 4)

    async def close(self) -> None:
        for groups in list(self._groups.values()):
            for group in list(groups.values()):
                for worker in list(group.workers):
                    await worker.close()
        self._groups.clear()
