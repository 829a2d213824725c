"""MongoDB adapters: message content and mailboxes, on pymongo's async client.

`MongoMessageStore` keeps each message once; `MongoMailboxStore` keeps the
per-user mailbox entries and each conversation's log (seq counter, send
lease, holes). Open both with `open_mongo_stores`, which creates the indexes
idempotently, or move a `Stores` bundle's content and mailboxes to MongoDB
with `with_mongo`. Requires the ``mongo`` extra (pymongo >= 4.9). Against a
test stand-in such as SecantusDB pass ``retryWrites=false`` (docs/mongo.md).

Documents (collection names take an optional prefix, default ``fleets_``)::

    messages       {_id: message_id, conversation_id, sender_id, client_msg_id,
                    body, created_at, seq, status, kind, edited_at, deleted,
                    recipients: [user_id, ...]  (only while pending)}
    mailbox        {_id: ObjectId, user_id, conversation_id, seq, message_id,
                    sender_id, created_at, deleted}
    conversations  {_id: conversation_id, last_seq, holder, lease_until,
                    pending_message_id, holes: [seq, ...]}

Indexes::

    messages       unique (sender_id, client_msg_id)   the idempotency key
                   (status, created_at)                repair finds pending sends
    mailbox        unique (user_id, conversation_id, seq)   one entry per
                                                        recipient; serves sync
                   (conversation_id, seq)              deletes for everyone

While a conversation's log names a pending message, that message's seq is
the log's ``last_seq``: both are set by the same atomic update, so there is
no separate pending seq to drift.

Sharding: shard ``mailbox`` by ``{user_id: "hashed"}`` or by the ranged key
``{user_id: 1, conversation_id: 1, seq: 1}`` (sync reads one user's range);
shard ``messages`` by ``{_id: "hashed"}``; ``conversations`` is small and
keyed by ``_id``. The unique idempotency index then needs the shard key:
with hashed ``_id`` sharding, keep ``messages`` unsharded or shard it by
``{sender_id: 1, client_msg_id: 1}`` instead.

Every value that reaches a query is checked to be a string or an integer
first, so a request can never smuggle an operator such as ``{"$ne": ""}``.
Driver errors are translated in `_translate`: network errors, "not primary"
and write conflicts become `TransientStoreError`, everything else
`StoreError`, with the driver's exception as the cause.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Collection, Iterator, Sequence
from typing import Any

import attrs
from pymongo import ASCENDING, AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
)

from ..errors import LeaseLost, StoreError, TransientStoreError, UnknownMessage
from ..model import MailboxEntry, Message, MessageStatus, SendLease
from ..service import Stores

__all__ = [
    "MongoMailboxStore",
    "MongoMessageStore",
    "mongo_stores",
    "open_mongo_stores",
    "with_mongo",
]

_Doc = dict[str, Any]

# Server error codes that a retry may cure: write conflicts, interrupted or
# stepped-down primaries, and lock timeouts.
_TRANSIENT_CODES = frozenset({112, 189, 91, 11600, 11602, 10107, 13435, 13436, 50})
_DUPLICATE_KEY = 11000


@contextlib.contextmanager
def _translate() -> Iterator[None]:
    """Turns driver errors into the library's errors, chaining the cause."""
    try:
        yield
    except (StoreError, UnknownMessage):
        raise
    except ConnectionFailure as exc:
        raise TransientStoreError(f"MongoDB unreachable: {exc}") from exc
    except OperationFailure as exc:
        if exc.code in _TRANSIENT_CODES or exc.has_error_label(
            "TransientTransactionError"
        ):
            raise TransientStoreError(f"MongoDB: {exc}") from exc
        raise StoreError(f"MongoDB: {exc}") from exc
    except PyMongoError as exc:
        raise StoreError(f"MongoDB: {exc}") from exc


def _str(value: object) -> str:
    """Returns ``value`` if it is a plain string, else refuses it."""
    if not isinstance(value, str) or value.startswith("$"):
        raise StoreError(f"refusing a non-string id in a query: {value!r}")
    return value


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise StoreError(f"refusing a non-integer in a query: {value!r}")
    return value


