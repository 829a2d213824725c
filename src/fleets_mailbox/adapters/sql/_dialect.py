"""What differs between SQLite, MySQL/MariaDB and PostgreSQL, in one place.

The stores build their statements through `Database`: `Database.write` opens
a transaction that takes the write lock at once on SQLite (``BEGIN
IMMEDIATE``), `Database.insert_ignore` and `Database.upsert` build the
dialect's INSERT variant, and `translate_errors` maps driver errors to
`StoreError`. For the hot paths, `Database.run_write` runs a transaction of
synchronous code in one go and a `DriverStatement` passes rows of plain
values to the driver. Column types with per-dialect variants are made here
too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, TypeVar, TypeVarTuple

from sqlalchemy import ColumnElement, Select, String, Table, Text, case, event, exc
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection, CursorResult, Dialect, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolResetState, StaticPool
from sqlalchemy.sql.base import ReadOnlyColumnCollection
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.elements import KeyedColumnElement
from sqlalchemy.types import TypeEngine
from sqlalchemy.util import greenlet_spawn

from ...errors import FleetsError, StoreError, TransientStoreError

__all__ = [
    "BUSY_TIMEOUT_MS",
    "TABLE_OPTIONS",
    "Database",
    "DriverStatement",
    "IntegrityViolation",
    "body_type",
    "create_sql_engine",
    "id_type",
    "translate_errors",
]

logger = logging.getLogger(__name__)

_Ts = TypeVarTuple("_Ts")
_T = TypeVar("_T")

#: How long a SQLite connection waits for another's write lock.
BUSY_TIMEOUT_MS = 30_000

# An execution option that makes a SQLite transaction BEGIN IMMEDIATE.
_WRITE = "fleets_write"

_MYSQL_NAMES = ("mysql", "mariadb")

# MySQL/MariaDB error numbers worth a retry: too many connections, lock wait
# timeout, deadlock, query interrupted (KILL QUERY), read-only (a failover
# under way), statement timeout, server gone or unreachable, connection
# killed.
_MYSQL_TRANSIENT = {
    1040,
    1205,
    1213,
    1290,
    1317,
    1927,
    1969,
    2002,
    2003,
    2006,
    2013,
    2055,
    4031,
}

# PostgreSQL SQLSTATEs worth a retry (besides class 08, connection errors):
# serialization failure, deadlock, lock not available, server shutting down,
# too many connections.
_PG_TRANSIENT = {"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300"}

_TRANSIENT_WORDS = (
    "database is locked",
    "database table is locked",
    "deadlock",
    "lock wait timeout",
    "connection was closed",
    "connection is closed",
    "server has gone away",
    "lost connection",
)

Columns = ReadOnlyColumnCollection[str, KeyedColumnElement[Any]]


#: Table options: InnoDB and utf8mb4 on MySQL, whatever the server's defaults.
TABLE_OPTIONS: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def id_type(length: int) -> TypeEngine[str]:
    """Returns a VARCHAR for ids that compares byte by byte on every dialect.

    MySQL's default collations ignore case and PostgreSQL's sort by locale;
    ids must compare and sort exactly as Python strings do.
    """
    return (
        String(length)
        .with_variant(mysql.VARCHAR(length, collation="utf8mb4_bin"), *_MYSQL_NAMES)
        .with_variant(postgresql.VARCHAR(length, collation="C"), "postgresql")
    )


def body_type() -> TypeEngine[str]:
    """Returns a type for long text (message bodies): MEDIUMTEXT on MySQL."""
    return Text().with_variant(mysql.MEDIUMTEXT(), *_MYSQL_NAMES)


class IntegrityViolation(StoreError):
    """A statement broke a unique key; the stores catch it where they expect it."""


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Turns driver and SQLAlchemy errors into `StoreError`, chaining the cause.

    Lock timeouts, deadlocks and lost connections become
    `TransientStoreError`; broken unique keys `IntegrityViolation`.
    """
    try:
        yield
    except FleetsError:
        raise
    except exc.IntegrityError as error:
        raise IntegrityViolation(f"SQL store: {error.orig}") from error
    except exc.DBAPIError as error:
        if _is_transient(error):
            logger.debug("transient SQL error: %s", error.orig)
            raise TransientStoreError(f"SQL store: {error.orig}") from error
        raise StoreError(f"SQL store: {error.orig}") from error
    except exc.TimeoutError as error:
        raise TransientStoreError(f"SQL store: {error}") from error
    except exc.SQLAlchemyError as error:
        raise StoreError(f"SQL store: {error}") from error
    except OSError as error:
        raise TransientStoreError(f"SQL store: {error}") from error


