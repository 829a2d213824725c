"""Conversation summary updates of one group message: library vs its own SQL.

``python -m bench conversations [--url URL] [--sizes 10,100,1000]
[--messages 20] [--rounds 9]`` against the MySQL/MariaDB of
``FLEETS_TEST_MYSQL_URL`` (or any ``mysql+…`` or ``sqlite+aiosqlite`` URL).
For each group size it prints::

    members=100 library_ms=.. raw_ms=.. updates_per_s=.. raw_updates_per_s=..
    ratio_raw=..

* library: `SqlConversationStore.apply_message` of one group message (seq 1,
  2, 3… in one conversation) to every member, timed over ``--messages``
  messages;
* raw: the very statements the library sent to the driver for those
  messages, replayed on the driver's own connection (asyncmy, aiosqlite)
  with no SQLAlchemy in between: the same statement texts, parameters,
  ``execute``/``executemany`` calls, result fetches and COMMITs, in the same
  transactions.

How the raw side gets its statements without knowing them: the run uses two
fresh databases with the same schema, the library's and its twin. While the
library applies a message to its database, listeners on its engine record
every call it makes on the driver (``do_execute``, ``do_executemany``,
``do_execute_no_params``, and each COMMIT or ROLLBACK of a transaction).
The raw side then replays that record, call for call, into the twin. Both
databases start empty and receive the same calls in the same order, so the
twin is in the state the library's database was in when the library made
each call: every value the library read back and wrote again (versions
taken from counters, whatever the store does next) is right for the twin as
recorded, and no statement or parameter is rewritten. After each size the
two databases are compared table by table; a difference stops the run.

So ``raw_ms`` is the database work plus the leanest driver use, and
``ratio_raw`` (library time over raw time) is what the library adds:
building and compiling statements, parameter and result processing,
SQLAlchemy's asyncio bridge, and the pool: its checkout and return, with
any round trip the pool makes on its own that the record leaves out (a
ROLLBACK on return when a transaction is still open, a ping when the
driver cannot tell a broken connection). The
listeners' own cost (an append per call) is charged to the library. The
sides take turns message by message (the library's message,
then its replay), so that machine noise and tables growing during the run
hit both; each figure is the median over ``--rounds`` of the mean per
message in a round of ``--messages``, after ``--warmup`` messages. With
``--profile`` each size also prints both sides' CPU time per message and
where the library's time goes under cProfile; ``--show`` prints the calls
of one message. The databases are dropped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import inspect
import io
import itertools
import os
import pstats
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import event, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from fleets_mailbox.adapters.sql import (
    SqlConversationStore,
    create_sql_engine,
    schema,
    upgrade_schema,
)
from fleets_mailbox.model import group_conversation, new_message_id, now_ms
from fleets_mailbox.protocols import SummaryUpdate


async def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench conversations")
    parser.add_argument("--url", default=os.environ.get("FLEETS_TEST_MYSQL_URL"))
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--messages", type=int, default=20, help="per round")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=3, help="messages")
    parser.add_argument(
        "--show", action="store_true", help="print the calls of one message"
    )
    parser.add_argument(
        "--profile", action="store_true", help="CPU times and a profile per size"
    )
    args = parser.parse_args(argv)
    if not args.url:
        print("set FLEETS_TEST_MYSQL_URL (scripts/services.sh up mysql) or --url")
        return 2
    url = make_url(args.url)
    if url.get_backend_name() not in ("mysql", "mariadb", "sqlite"):
        print(f"{url.get_backend_name()}: only MySQL/MariaDB and SQLite are replayed")
        return 2

    async with _fresh_databases(url) as (library_url, twin_url):
        library = create_sql_engine(library_url.render_as_string(False))
        twin = create_sql_engine(twin_url.render_as_string(False))
        try:
            await upgrade_schema(library)
            await upgrade_schema(twin)
            recorder = _Recorder(library)
            store = SqlConversationStore(library)
            for size in [int(s) for s in args.sizes.split(",")]:
                async with twin.connect() as twin_conn:
                    replayer = await _Replayer.open(twin_conn)
                    case = _Case(store, recorder, replayer, size)
                    times = await case.measure(args)
                    if times is None:
                        print(f"members={size}: the library made no driver call")
                        return 1
                    differing = await _differing_tables(library, twin)
                    if differing:
                        print(f"members={size}: the replay diverged in {differing}")
                        return 1
                    library_ms, raw_ms = times
                    print(
                        f"members={size} library_ms={library_ms:.3f} "
                        f"raw_ms={raw_ms:.3f} "
                        f"updates_per_s={size / library_ms * 1000:.0f} "
                        f"raw_updates_per_s={size / raw_ms * 1000:.0f} "
                        f"ratio_raw={library_ms / raw_ms:.2f}",
                        flush=True,
                    )
                    if args.profile:
                        await case.profile(args.messages)
        finally:
            await library.dispose()
            await twin.dispose()
    return 0


class _Call(NamedTuple):
    """One call the library made on the driver."""

    method: str  # execute, executemany, commit or rollback
    statement: str = ""
    parameters: Any = None


class _Recorder:
    """Records the driver calls made through an engine while `calls` is a list."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.calls: list[_Call] | None = None
        sync_engine = engine.sync_engine
        event.listen(sync_engine, "do_execute", self._execute)
        event.listen(sync_engine, "do_executemany", self._executemany)
        event.listen(sync_engine, "do_execute_no_params", self._execute_no_params)
        event.listen(sync_engine, "commit", self._commit)
        event.listen(sync_engine, "rollback", self._rollback)

    # The dialect events see the driver call exactly: an executemany that
    # SQLAlchemy rewrites into one multi-row INSERT arrives as do_execute.
    def _execute(
        self, _cursor: Any, statement: str, parameters: Any, _context: Any
    ) -> None:
        if self.calls is not None:
            self.calls.append(_Call("execute", statement, parameters))

    def _executemany(
        self, _cursor: Any, statement: str, parameters: Any, _context: Any
    ) -> None:
        if self.calls is not None:
            self.calls.append(_Call("executemany", statement, parameters))

    def _execute_no_params(self, _cursor: Any, statement: str, _context: Any) -> None:
        if self.calls is not None:
            self.calls.append(_Call("execute", statement))

    def _commit(self, _conn: Any) -> None:
        if self.calls is not None:
            self.calls.append(_Call("commit"))

    def _rollback(self, _conn: Any) -> None:
        if self.calls is not None:
            self.calls.append(_Call("rollback"))