class MongoMessageStore:
    """Keeps messages in one collection, one document per message."""

    def __init__(self, collection: AsyncCollection[_Doc]) -> None:
        self._c = collection

    async def create_indexes(self) -> None:
        """Creates the indexes this store needs; safe to call every start."""
        with _translate():
            await self._c.create_index(
                [("sender_id", ASCENDING), ("client_msg_id", ASCENDING)],
                unique=True,
                name="idempotency_key",
            )
            await self._c.create_index(
                [("status", ASCENDING), ("created_at", ASCENDING)], name="pending"
            )

    async def insert_pending(
        self, message: Message, recipients: Collection[str]
    ) -> Message:
        doc = _message_doc(message)
        doc["recipients"] = sorted({_str(r) for r in recipients})
        with _translate():
            try:
                await self._c.insert_one(doc)
            except DuplicateKeyError as exc:
                existing = await self.get_by_client_id(
                    message.sender_id, message.client_msg_id
                )
                if existing is None:
                    raise StoreError(
                        f"message id {message.message_id!r} is taken"
                    ) from exc
                return existing
        return message

    async def get(self, message_id: str) -> Message | None:
        with _translate():
            doc = await self._c.find_one({"_id": _str(message_id)}, {"recipients": 0})
        return None if doc is None else _message(doc)

    async def get_many(self, message_ids: Collection[str]) -> dict[str, Message]:
        ids = [_str(i) for i in message_ids]
        if not ids:
            return {}
        with _translate():
            cursor = self._c.find({"_id": {"$in": ids}}, {"recipients": 0})
            return {doc["_id"]: _message(doc) async for doc in cursor}

    async def get_by_client_id(
        self, sender_id: str, client_msg_id: str
    ) -> Message | None:
        query = {"sender_id": _str(sender_id), "client_msg_id": _str(client_msg_id)}
        with _translate():
            doc = await self._c.find_one(query, {"recipients": 0})
        return None if doc is None else _message(doc)

    async def pending_recipients(self, message_id: str) -> tuple[str, ...]:
        with _translate():
            doc = await self._c.find_one({"_id": _str(message_id)}, {"recipients": 1})
        return tuple(doc.get("recipients") or ()) if doc else ()

    async def assign_seq(self, message_id: str, seq: int) -> None:
        query = {"_id": _str(message_id), "seq": {"$in": [0, _int(seq)]}}
        with _translate():
            result = await self._c.update_one(query, {"$set": {"seq": seq}})
            if result.matched_count:
                return
            doc = await self._c.find_one({"_id": message_id}, {"seq": 1})
        if doc is None:
            raise UnknownMessage(message_id)
        raise StoreError(f"message {message_id!r} has seq {doc['seq']}, not {seq}")

    async def mark_committed(self, message_id: str) -> None:
        update = {
            "$set": {"status": MessageStatus.COMMITTED.value},
            "$unset": {"recipients": ""},
        }
        with _translate():
            result = await self._c.update_one({"_id": _str(message_id)}, update)
        if not result.matched_count:
            raise UnknownMessage(message_id)

    async def list_pending(self, created_before: int, limit: int) -> list[Message]:
        query = {
            "status": MessageStatus.PENDING.value,
            "created_at": {"$lt": _int(created_before)},
        }
        with _translate():
            cursor = (
                self._c.find(query, {"recipients": 0})
                .sort([("created_at", ASCENDING), ("_id", ASCENDING)])
                .limit(_int(limit))
            )
            return [_message(doc) async for doc in cursor]

    async def edit(self, message_id: str, body: str, edited_at: int) -> Message:
        return await self._update(
            message_id, {"$set": {"body": body, "edited_at": _int(edited_at)}}
        )

    async def mark_deleted(self, message_id: str, deleted_at: int) -> Message:
        with _translate():
            await self._c.update_one(
                {"_id": _str(message_id), "deleted": False},
                {"$set": {"body": "", "deleted": True, "edited_at": _int(deleted_at)}},
            )
        message = await self.get(message_id)
        if message is None:
            raise UnknownMessage(message_id)
        return message

    async def _update(self, message_id: str, update: _Doc) -> Message:
        with _translate():
            doc = await self._c.find_one_and_update(
                {"_id": _str(message_id)},
                update,
                projection={"recipients": 0},
                return_document=ReturnDocument.AFTER,
            )
        if doc is None:
            raise UnknownMessage(message_id)
        return _message(doc)


class MongoMailboxStore:
    """Keeps mailbox entries and conversation logs in two collections."""

    def __init__(
        self, entries: AsyncCollection[_Doc], logs: AsyncCollection[_Doc]
    ) -> None:
        self._entries = entries
        self._logs = logs

    async def create_indexes(self) -> None:
        """Creates the indexes this store needs; safe to call every start."""
        with _translate():
            await self._entries.create_index(
                [
                    ("user_id", ASCENDING),
                    ("conversation_id", ASCENDING),
                    ("seq", ASCENDING),
                ],
                unique=True,
                name="mailbox_entry",
            )
            await self._entries.create_index(
                [("conversation_id", ASCENDING), ("seq", ASCENDING)], name="by_seq"
            )

    async def acquire(
        self, conversation_id: str, holder: str, lease_ms: int, now: int
    ) -> SendLease | None:
        conversation_id, holder = _str(conversation_id), _str(holder)
        free = {
            "_id": conversation_id,
            "$or": [
                {"holder": None},
                {"holder": holder},
                {"lease_until": {"$lte": _int(now)}},
            ],
        }
        update = {
            "$set": {"holder": holder, "lease_until": now + _int(lease_ms)},
            "$setOnInsert": {"last_seq": 0, "pending_message_id": None, "holes": []},
        }
        with _translate():
            try:
                doc = await self._logs.find_one_and_update(
                    free, update, upsert=True, return_document=ReturnDocument.AFTER
                )
            except DuplicateKeyError:
                # The log exists and another holder's lease runs: the upsert
                # tried to insert a second document with the same _id.
                return None
            if doc is None or doc.get("holder") != holder:
                doc = await self._logs.find_one({"_id": conversation_id})
        if doc is None or doc.get("holder") != holder:
            return None
        pending = doc.get("pending_message_id")
        return SendLease(
            conversation_id=conversation_id,
            holder=holder,
            last_seq=doc["last_seq"],
            pending_message_id=pending,
            pending_seq=doc["last_seq"] if pending is not None else 0,
        )

    async def allocate_seq(
        self, conversation_id: str, holder: str, message_id: str
    ) -> int:
        with _translate():
            doc = await self._logs.find_one_and_update(
                {
                    "_id": _str(conversation_id),
                    "holder": _str(holder),
                    "pending_message_id": {"$ne": _str(message_id)},
                },
                {"$inc": {"last_seq": 1}, "$set": {"pending_message_id": message_id}},
                projection={"last_seq": 1},
                return_document=ReturnDocument.AFTER,
            )
            if doc is None:
                # Asked again for the pending message (its first answer was
                # lost), or the lease is gone.
                doc = await self._logs.find_one(
                    {
                        "_id": _str(conversation_id),
                        "holder": _str(holder),
                        "pending_message_id": _str(message_id),
                    },
                    projection={"last_seq": 1},
                )
        if doc is None:
            raise LeaseLost(conversation_id)
        seq: int = doc["last_seq"]
        return seq

    async def release(self, conversation_id: str, holder: str) -> None:
        update = {
            "$set": {"holder": None, "lease_until": 0, "pending_message_id": None}
        }
        with _translate():
            await self._logs.update_one(
                {"_id": _str(conversation_id), "holder": _str(holder)}, update
            )

    async def abandon(self, conversation_id: str, holder: str) -> None:
        with _translate():
            await self._logs.update_one(
                {"_id": _str(conversation_id), "holder": _str(holder)},
                {"$set": {"holder": None, "lease_until": 0}},
            )

    async def declare_hole(self, conversation_id: str, seq: int) -> None:
        with _translate():
            await self._logs.update_one(
                {"_id": _str(conversation_id)},
                {"$addToSet": {"holes": _int(seq)}},
                upsert=True,
            )

    async def last_seq(self, conversation_id: str) -> int:
        with _translate():
            doc = await self._logs.find_one(
                {"_id": _str(conversation_id)}, {"last_seq": 1}
            )
        return 0 if doc is None else int(doc.get("last_seq", 0))

    async def holes(self, conversation_id: str, after: int, upto: int) -> list[int]:
        with _translate():
            doc = await self._logs.find_one(
                {"_id": _str(conversation_id)}, {"holes": 1}
            )
        holes = doc.get("holes", []) if doc else []
        return sorted(s for s in holes if _int(after) < s <= _int(upto))

    async def add_entries(self, entries: Sequence[MailboxEntry]) -> None:
        if not entries:
            return
        docs = [_entry_doc(e) for e in entries]
        with _translate():
            try:
                await self._entries.insert_many(docs, ordered=False)
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                if any(e.get("code") != _DUPLICATE_KEY for e in errors) or (
                    exc.details.get("writeConcernErrors")
                ):
                    raise
                # Entries that exist already: a repeated fan-out step.

    async def read(
        self, user_id: str, conversation_id: str, after_seq: int, limit: int
    ) -> list[MailboxEntry]:
        query = {
            "user_id": _str(user_id),
            "conversation_id": _str(conversation_id),
            "seq": {"$gt": _int(after_seq)},
        }
        with _translate():
            cursor = self._entries.find(query).sort("seq", ASCENDING).limit(_int(limit))
            return [_entry(doc) async for doc in cursor]

    async def count_unread(
        self, user_id: str, conversation_id: str, after_seq: int, upto_seq: int
    ) -> int:
        query = {
            "user_id": _str(user_id),
            "conversation_id": _str(conversation_id),
            "seq": {"$gt": _int(after_seq), "$lte": _int(upto_seq)},
            "sender_id": {"$ne": user_id},
            "deleted": False,
        }
        with _translate():
            return await self._entries.count_documents(query)

    async def mark_deleted(self, conversation_id: str, seq: int) -> list[str]:
        query = {"conversation_id": _str(conversation_id), "seq": _int(seq)}
        with _translate():
            await self._entries.update_many(
                {**query, "deleted": False}, {"$set": {"deleted": True}}
            )
            holders = self._entries.find(query, {"user_id": 1})
            return sorted([d["user_id"] async for d in holders])


