"""Fixtures shared by the tests: store bundles for each embedded backend.

``backend`` runs a test once per backend: "memory" (`Stores.memory`),
"sqlite" (`fleets_mailbox.adapters.sql.open_sql_stores` on a file in the
test's temporary directory) and "mongo" (content and mailboxes in a new
database of the server of ``FLEETS_TEST_MONGO_URI``, the rest in SQLite;
marked ``mongo``, skipped with the reason when the variable is unset) and
"mysql" (every store in a new database of the MySQL/MariaDB server of
``FLEETS_TEST_MYSQL_URL``: the MySQL-only deployment; marked ``mysql``).
``stores`` is a fresh bundle of that backend; ``stores_factory`` opens more
of them, e.g. one per Hypothesis example.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import itertools
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import ModuleType

import pytest

from fleets_mailbox import Stores

BACKENDS = (
    "memory",
    "sqlite",
    pytest.param("mongo", marks=pytest.mark.mongo),
    pytest.param("mysql", marks=pytest.mark.mysql),
)

StoresFactory = Callable[[], Awaitable[Stores]]


def sql_adapter() -> ModuleType | None:
    """Returns `fleets_mailbox.adapters.sql`, or None while it does not exist."""
    try:
        return importlib.import_module("fleets_mailbox.adapters.sql")
    except ModuleNotFoundError as exc:
        if exc.name not in ("fleets_mailbox.adapters.sql", "fleets_mailbox.adapters"):
            raise
        return None


def require_sql() -> ModuleType:
    """Returns the SQL adapter module, or skips the test while it is missing."""
    module = sql_adapter()
    if module is None:
        pytest.skip("fleets_mailbox.adapters.sql (the SQLite backend) is not there yet")
    return module


def mongo_uri() -> str:
    """Returns the test MongoDB's URI, or skips the test when none is set."""
    uri = os.environ.get("FLEETS_TEST_MONGO_URI")
    if not uri:
        pytest.skip(
            "FLEETS_TEST_MONGO_URI is not set; scripts/services.sh up mongo "
            "starts a server and prints it (scripts/test.sh does both)"
        )
    return uri


async def drop_mongo_database(uri: str, database: str) -> None:
    """Drops a test database."""
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(uri)
    try:
        await client.drop_database(database)
    finally:
        await client.close()


def mysql_url() -> str:
    """Returns the test MySQL server's URL, or skips the test when none is set."""
    url = os.environ.get("FLEETS_TEST_MYSQL_URL")
    if not url:
        pytest.skip(
            "FLEETS_TEST_MYSQL_URL is not set; scripts/services.sh up mysql "
            "starts a server and prints it (scripts/test.sh does both)"
        )
    return url