def _is_transient(error: exc.DBAPIError) -> bool:
    if error.connection_invalidated:
        return True
    orig = error.orig
    sqlite_code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(sqlite_code, int):
        # SQLITE_BUSY and SQLITE_LOCKED, with any extended code.
        return sqlite_code & 0xFF in (5, 6)
    # MySQL drivers put the error number first; some also carry a SQLSTATE,
    # which is the vague HY000 for a lock wait timeout.
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):
        return args[0] in _MYSQL_TRANSIENT
    state = getattr(orig, "sqlstate", None)
    if isinstance(state, str) and state:
        return state.startswith("08") or state in _PG_TRANSIENT
    text = str(orig).lower()
    return any(word in text for word in _TRANSIENT_WORDS)


def create_sql_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """Creates an engine set up for the stores.

    SQLite gets WAL mode, a busy timeout and ``BEGIN IMMEDIATE`` for write
    transactions, so that several processes can share one file; MySQL runs
    in READ COMMITTED, which takes no gap locks for the upserts. A MySQL
    connection is checked before each use (see `_mysql_checkout`), and
    rolled back on its return to the pool only if the server says a
    transaction is open. Raises `ValueError` for a URL that is not one, or
    names no asyncio driver.
    """
    try:
        driver = make_url(url).drivername
    except exc.ArgumentError as error:
        raise ValueError(f"not a database URL: {error}") from error
    if "+" not in driver:
        raise ValueError(
            f"the URL names no asyncio driver ({driver}://…): use "
            "mysql+asyncmy://, sqlite+aiosqlite:// or postgresql+asyncpg://"
        )
    options: dict[str, Any] = {"echo": echo}
    is_mysql = url.startswith(_MYSQL_NAMES)
    if is_mysql:
        options.update(isolation_level="READ COMMITTED", pool_recycle=3600)
    if url.startswith("sqlite") or is_mysql:
        # _sqlite_reset and _mysql_reset roll back only what is open: a round
        # trip or a thread hop less for every transaction that committed.
        options.update(pool_reset_on_return=None)
    if not url.startswith("sqlite") and not is_mysql:
        options.update(pool_pre_ping=True)
    engine = create_async_engine(url, **options)
    if is_mysql:
        event.listen(engine.sync_engine, "checkout", _mysql_checkout)
        event.listen(engine.sync_engine, "reset", _mysql_reset)
    Database(engine)
    return engine


