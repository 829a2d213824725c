"""Conformance suites for every protocol, and the test doubles they use.

An adapter proves itself by subclassing a suite in its own test module and
implementing the abstract factory; every inherited ``test_*`` method then
runs against it::

    from fleets_mailbox.testing import MailboxStoreSuite

    class TestMyMailboxStore(MailboxStoreSuite):
        async def make_store(self):
            return MyMailboxStore(...)

        async def close_store(self, store):  # optional
            await store.close()

The suites and what they need:

===========================  ====================  ==========================
suite                        implement             pins
===========================  ====================  ==========================
`MessageStoreSuite`          ``make_store``        `MessageStore`
`MailboxStoreSuite`          ``make_store``        `MailboxStore`
`ConversationStoreSuite`     ``make_store``        `ConversationStore`
`NotificationStoreSuite`     ``make_store``        `NotificationStore`
`AnalyticsStoreSuite`        ``make_store``        `AnalyticsStore`
`DirectorySuite`             ``make_directory``    `GroupDirectory`
`MessageBusSuite`            ``make_bus``          `MessageBus`; override
                                                   ``settle`` to wait for
                                                   delivery
`PipelineSuite`              ``make_stores``       send, crash, repair and
                                                   sync over a `Stores`
===========================  ====================  ==========================

Each has an optional ``close_*`` counterpart, called at the end of each test.
Each factory is called once per test and must return something fresh and
empty. The suites cover duplicates, concurrency (many calls gathered on the
same keys), ordering and paging, and the failure cases, not only the happy
path.

The test methods are plain ``async def`` methods and need pytest plus an
asyncio plugin: with pytest-asyncio in auto mode (``asyncio_mode = "auto"``)
nothing more is needed; in strict mode mark the subclass with
``pytestmark = pytest.mark.asyncio``. The suites use no fixtures, so they
run under any plugin that runs marked coroutine tests. A test that cannot
apply to an adapter should be overridden with a ``pytest.skip`` that says
why, never with ``pass``.

`fleets_mailbox.testing.doubles` holds the in-memory doubles the suites and
the project's tests use: `FakeClock`, `ProcessDeath` and `CrashHook` for
injected crashes, `CallLog` to count store round trips, `RecordingBus` and
`RecordingConnection`. `fleets_mailbox.testing.checks` holds `walk_sync`,
which walks sync pages and checks each of them.

This package imports pytest; it is meant for test code only.
"""

# ruff: noqa: E402 (the suites must be imported after the rewrite hook)

import pytest

# Show the values in a failed assert of the suites, as in a test module.
pytest.register_assert_rewrite(
    "fleets_mailbox.testing.bus",
    "fleets_mailbox.testing.checks",
    "fleets_mailbox.testing.pipeline",
    "fleets_mailbox.testing.stores",
)

from .bus import MessageBusSuite
from .checks import SyncWalk, check_page, walk_sync
from .doubles import (
    CallLog,
    CrashHook,
    FakeClock,
    ProcessDeath,
    RecordingBus,
    RecordingConnection,
)
from .pipeline import LEASE_MS, PipelineHarness, PipelineSuite
from .stores import (
    AnalyticsStoreSuite,
    ConversationStoreSuite,
    DirectorySuite,
    MailboxStoreSuite,
    MessageStoreSuite,
    NotificationStoreSuite,
)

__all__ = [
    "LEASE_MS",
    "AnalyticsStoreSuite",
    "CallLog",
    "ConversationStoreSuite",
    "CrashHook",
    "DirectorySuite",
    "FakeClock",
    "MailboxStoreSuite",
    "MessageBusSuite",
    "MessageStoreSuite",
    "NotificationStoreSuite",
    "PipelineHarness",
    "PipelineSuite",
    "ProcessDeath",
    "RecordingBus",
    "RecordingConnection",
    "SyncWalk",
    "check_page",
    "walk_sync",
]