async def open_mongo_stores(
    uri: str,
    database: str = "fleets",
    *,
    prefix: str = "fleets_",
    **client_options: Any,
) -> tuple[MongoMessageStore, MongoMailboxStore, AsyncMongoClient[_Doc]]:
    """Connects, creates the indexes and returns both stores and the client.

    Close the client when done (``await client.close()``).
    """
    client: AsyncMongoClient[_Doc] = AsyncMongoClient(uri, **client_options)
    db: AsyncDatabase[_Doc] = client[database]
    messages = MongoMessageStore(db[f"{prefix}messages"])
    mailboxes = MongoMailboxStore(db[f"{prefix}mailbox"], db[f"{prefix}conversations"])
    try:
        await messages.create_indexes()
        await mailboxes.create_indexes()
    except BaseException:
        await client.close()
        raise
    return messages, mailboxes, client


async def with_mongo(
    stores: Stores, uri: str, database: str = "fleets", **options: Any
) -> Stores:
    """Returns ``stores`` with content and mailboxes moved to MongoDB.

    The conversation, notification and analytics stores and the directory
    stay as they are (SQL in production). Closing the result closes the
    MongoDB client and then ``stores``.
    """
    messages, mailboxes, client = await open_mongo_stores(uri, database, **options)

    async def close() -> None:
        await client.close()
        await stores.close()

    return attrs.evolve(stores, messages=messages, mailboxes=mailboxes, on_close=close)


@contextlib.asynccontextmanager
async def mongo_stores(
    uri: str, database: str = "fleets", **options: Any
) -> AsyncIterator[tuple[MongoMessageStore, MongoMailboxStore]]:
    """Opens both stores for the length of a ``with`` block."""
    messages, mailboxes, client = await open_mongo_stores(uri, database, **options)
    try:
        yield messages, mailboxes
    finally:
        await client.close()


def _message_doc(message: Message) -> _Doc:
    doc = message.to_dict()
    for name in ("message_id", "conversation_id", "sender_id", "client_msg_id"):
        _str(doc[name])
    doc["_id"] = doc.pop("message_id")
    return doc


def _message(doc: _Doc) -> Message:
    return Message.from_dict({**doc, "message_id": doc["_id"]})


def _entry_doc(entry: MailboxEntry) -> _Doc:
    return {
        "user_id": _str(entry.user_id),
        "conversation_id": _str(entry.conversation_id),
        "seq": _int(entry.seq),
        "message_id": _str(entry.message_id),
        "sender_id": _str(entry.sender_id),
        "created_at": entry.created_at,
        "deleted": entry.deleted,
    }


def _entry(doc: _Doc) -> MailboxEntry:
    return MailboxEntry(
        user_id=doc["user_id"],
        conversation_id=doc["conversation_id"],
        seq=doc["seq"],
        message_id=doc["message_id"],
        sender_id=doc["sender_id"],
        created_at=doc["created_at"],
        deleted=bool(doc.get("deleted", False)),
    )