class _Replayer:
    """Makes recorded calls on a driver connection (asyncmy or aiosqlite)."""

    def __init__(self, driver: Any, cursor: Any) -> None:
        self._driver = driver
        self._cursor = cursor

    @classmethod
    async def open(cls, conn: AsyncConnection) -> _Replayer:
        """Returns a replayer on the driver connection under ``conn``."""
        driver = (await conn.get_raw_connection()).driver_connection
        if driver is None:
            raise RuntimeError("the twin's pooled connection has no driver connection")
        cursor = driver.cursor()
        if inspect.isawaitable(cursor):  # aiosqlite's is a coroutine
            cursor = await cursor
        return cls(driver, cursor)

    async def replay(self, calls: Sequence[_Call]) -> None:
        cursor = self._cursor
        for call in calls:
            if call.method == "execute":
                if call.parameters is None:
                    await cursor.execute(call.statement)
                else:
                    await cursor.execute(call.statement, call.parameters)
            elif call.method == "executemany":
                await cursor.executemany(call.statement, call.parameters)
            elif call.method == "commit":
                await self._driver.commit()
            else:
                await self._driver.rollback()
            if call.statement and cursor.description is not None:
                await cursor.fetchall()


class _Case:
    """One group size: its members, its conversation and the next seq."""

    def __init__(
        self,
        store: SqlConversationStore,
        recorder: _Recorder,
        replayer: _Replayer,
        size: int,
    ) -> None:
        self.store = store
        self.recorder = recorder
        self.replayer = replayer
        self.size = size
        self.members = [f"user{i:05d}" for i in range(size)]
        self.conversation = group_conversation(f"bench{size}")
        self.seqs = itertools.count(1)

    async def measure(self, args: argparse.Namespace) -> tuple[float, float] | None:
        """Returns the medians of both sides, in ms per message.

        None if the library made no driver call.
        """
        calls: list[_Call] = []
        for _ in range(max(args.warmup, 1)):
            _, _, calls = await self.pair()
        if not calls:
            return None
        if args.show:
            _show(self.size, calls)

        library_times, raw_times = [], []
        for _ in range(args.rounds):
            library_s = raw_s = 0.0
            for _ in range(args.messages):
                library_time, raw_time, _ = await self.pair()
                library_s += library_time
                raw_s += raw_time
            library_times.append(library_s * 1000 / args.messages)
            raw_times.append(raw_s * 1000 / args.messages)
        return statistics.median(library_times), statistics.median(raw_times)

    async def pair(
        self, clock: Callable[[], float] = time.perf_counter
    ) -> tuple[float, float, list[_Call]]:
        """Applies the next message with the library, then replays its calls.

        Returns the seconds of each side by ``clock``, and the calls.
        """
        update = self._next_update()
        calls: list[_Call] = []
        self.recorder.calls = calls
        try:
            start = clock()
            await self.store.apply_message(update, self.members)
            library_s = clock() - start
        finally:
            self.recorder.calls = None

        start = clock()
        await self.replayer.replay(calls)
        return library_s, clock() - start, calls

    async def profile(self, messages: int) -> None:
        """Prints both sides' CPU time, then where the library's time goes."""
        library_cpu = raw_cpu = 0.0
        for _ in range(messages):
            library_s, raw_s, _ = await self.pair(time.process_time)
            library_cpu += library_s
            raw_cpu += raw_s
        print(
            f"members={self.size} library_cpu_ms={library_cpu * 1000 / messages:.3f} "
            f"raw_cpu_ms={raw_cpu * 1000 / messages:.3f}"
        )

        profile = cProfile.Profile()
        for _ in range(messages):
            update = self._next_update()
            calls: list[_Call] = []
            self.recorder.calls = calls
            profile.enable()
            await self.store.apply_message(update, self.members)
            profile.disable()
            self.recorder.calls = None
            await self.replayer.replay(calls)
        _print_profile(profile, self.size, messages)

    def _next_update(self) -> SummaryUpdate:
        return SummaryUpdate(
            conversation_id=self.conversation,
            seq=next(self.seqs),
            message_id=new_message_id(),
            sender_id=self.members[0],
            preview="hello",
            created_at=now_ms(),
        )


