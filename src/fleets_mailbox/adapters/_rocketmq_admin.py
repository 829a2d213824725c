"""The few admin calls of RocketMQ's remoting protocol that the bus needs.

The gRPC proxy can create consumer groups (on first use) but not delete
them, so `RocketMQBus` deletes its node groups at close by talking to the
name servers and brokers directly, as ``mqadmin deleteSubGroup`` does.

The remoting protocol frames each command as a 4-byte length, a 4-byte
header length whose high byte names the header's encoding (0 is JSON),
the JSON header, then the body. Request arguments travel in the header's
``extFields`` as strings. With an access key, requests are signed as the
broker's ACL expects: HMAC-SHA1 of the sorted ``extFields`` values and the
body, in base64.

Only JSON headers and one request at a time per connection are supported;
that is all these calls need.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import re
import struct
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "AdminError",
    "delete_groups",
    "offline_groups",
    "subscription_groups",
    "topic_names",
]

# Request codes (org.apache.rocketmq.remoting.protocol.RequestCode).
_GET_ALL_TOPIC_CONFIG = 21
_GET_BROKER_CLUSTER_INFO = 106
_GET_ALL_SUBSCRIPTIONGROUP_CONFIG = 201
_DELETE_SUBSCRIPTIONGROUP = 207
_DELETE_TOPIC_IN_BROKER = 215
_DELETE_TOPIC_IN_NAMESRV = 216
_GET_CONSUMER_CONNECTION_LIST = 203

_CONSUMER_NOT_ONLINE = 206

_SUCCESS = 0
_MASTER_ID = "0"
_MAX_FRAME = 64 * 1024 * 1024

# The server writes maps with integer keys unquoted ({0:"host:port"}).
_BARE_KEY = re.compile(rb"([{,])\s*(-?\d+)\s*:")
_opaque = itertools.count(1)


class AdminError(Exception):
    """A remoting call failed: unreachable, refused, or an unreadable answer.

    ``code`` is the server's response code when it refused, else None.
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def _frame(code: int, fields: Mapping[str, str], access_key: str, secret: str) -> bytes:
    ext = dict(fields)
    if access_key:
        ext["AccessKey"] = access_key
        content = "".join(ext[k] for k in sorted(ext)).encode()
        digest = hmac.new(secret.encode(), content, hashlib.sha1).digest()
        ext["Signature"] = base64.b64encode(digest).decode()
    header = json.dumps(
        {
            "code": code,
            "language": "PYTHON",
            "version": 0,
            "opaque": next(_opaque),
            "flag": 0,
            "serializeTypeCurrentRPC": "JSON",
            "extFields": ext,
        },
        separators=(",", ":"),
    ).encode()
    return struct.pack(">II", 4 + len(header), len(header)) + header


class _Connection:
    """One remoting connection to a name server or a broker."""

    def __init__(self, address: str, access_key: str, secret_key: str) -> None:
        self.address = address
        self._access_key = access_key
        self._secret_key = secret_key
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def call(self, code: int, **fields: str) -> bytes:
        """Sends one request and returns the body of a successful answer."""
        try:
            reader, writer = await self._open()
            writer.write(_frame(code, fields, self._access_key, self._secret_key))
            await writer.drain()
            (length,) = struct.unpack(">I", await reader.readexactly(4))
            if not 4 <= length <= _MAX_FRAME:
                raise AdminError(f"{self.address} sent a frame of {length} bytes")
            frame = await reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            await self.close()
            raise AdminError(f"{self.address}: {exc or type(exc).__name__}") from exc

        (marked,) = struct.unpack(">I", frame[:4])
        encoding, size = marked >> 24, marked & 0xFFFFFF
        if encoding != 0 or size > len(frame) - 4:
            raise AdminError(f"{self.address} answered in an encoding other than JSON")
        try:
            header = json.loads(frame[4 : 4 + size])
        except ValueError as exc:
            raise AdminError(f"{self.address} sent an unreadable header") from exc
        answer = header.get("code")
        if answer != _SUCCESS:
            raise AdminError(
                f"{self.address} refused request {code}: "
                f"{header.get('remark') or answer}",
                answer if isinstance(answer, int) else None,
            )
        return frame[4 + size :]

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            host, _, port = self.address.rpartition(":")
            self._reader, self._writer = await asyncio.open_connection(host, int(port))
        return self._reader, self._writer

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _body(data: bytes, address: str) -> Any:
    try:
        return json.loads(_BARE_KEY.sub(rb'\1"\2":', data) or b"{}")
    except ValueError as exc:
        raise AdminError(f"{address} sent an unreadable body") from exc


