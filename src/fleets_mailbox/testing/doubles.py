"""Test doubles: a fake clock, injected crashes, call counters, a recording client.

They are in-memory stand-ins for what a test must control (time, process
death, a client's connection), never for a store or a bus under test.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar, cast

from ..errors import StoreError
from ..protocols import BusEvent, EventHandler, Subscription

__all__ = [
    "CallLog",
    "CrashHook",
    "FakeClock",
    "ProcessDeath",
    "RecordingBus",
    "RecordingConnection",
]

_T = TypeVar("_T")

#: Called with a method name and its arguments before a wrapped call runs.
BeforeCall = Callable[[str, tuple[Any, ...]], Awaitable[None]]


class FakeClock:
    """A clock in milliseconds that moves only when told to.

    Pass it as the ``clock`` of `SendPipeline` or `MailboxService`; it starts
    frozen at ``start`` (a time in November 2023 by default).
    """

    def __init__(self, start: int = 1_700_000_000_000) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> int:
        """Moves the clock forward by ``ms`` and returns the new time."""
        if ms < 0:
            raise ValueError("a FakeClock never moves backwards")
        self.now += ms
        return self.now


class ProcessDeath(BaseException):
    """Simulates the death of the process at the point where it is raised.

    It derives from `BaseException` but neither from `Exception` nor from
    `asyncio.CancelledError`, so the send pipeline's cleanup does not run:
    the send lease stays held until it expires, as after a real crash.
    """


class CrashHook:
    """A `StepHook` that raises at one step of the send pipeline.

    It lets ``skip`` occurrences of ``step`` pass, then raises ``error``
    (`ProcessDeath` by default; pass an `Exception` class to simulate a failure
    the process survives) ``times`` times, then lets everything pass again.
    ``step=None`` matches every step.
    """

    def __init__(
        self,
        step: str | None,
        *,
        skip: int = 0,
        times: int = 1,
        error: type[BaseException] = ProcessDeath,
    ) -> None:
        self.step = step
        self.skip = skip
        self.times = times
        self.error = error
        self.seen: list[str] = []
        self.fired = 0

    async def __call__(self, step: str) -> None:
        self.seen.append(step)
        if self.step is not None and step != self.step:
            return
        if self.skip > 0:
            self.skip -= 1
            return
        if self.fired < self.times:
            self.fired += 1
            raise self.error(f"injected crash at step {step!r}")


class CallLog:
    """Counts the calls made through the objects it wraps.

    ``wrap(store)`` returns a proxy whose coroutine methods are counted in
    `counts` by name, and which awaits ``before(name, args)`` first when
    given (to inject a failure or a pause at a precise call).
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def wrap(self, target: _T, before: BeforeCall | None = None) -> _T:
        """Returns a counting proxy of ``target``, typed as ``target``."""
        return cast(_T, _CountingProxy(target, self, before))


class _CountingProxy:
    def __init__(self, target: object, log: CallLog, before: BeforeCall | None):
        self._target = target
        self._log = log
        self._before = before

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if name.startswith("_") or not asyncio.iscoroutinefunction(attribute):
            return attribute

        async def call(*args: Any, **kwargs: Any) -> Any:
            self._log.counts[name] += 1
            if self._before is not None:
                await self._before(name, args)
            return await attribute(*args, **kwargs)

        return call


class RecordingConnection:
    """A client connection that records the frames pushed to it.

    It behaves like a client that dedupes and orders messages by
    ``(conversation_id, seq)``: `messages` returns what such a client shows.
    With ``fail=True`` every push raises, as a dropped socket does.
    """

    _ids = itertools.count(1)

    def __init__(self, name: str | None = None, *, fail: bool = False) -> None:
        self._id = name or f"conn-{next(self._ids)}"
        self.fail = fail
        self.frames: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()

    @property
    def connection_id(self) -> str:
        return self._id

    async def push(self, frame: Mapping[str, Any]) -> None:
        if self.fail:
            raise ConnectionResetError(f"{self._id} is gone")
        async with self._changed:
            self.frames.append(dict(frame))
            self._changed.notify_all()

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        """Returns the frames of one ``type`` in the order received."""
        return [f for f in self.frames if f.get("type") == kind]

    def messages(self) -> list[dict[str, Any]]:
        """Returns the pushed messages once each, by (conversation_id, seq)."""
        shown: dict[tuple[str, int], dict[str, Any]] = {}
        for frame in self.of_type("message"):
            message = frame["message"]
            shown.setdefault((message["conversation_id"], message["seq"]), message)
        return [shown[key] for key in sorted(shown)]

    async def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], seconds: float = 5.0
    ) -> None:
        """Waits until ``predicate(frames)`` holds; raises `TimeoutError` if not."""
        async with asyncio.timeout(seconds), self._changed:
            await self._changed.wait_for(lambda: predicate(self.frames))


class RecordingBus:
    """A `MessageBus` that records what is published and delivers nothing.

    ``refuse=True`` makes `publish` raise `StoreError`, as a bus that is down.
    Use `fleets_mailbox.adapters.local_bus.LocalBus` to consume events.
    """

    def __init__(self, *, refuse: bool = False) -> None:
        self.refuse = refuse
        self.events: list[BusEvent] = []

    async def publish(self, event: BusEvent) -> None:
        if self.refuse:
            raise StoreError("RecordingBus refuses events (refuse=True)")
        self.events.append(event)

    async def subscribe(
        self, topic: str, group: str, handler: EventHandler
    ) -> Subscription:
        raise NotImplementedError(
            "RecordingBus.subscribe: RecordingBus only records; use LocalBus"
        )

    async def close(self) -> None:
        return None

    def keys(self, topics: Iterable[str] | None = None) -> list[str]:
        """Returns the keys of the recorded events, of ``topics`` if given."""
        wanted = None if topics is None else set(topics)
        return [e.key for e in self.events if wanted is None or e.topic in wanted]