async def create_mysql_database(url: str) -> str:
    """Creates an empty database on the server of ``url``; returns its URL.

    The test user may create databases named ``fleets…``.
    """
    from sqlalchemy.engine import make_url

    name = f"fleets_t_{uuid.uuid4().hex[:12]}"
    await _mysql_admin(url, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    return make_url(url).set(database=name).render_as_string(hide_password=False)


async def drop_mysql_database(server: str, url: str) -> None:
    """Drops the database of ``url``, if it is there, on the server of ``server``."""
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    await _mysql_admin(server, f"DROP DATABASE IF EXISTS `{name}`")


async def _mysql_admin(url: str, statement: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql(statement)
    finally:
        await engine.dispose()


def sqlite_url(path: Path) -> str:
    """Returns the SQLAlchemy URL of a SQLite database file."""
    return f"sqlite+aiosqlite:///{path}"


def dropping_on_close(stores: Stores, drop: Callable[[], Awaitable[None]]) -> Stores:
    """Makes `Stores.close` also call ``drop`` (dropping the test database)."""
    close = stores.on_close

    async def close_and_drop() -> None:
        if close is not None:
            await close()
        await drop()

    stores.on_close = close_and_drop
    return stores


def new_stores_factory(backend: str, directory: Path) -> StoresFactory:
    """Returns a function that opens a fresh, empty bundle of ``backend``.

    Each call opens new stores (a new database file for "sqlite"); the caller
    closes them with `Stores.close`.
    """
    if backend == "memory":

        async def memory() -> Stores:
            return Stores.memory()

        return memory
    if backend == "sqlite":
        sql = require_sql()
        numbers = itertools.count(1)

        async def sqlite() -> Stores:
            path = directory / f"fleets-{next(numbers)}.sqlite3"
            stores: Stores = await sql.open_sql_stores(sqlite_url(path))
            return stores

        return sqlite
    if backend == "mongo":
        sql = require_sql()
        uri = mongo_uri()
        from fleets_mailbox.adapters.mongo import with_mongo

        numbers = itertools.count(1)

        async def mongo() -> Stores:
            path = directory / f"fleets-{next(numbers)}.sqlite3"
            database = f"fleets_test_{uuid.uuid4().hex[:12]}"
            stores: Stores = await with_mongo(
                await sql.open_sql_stores(sqlite_url(path)), uri, database
            )
            return dropping_on_close(
                stores, functools.partial(drop_mongo_database, uri, database)
            )

        return mongo
    if backend == "mysql":
        sql = require_sql()
        server = mysql_url()

        async def mysql() -> Stores:
            url = await create_mysql_database(server)
            stores: Stores = await sql.open_sql_stores(url)
            return dropping_on_close(
                stores, functools.partial(drop_mysql_database, server, url)
            )

        return mysql
    raise ValueError(f"unknown backend {backend!r}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The name of a backend; the tests using it run once for each."""
    name: str = request.param
    if name in ("sqlite", "mongo", "mysql"):
        require_sql()
    if name == "mongo":
        mongo_uri()
    if name == "mysql":
        mysql_url()
    return name


@pytest.fixture
def stores_factory(backend: str, tmp_path: Path) -> StoresFactory:
    """Opens fresh bundles of the test's backend; the caller closes them."""
    return new_stores_factory(backend, tmp_path)


@pytest.fixture
async def stores(stores_factory: StoresFactory) -> AsyncIterator[Stores]:
    """A fresh bundle of the test's backend, closed after the test."""
    opened = await stores_factory()
    try:
        yield opened
    finally:
        await opened.close()


# ---------------------------------------------------------------- RocketMQ

ROOT = Path(__file__).resolve().parent.parent


def rocketmq_endpoints() -> str:
    """Returns the test proxy's endpoints, or skips the test when none is set."""
    endpoints = os.environ.get("FLEETS_TEST_ROCKETMQ_ENDPOINTS")
    if not endpoints:
        pytest.skip(
            "FLEETS_TEST_ROCKETMQ_ENDPOINTS is not set; scripts/services.sh up "
            "rocketmq starts a broker and prints it (scripts/test.sh does both)"
        )
    return endpoints


def rocketmq_name_server() -> str:
    """Returns the test broker's name server, or skips the test when none is set."""
    rocketmq_endpoints()
    name_server = os.environ.get("FLEETS_TEST_ROCKETMQ_NAME_SERVER")
    if not name_server:
        pytest.skip(
            "FLEETS_TEST_ROCKETMQ_NAME_SERVER is not set; scripts/services.sh up "
            "rocketmq prints it beside the endpoints"
        )
    return name_server


def _free_broker_ports() -> dict[str, int]:
    """Returns ports for a second broker, all free on every interface."""
    for base in range(21000, 60000, 1000):
        ports = {
            "FLEETS_ROCKETMQ_NAMESRV_PORT": base + 76,
            "FLEETS_ROCKETMQ_BROKER_PORT": base + 911,
            "FLEETS_ROCKETMQ_GRPC_PORT": base + 81,
            "FLEETS_ROCKETMQ_REMOTING_PORT": base + 80,
        }
        wanted = [*ports.values(), base + 909, base + 912]
        try:
            for port in wanted:
                with socket.socket() as probe:
                    probe.bind(("0.0.0.0", port))
        except OSError:
            continue
        return ports
    raise AssertionError("no free ports for a second broker")


class SecondBroker:
    """A RocketMQ of the test's own, beside the shared one, that it may stop.

    Run with scripts/services-rocketmq.sh on free ports and its own
    directory; ``topics`` (space-separated) are created besides the event
    topics. Needs java.
    """

    def __init__(self, directory: Path, topics: str = "") -> None:
        if shutil.which("java") is None:
            pytest.skip("java is not on PATH; a second broker needs it")
        self.ports = _free_broker_ports()
        self.env = {
            **os.environ,
            **{name: str(port) for name, port in self.ports.items()},
            "FLEETS_SERVICES_DIR": str(directory),
            "FLEETS_ROCKETMQ_TOPICS": topics,
        }
        self.endpoints = f"127.0.0.1:{self.ports['FLEETS_ROCKETMQ_GRPC_PORT']}"

    async def run(self, command: str) -> None:
        """Runs ``up`` or ``down`` of the script for this broker."""
        process = await asyncio.create_subprocess_exec(
            str(ROOT / "scripts" / "services-rocketmq.sh"),
            command,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await process.communicate()
        assert process.returncode == 0, err.decode()[-3000:]