class _Cluster:
    """The name servers of a cluster and connections to its master brokers."""

    def __init__(
        self, name_servers: Sequence[str], access_key: str, secret_key: str
    ) -> None:
        self._keys = (access_key, secret_key)
        self.name_servers = [_Connection(a, *self._keys) for a in name_servers]
        self.masters: list[_Connection] = []

    async def connect(self) -> None:
        """Reads the master brokers from the first name server that answers."""
        errors: list[str] = []
        for name_server in self.name_servers:
            try:
                data = await name_server.call(_GET_BROKER_CLUSTER_INFO)
            except AdminError as exc:
                errors.append(str(exc))
                continue
            info = _body(data, name_server.address)
            brokers = info.get("brokerAddrTable") or {}
            addresses = sorted(
                {
                    str(broker["brokerAddrs"][_MASTER_ID])
                    for broker in brokers.values()
                    if _MASTER_ID in (broker.get("brokerAddrs") or {})
                }
            )
            self.masters = [_Connection(a, *self._keys) for a in addresses]
            return
        raise AdminError("no name server answered: " + "; ".join(errors))

    async def close(self) -> None:
        for connection in [*self.name_servers, *self.masters]:
            await connection.close()

    async def table_names(self, code: int, table: str) -> set[str]:
        """Returns the keys of ``table`` in the answers of every master to ``code``."""
        names: set[str] = set()
        for broker in self.masters:
            data = await broker.call(code)
            names |= set(_body(data, broker.address).get(table) or {})
        return names


@contextlib.asynccontextmanager
async def _cluster(
    name_servers: Sequence[str], access_key: str, secret_key: str
) -> AsyncIterator[_Cluster]:
    """A connected `_Cluster`, closed at the end."""
    cluster = _Cluster(name_servers, access_key, secret_key)
    try:
        await cluster.connect()
        yield cluster
    finally:
        await cluster.close()


def _group_topics(group: str, topics: Iterable[str]) -> set[str]:
    """Returns the retry and dead-letter topics a broker may have for ``group``."""
    names = {f"%RETRY%{group}", f"%DLQ%{group}"}
    for topic in topics:
        # Retry topics of pop consumers (the proxy's), old and new spelling.
        names |= {f"%RETRY%{group}_{topic}", f"%RETRY%{group}+{topic}"}
    return names


async def delete_groups(
    name_servers: Sequence[str],
    groups: Mapping[str, Collection[str]],
    *,
    access_key: str = "",
    secret_key: str = "",
) -> None:
    """Deletes consumer groups, their queue positions and their retry topics.

    ``groups`` maps each group to the topics it consumed. The groups are
    deleted on every master broker the name servers know, as ``mqadmin
    deleteSubGroup -r true`` does; deleting a group that does not exist is
    not an error. Raises `AdminError` when a server cannot be reached or
    refuses.
    """
    async with _cluster(name_servers, access_key, secret_key) as cluster:
        for broker in cluster.masters:
            for group in groups:
                await broker.call(
                    _DELETE_SUBSCRIPTIONGROUP, groupName=group, cleanOffset="true"
                )

        # Deleted whether they exist or not: a broker registers a new topic
        # with the name servers only every 30 s, so their list lags.
        retry_topics: set[str] = set()
        for group, topics in groups.items():
            retry_topics |= _group_topics(group, topics)
        for topic in sorted(retry_topics):
            for broker in cluster.masters:
                await broker.call(_DELETE_TOPIC_IN_BROKER, topic=topic)
            for name_server in cluster.name_servers:
                await name_server.call(_DELETE_TOPIC_IN_NAMESRV, topic=topic)


async def offline_groups(
    name_servers: Sequence[str],
    prefixes: Collection[str],
    *,
    access_key: str = "",
    secret_key: str = "",
) -> set[str]:
    """Returns the groups named ``<prefix>…`` that no consumer is connected to.

    A group counts as offline when no master broker knows a consumer of it
    (the consumers that the gRPC proxy serves are registered with the
    brokers too). Raises `AdminError` when a server cannot be reached.
    """
    async with _cluster(name_servers, access_key, secret_key) as cluster:
        names = await cluster.table_names(
            _GET_ALL_SUBSCRIPTIONGROUP_CONFIG, "subscriptionGroupTable"
        )
        offline = set()
        for name in sorted(n for n in names if n.startswith(tuple(prefixes))):
            for broker in cluster.masters:
                try:
                    await broker.call(_GET_CONSUMER_CONNECTION_LIST, consumerGroup=name)
                except AdminError as exc:
                    if exc.code != _CONSUMER_NOT_ONLINE:
                        raise
                else:
                    break
            else:
                offline.add(name)
        return offline


async def subscription_groups(
    name_servers: Sequence[str], *, access_key: str = "", secret_key: str = ""
) -> set[str]:
    """Returns the names of the consumer groups on every master broker."""
    async with _cluster(name_servers, access_key, secret_key) as cluster:
        return await cluster.table_names(
            _GET_ALL_SUBSCRIPTIONGROUP_CONFIG, "subscriptionGroupTable"
        )


async def topic_names(
    name_servers: Sequence[str], *, access_key: str = "", secret_key: str = ""
) -> set[str]:
    """Returns the names of the topics on every master broker."""
    async with _cluster(name_servers, access_key, secret_key) as cluster:
        return await cluster.table_names(_GET_ALL_TOPIC_CONFIG, "topicConfigTable")