# The locks of engines whose pool is one connection (SQLite's :memory:).
_serial_locks: weakref.WeakKeyDictionary[Engine, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


class Database:
    """An engine and the dialect's ways of beginning, inserting and upserting.

    Making one sets the engine up for the stores (once per engine).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.name = engine.dialect.name
        self._writer = engine.execution_options(**{_WRITE: True})
        sync_engine = engine.sync_engine
        # A :memory: SQLite database is one connection shared by every task;
        # its transactions must not interleave.
        self._serial: asyncio.Lock | None = None
        if isinstance(engine.pool, StaticPool):
            self._serial = _serial_locks.setdefault(sync_engine, asyncio.Lock())
        sqlite_ready = event.contains(sync_engine, "connect", _sqlite_connect)
        if self.name == "sqlite" and not sqlite_ready:
            event.listen(sync_engine, "connect", _sqlite_connect)
            event.listen(sync_engine, "begin", _sqlite_begin)
            event.listen(sync_engine, "reset", _sqlite_reset)

    @property
    def is_mysql(self) -> bool:
        return self.name in _MYSQL_NAMES

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reading; nothing done on it is committed."""
        async with self._serialised():
            with translate_errors():
                async with self.engine.connect() as conn:
                    yield conn

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction that commits at the end unless an exception leaves it.

        On SQLite it holds the database's write lock from its first statement,
        so a read followed by a write in it cannot be overtaken.
        """
        async with self._serialised():
            with translate_errors():
                async with self._writer.begin() as conn:
                    yield conn

    async def run_write(self, fn: Callable[[Connection, *_Ts], _T], *args: *_Ts) -> _T:
        """Runs ``fn(conn, *args)`` in a transaction like `write`'s.

        ``fn`` is synchronous code on SQLAlchemy's `Connection`. The whole
        transaction, from taking the connection from the pool to giving it
        back, runs in one greenlet of SQLAlchemy's asyncio bridge (what
        `AsyncConnection.run_sync` uses): its steps cost no greenlet, task or
        turn of the event loop each.
        """
        writer = self._writer.sync_engine

        def transaction() -> _T:
            with writer.connect() as conn, conn.begin():
                return fn(conn, *args)

        async with self._serialised():
            with translate_errors():
                return await greenlet_spawn(transaction)

    @contextlib.asynccontextmanager
    async def _serialised(self) -> AsyncIterator[None]:
        if self._serial is None:
            yield
        else:
            async with self._serial:
                yield

    def insert(self, table: Table) -> Insert:
        """Returns the dialect's INSERT construct (with its upsert clauses)."""
        if self.name == "postgresql":
            return postgresql.insert(table)
        if self.is_mysql:
            return mysql.insert(table)
        return sqlite.insert(table)

    def insert_ignore(self, table: Table) -> Insert:
        """Returns an INSERT that skips rows whose primary key exists."""
        if self.is_mysql:
            # A no-op update rather than INSERT IGNORE, which would also turn
            # other errors into warnings.
            first = next(iter(table.primary_key.columns))
            return mysql.insert(table).on_duplicate_key_update({first.name: first})
        if self.name == "postgresql":
            return postgresql.insert(table).on_conflict_do_nothing()
        return sqlite.insert(table).on_conflict_do_nothing()

    def upsert(
        self,
        table: Table,
        keys: Sequence[str],
        assign: Callable[[Columns], Sequence[tuple[str, ColumnElement[Any]]]],
        guard: Callable[[Columns], ColumnElement[bool]] | None = None,
    ) -> Insert:
        """Returns an INSERT that updates the existing row instead.

        ``assign`` gets the incoming row's columns and returns the assignments
        in order; ``guard``, if given, says when the existing row changes.
        The assignments must read only the old row's values: MySQL applies
        them one by one, so a column that others read comes last. They must
        hold no bound parameters either (write constants with
        ``literal_column``): MySQL drivers run an executemany as one INSERT
        with many VALUES rows and cannot place parameters after them.
        """
        if self.is_mysql:
            stmt = mysql.insert(table)
            new = stmt.inserted
            pairs = list(assign(new))
            if guard is not None:
                condition = guard(new)
                pairs = [(n, case((condition, e), else_=table.c[n])) for n, e in pairs]
            return stmt.on_duplicate_key_update(pairs)
        dialect_insert = (
            postgresql.insert if self.name == "postgresql" else sqlite.insert
        )
        upsert = dialect_insert(table)
        new = upsert.excluded
        return upsert.on_conflict_do_update(
            index_elements=[table.c[k] for k in keys],
            set_=dict(assign(new)),
            where=None if guard is None else guard(new),
        )

    @contextlib.asynccontextmanager
    async def migrating(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction for migrating, one process at a time.

        SQLite needs nothing more than its ``BEGIN IMMEDIATE``; PostgreSQL
        takes an advisory lock for the transaction. MySQL commits DDL at
        once, so its lock is a named lock held by a connection of its own
        until the migration's transaction has committed: the next process
        then sees the new revision.
        """
        if not self.is_mysql:
            async with self.write() as conn:
                if self.name == "postgresql":
                    await conn.exec_driver_sql(
                        "SELECT pg_advisory_xact_lock(4165724981)"
                    )
                yield conn
            return
        async with self.read() as holder:
            got = await holder.exec_driver_sql(
                "SELECT GET_LOCK('fleets_mailbox_migrate', 60)"
            )
            if got.scalar() != 1:
                raise TransientStoreError(
                    "another process has been migrating the schema for 60 s"
                )
            try:
                async with self.write() as conn:
                    yield conn
            finally:
                await holder.exec_driver_sql(
                    "SELECT RELEASE_LOCK('fleets_mailbox_migrate')"
                )


# The placeholder of each paramstyle whose placeholders are all alike.
_PLACEHOLDERS = {"format": "%s", "qmark": "?"}


class DriverStatement:
    """A statement compiled once, run with rows of plain values.

    SQLAlchemy checks and converts each parameter row of each execution,
    which costs more than the database's own work for a statement with a
    row per recipient. This one is compiled at its first use for the
    connection's dialect, and its rows go to the driver as they are: tuples
    in the order of ``names``, holding values that need no conversion (ids
    and integers). If ``expanding``, the last name is an expanding
    parameter (``bindparam(name, expanding=True)``, as in ``IN``) and takes a
    non-empty sequence. Dialects with numbered or named placeholders run the
    statement through SQLAlchemy, with the same rows.

    It runs on a synchronous `Connection`: in `Database.run_write`, or
    through `AsyncConnection.run_sync`.
    """

    def __init__(
        self,
        statement: Insert | Select[Any],
        names: Sequence[str],
        *,
        expanding: bool = False,
    ) -> None:
        self._statement = statement
        self._names = tuple(names)
        self._expanding = expanding
        self._dialect: Dialect | None = None
        self._sql: str | None = None
        self._placeholder = ""
        # How SQLAlchemy leaves an expanding parameter in compiled SQL.
        self._marker = f"__[POSTCOMPILE_{self._names[-1]}]" if expanding else ""

    def execute(
        self, conn: Connection, rows: tuple[Any, ...] | list[tuple[Any, ...]]
    ) -> CursorResult[*tuple[Any, ...]]:
        """Runs the statement once with a tuple, or once per tuple of a list."""
        sql = self._driver_sql(conn.dialect)
        if sql is None:
            if isinstance(rows, list):
                return conn.execute(
                    self._statement,
                    [dict(zip(self._names, r, strict=True)) for r in rows],
                )
            return conn.execute(
                self._statement, dict(zip(self._names, rows, strict=True))
            )
        if self._expanding:
            if isinstance(rows, list):
                raise TypeError("an expanding parameter takes one row of values")
            *fixed, values = rows
            if not values:
                raise ValueError("an expanding parameter takes at least one value")
            places = ", ".join([self._placeholder] * len(values))
            sql = sql.replace(self._marker, places)
            rows = (*fixed, *values)
        return conn.exec_driver_sql(sql, rows)

    def _driver_sql(self, dialect: Dialect) -> str | None:
        # Compiled when the dialect has met the server: MySQL's upsert differs
        # between versions.
        if dialect is not self._dialect:
            placeholder = _PLACEHOLDERS.get(dialect.paramstyle)
            sql = None
            if placeholder is not None:
                compiled = self._statement.compile(dialect=dialect)
                if tuple(compiled.positiontup or ()) != self._names:
                    raise ValueError(
                        f"the statement's parameters are {compiled.positiontup}, "
                        f"not {list(self._names)}"
                    )
                sql = compiled.string
                if self._expanding and self._marker not in sql:
                    sql = None  # not the rendering we know: let SQLAlchemy do it
            self._sql, self._placeholder = sql, placeholder or ""
            self._dialect = dialect
        return self._sql


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take BEGIN away from the driver: _sqlite_begin emits it.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # A deferred transaction that reads and then writes can fail at once with
    # "database is locked" when another process wrote in between, whatever
    # the busy timeout; an immediate one waits for the lock up front. Reads
    # get no BEGIN: each of their statements reads one consistent snapshot.
    if conn.get_execution_options().get(_WRITE, False):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_reset(
    dbapi_connection: Any, record: ConnectionPoolEntry, state: PoolResetState
) -> None:
    if not state.asyncio_safe:
        return
    driver = record.driver_connection
    if driver is None or getattr(driver, "in_transaction", True):
        dbapi_connection.rollback()


def _mysql_checkout(
    dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any
) -> None:
    # Instead of the pool's pre-ping, a round trip for every transaction.
    # When the server ends a connection (KILL, wait_timeout, a restart), its
    # socket closes, and asyncmy's protocol marks the stream broken as soon
    # as the event loop reads the end: an idle connection in the pool has
    # been marked by the time it is taken (asyncmy's own pool trusts the same
    # test). DisconnectionError makes the pool connect afresh. A connection
    # that dies unseen fails its first statement with a lost connection,
    # which translate_errors makes transient. A driver that keeps no such
    # state is pinged.
    broken = getattr(record.driver_connection, "_stream_broken", None)
    if broken is None:
        try:
            dbapi_connection.ping(False)
        except Exception as error:
            raise exc.DisconnectionError(f"MySQL ping failed: {error}") from error
    elif broken:
        raise exc.DisconnectionError("the MySQL server closed the connection")


def _mysql_reset(
    dbapi_connection: Any, record: ConnectionPoolEntry, state: PoolResetState
) -> None:
    # The server flags an open transaction in the status of every reply, and
    # the driver keeps the last one it read (asyncmy's own pool trusts it the
    # same way). COMMIT and ROLLBACK clear it; any statement that started a
    # transaction, even a plain SELECT of an InnoDB table, sets it. Without
    # the flag at hand, roll back.
    if not state.asyncio_safe or state.transaction_was_reset:
        return
    in_transaction = getattr(record.driver_connection, "get_transaction_status", None)
    if in_transaction is None or in_transaction():
        dbapi_connection.rollback()