@contextlib.asynccontextmanager
async def _fresh_databases(url: URL) -> AsyncIterator[tuple[URL, URL]]:
    """Makes the library's database and its twin; drops them at the end.

    On MySQL both live on the server of ``url`` (its user may create
    databases named ``fleets…``); SQLite files go to a temporary directory
    next to the file of ``url``.
    """
    name = f"fleets_bench_{uuid.uuid4().hex[:8]}"
    names = (name, f"{name}_twin")
    if url.get_backend_name() == "sqlite":
        parent = os.path.dirname(url.database or "") or None
        with tempfile.TemporaryDirectory(prefix="fleets_bench_", dir=parent) as tmp:
            library, twin = (
                url.set(database=os.path.join(tmp, f"{n}.db")) for n in names
            )
            yield library, twin
        return

    server = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with server.connect() as conn:
            for n in names:
                await conn.exec_driver_sql(
                    f"CREATE DATABASE `{n}` CHARACTER SET utf8mb4"
                )
        try:
            yield url.set(database=names[0]), url.set(database=names[1])
        finally:
            async with server.connect() as conn:
                for n in names:
                    await conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{n}`")
    finally:
        await server.dispose()


async def _differing_tables(a: AsyncEngine, b: AsyncEngine) -> list[str]:
    """Returns the names of the tables whose rows differ between two databases."""
    differing = []
    for table in schema.metadata.sorted_tables:
        query = select(table).order_by(*(table.primary_key.columns or table.columns))
        async with a.connect() as conn_a, b.connect() as conn_b:
            rows_a = (await conn_a.execute(query)).all()
            rows_b = (await conn_b.execute(query)).all()
        if rows_a != rows_b:
            differing.append(table.name)
    return differing


def _show(size: int, calls: Sequence[_Call]) -> None:
    print(f"members={size}: the driver calls of one message")
    for call in calls:
        text = " ".join(call.statement.split())
        if len(text) > 150:
            text = text[:150] + "…"
        rows = f" [{len(call.parameters)} rows]" if call.method == "executemany" else ""
        print(f"  {call.method}{rows} {text}")


def _print_profile(profile: cProfile.Profile, size: int, messages: int) -> None:
    stats = pstats.Stats(profile, stream=io.StringIO())
    entries: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(own for _, _, own, _, _ in entries.values())
    # Under SQLAlchemy's greenlets cProfile's cumulative times are wrong and
    # a switch can charge time to the built-in that ran just before it; the
    # own times of Python functions hold. Compiled driver code (asyncmy's
    # escaping and packets) is charged to the Python function that called it.
    print(
        f"members={size} profile: {total * 1000 / messages:.3f} ms per message "
        "under cProfile, shares of own time"
    )
    areas: dict[str, float] = {}
    for (filename, _, function), (_, _, own, _, _) in entries.items():
        area = _area(filename, function)
        areas[area] = areas.get(area, 0.0) + own
    for area, own in sorted(areas.items(), key=lambda item: -item[1]):
        print(f"  {own / total:6.1%}  {area}")

    print("  hottest functions:")
    hottest = sorted(entries.items(), key=lambda item: -item[1][2])[:20]
    for (filename, line, function), (_, calls, own, _, _) in hottest:
        where = f"{_short(filename)}:{line}({function})"
        print(f"  {own / total:6.1%}  {calls / messages:7.1f} calls/msg  {where}")


def _area(filename: str, function: str) -> str:
    """Names the part of the stack a profiled function belongs to."""
    if "select.epoll" in function or "select.select" in function:
        return "waiting for the database (epoll/select)"
    if "_socket.socket" in function:
        return "socket calls"
    if "greenlet" in function or "/greenlet/" in filename:
        return "greenlet switches (SQLAlchemy's asyncio bridge)"
    if filename.endswith("sqlalchemy/connectors/asyncio.py") and function in (
        "_execute_async",
        "_executemany_async",
    ):
        return "driver calls (with the compiled driver code they run)"
    if filename == "~":
        return "other built-ins"
    for part in ("fleets_mailbox", "sqlalchemy", "asyncmy", "aiosqlite"):
        if f"/{part}/" in filename:
            return part
    if "/asyncio/" in filename or filename.endswith("selectors.py"):
        return "asyncio"
    if "/bench/" in filename:
        return "bench"
    return "other (standard library)"


def _short(filename: str) -> str:
    for marker in ("site-packages/", "src/", "lib/python"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename
