"""The send pipeline: validate, store once, allocate seq, fan out, publish.

A send runs these steps, each idempotent and keyed by the message id::

    validate ─> store pending message ─> take the conversation's send lease
      ─> allocate seq ─> fan out to mailboxes (bulk, chunked)
      ─> update conversation summaries (bulk, chunked) ─> mark committed
      ─> release the lease ─> publish the event (advisory)

The message is stored, with its recipients, before a seq is allocated, so a
send that dies at any later point leaves everything needed to finish it: a
retry with the same client message id, the next send into the conversation
(which takes over the expired lease and first completes what it finds
pending) or `SendPipeline.repair` completes it. Seqs are allocated only to a
lease holder, so the entries of seq N are all written before seq N+1 exists.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, TypeVar

import attrs

from .errors import (
    ConversationBusy,
    DuplicateMessage,
    EmptyBody,
    InvalidRequest,
    MessageTooLarge,
    NotAllowed,
    NotAMember,
    StoreError,
    UnknownMessage,
)
from .events import message_event
from .model import (
    MailboxEntry,
    Message,
    MessageStatus,
    new_message_id,
    now_ms,
    validate_client_msg_id,
    validate_conversation_id,
    validate_id,
)
from .protocols import (
    ConversationStore,
    Directory,
    MailboxStore,
    MessageBus,
    MessageStore,
    SummaryUpdate,
)

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "PREVIEW_CHARS",
    "SEND_STEPS",
    "SendPipeline",
    "SendResult",
    "StepHook",
]

logger = logging.getLogger(__name__)

#: The default limit of a message body, in bytes of UTF-8.
DEFAULT_MAX_BODY_BYTES = 32 * 1024

#: How many characters of a body the conversation list keeps as preview.
PREVIEW_CHARS = 80

#: Called with a step's name before the step runs; raising stops the send
#: there, as a crash would. For fault-injection tests.
StepHook = Callable[[str], Awaitable[None]]

#: The steps of a send, in order, by the names `StepHook` is called with.
SEND_STEPS = (
    "insert_pending",
    "acquire",
    "allocate_seq",
    "assign_seq",
    "fan_out",
    "summaries",
    "commit",
    "release",
    "publish",
)

_T = TypeVar("_T")


class SendPipeline:
    """Accepts messages and delivers them into every recipient's mailbox.

    ``chunk_size`` bounds the entries and summaries written per round trip;
    ``lease_ms`` is how long a crashed sender can keep a conversation's send
    lease before another sender takes over; ``wait_ms`` is how long a send
    waits for a busy conversation before raising `ConversationBusy`.
    """

    def __init__(
        self,
        *,
        messages: MessageStore,
        mailboxes: MailboxStore,
        conversations: ConversationStore,
        directory: Directory,
        bus: MessageBus | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        chunk_size: int = 1000,
        lease_ms: int = 30_000,
        wait_ms: int = 60_000,
        transient_retries: int = 3,
        clock: Callable[[], int] = now_ms,
        step_hook: StepHook | None = None,
    ) -> None:
        if chunk_size < 1 or max_body_bytes < 1 or lease_ms < 1:
            raise ValueError("chunk_size, max_body_bytes and lease_ms must be >= 1")
        self.messages = messages
        self.mailboxes = mailboxes
        self.conversations = conversations
        self.directory = directory
        self.bus = bus
        self.max_body_bytes = max_body_bytes
        self.chunk_size = chunk_size
        self.lease_ms = lease_ms
        self.wait_ms = wait_ms
        self.transient_retries = transient_retries
        self.clock = clock
        self.step_hook = step_hook
        self.publish_failures = 0
        self._local: dict[str, tuple[asyncio.Lock, int]] = {}

    async def send(
        self,
        sender_id: str,
        conversation_id: str,
        body: str,
        client_msg_id: str,
        *,
        kind: str = "text",
    ) -> Message:
        """Sends a message and returns it, committed, with its seq.

        Resending with the same ``(sender_id, client_msg_id)`` returns the
        first message and creates nothing; resending it with another body or
        conversation raises `DuplicateMessage`. Bad input raises an
        `InvalidRequest` or `NotAMember` before anything is stored.
        """
        result = await self.submit(
            sender_id, conversation_id, body, client_msg_id, kind=kind
        )
        return result.message

    async def submit(
        self,
        sender_id: str,
        conversation_id: str,
        body: str,
        client_msg_id: str,
        *,
        kind: str = "text",
    ) -> SendResult:
        """Sends like `send`, and also tells whether this call created it.

        Of several calls with one idempotency key, wherever they run, only
        the one that stored the message gets ``created=True``.
        """
        sender_id = validate_id(sender_id, "sender_id")
        conversation_id = validate_conversation_id(conversation_id)
        client_msg_id = validate_client_msg_id(client_msg_id)
        self._check_body(body)
        kind = validate_id(kind, "kind")
        members = await self.directory.members(conversation_id)
        if sender_id not in members:
            raise NotAMember(sender_id, conversation_id)

        draft = Message(
            message_id=new_message_id(),
            conversation_id=conversation_id,
            sender_id=sender_id,
            client_msg_id=client_msg_id,
            body=body,
            created_at=self.clock(),
            kind=kind,
        )
        await self._step("insert_pending")
        stored = await self._retry(self.messages.insert_pending, draft, members)
        created = stored.message_id == draft.message_id
        if not created:
            if stored.conversation_id != conversation_id or stored.body != body:
                raise DuplicateMessage(sender_id, client_msg_id, stored.message_id)
            if stored.status is MessageStatus.COMMITTED:
                return SendResult(stored, created=False)
        # A new message goes on with the members it was stored with; a resend
        # reads them back from the store.
        recipients = sorted(members) if created else None
        return SendResult(await self._finish(stored, recipients), created=created)

    async def repair(self, older_than_ms: int = 60_000, limit: int = 100) -> int:
        """Completes pending sends older than ``older_than_ms``; returns how many."""
        pending = await self.messages.list_pending(self.clock() - older_than_ms, limit)
        for message in pending:
            logger.warning(
                "repairing unfinished send %s in %s",
                message.message_id,
                message.conversation_id,
            )
            await self._finish(message)
        return len(pending)

    async def edit(self, user_id: str, message_id: str, body: str) -> Message:
        """Replaces the body of one's own message; its seq and place stay."""
        message = await self._own_message(user_id, message_id)
        if message.deleted:
            raise NotAllowed(f"message {message_id!r} is deleted", user_id=user_id)
        self._check_body(body)
        return await self.messages.edit(message.message_id, body, self.clock())

    async def delete(self, user_id: str, message_id: str) -> Message:
        """Deletes one's own message for everyone, leaving a tombstone.

        Recipients who had not read it lose it from their unread count (their
        count is recounted from the mailbox on their next read). Deleting
        again finishes a delete that was interrupted, and changes nothing
        otherwise.
        """
        message = await self._own_message(user_id, message_id)
        deleted = await self.messages.mark_deleted(message_id, self.clock())
        holders = await self.mailboxes.mark_deleted(
            message.conversation_id, message.seq
        )
        others = [u for u in holders if u != message.sender_id]
        await self.conversations.apply_delete(
            message.conversation_id, message.seq, others
        )
        return deleted

    async def _own_message(self, user_id: str, message_id: str) -> Message:
        user_id = validate_id(user_id, "user_id")
        message = await self.messages.get(validate_id(message_id, "message_id"))
        if message is None:
            raise UnknownMessage(message_id)
        if message.sender_id != user_id:
            raise NotAllowed(
                f"{user_id!r} may not change message {message_id!r}", user_id=user_id
            )
        if message.status is not MessageStatus.COMMITTED:
            raise UnknownMessage(message_id)
        return message

    def _check_body(self, body: object) -> None:
        if not isinstance(body, str):
            raise InvalidRequest("body must be a string", field="body")
        if not body.strip():
            raise EmptyBody()
        try:
            size = len(body.encode("utf-8"))
        except UnicodeEncodeError:
            raise InvalidRequest(
                "body is not valid Unicode text (lone surrogate)", field="body"
            ) from None
        if size > self.max_body_bytes:
            raise MessageTooLarge(size, self.max_body_bytes)

    async def _finish(
        self, message: Message, recipients: Sequence[str] | None = None
    ) -> Message:
        """Takes the lease, completes what is pending and, unless done, this send."""
        conversation_id = message.conversation_id
        holder = uuid.uuid4().hex
        to_publish: list[tuple[Message, Sequence[str]]] = []
        async with self._local_lock(conversation_id):
            await self._step("acquire")
            lease = await self._acquire(conversation_id, holder)
            try:
                if lease.pending_message_id is not None:
                    pending = await self.messages.get(lease.pending_message_id)
                    if pending is None:
                        logger.warning(
                            "pending message %s is gone; seq %d burned",
                            lease.pending_message_id,
                            lease.pending_seq,
                        )
                        await self.mailboxes.declare_hole(
                            conversation_id, lease.pending_seq
                        )
                    else:
                        previous = await self._complete(pending, lease.pending_seq)
                        if previous[1]:
                            to_publish.append(previous)

                current = await self.messages.get(message.message_id)
                if current is None:
                    raise UnknownMessage(message.message_id)
                if current.status is not MessageStatus.COMMITTED:
                    seq = current.seq
                    if seq == 0:
                        await self._step("allocate_seq")
                        seq = await self._retry(
                            self.mailboxes.allocate_seq,
                            conversation_id,
                            holder,
                            current.message_id,
                        )
                    completed = await self._complete(current, seq, recipients)
                    current = completed[0]
                    to_publish.append(completed)
                await self._step("release")
                await self._retry(self.mailboxes.release, conversation_id, holder)
            except (Exception, asyncio.CancelledError):
                # A crash that kills the process skips this; the lease then
                # expires after lease_ms and the next holder completes the send.
                await self._abandon(conversation_id, holder)
                raise
        await self._step("publish")
        for done, done_recipients in to_publish:
            await self._publish(done, done_recipients)
        return current

    async def _complete(
        self, message: Message, seq: int, recipients: Sequence[str] | None = None
    ) -> tuple[Message, Sequence[str]]:
        """Finishes the send of ``message`` (as stored) under ``seq``.

        ``recipients`` are the ones stored with it, when the caller knows
        them. Returns the committed message and the recipients it was
        delivered to (none when it had been committed before).
        """
        if message.status is MessageStatus.COMMITTED:
            return message, ()
        message_id = message.message_id
        conversation_id = message.conversation_id
        if message.seq != seq:
            await self._step("assign_seq")
            await self._retry(self.messages.assign_seq, message_id, seq)
            message = attrs.evolve(message, seq=seq)

        if recipients is None:
            recipients = await self._retry(self.messages.pending_recipients, message_id)
        await self._step("fan_out")
        for chunk in _chunks(recipients, self.chunk_size):
            entries = [
                MailboxEntry(
                    user_id=user_id,
                    conversation_id=conversation_id,
                    seq=seq,
                    message_id=message_id,
                    sender_id=message.sender_id,
                    created_at=message.created_at,
                )
                for user_id in chunk
            ]
            await self._retry(self.mailboxes.add_entries, entries)

        await self._step("summaries")
        update = SummaryUpdate(
            conversation_id=conversation_id,
            seq=seq,
            message_id=message_id,
            sender_id=message.sender_id,
            preview=message.body[:PREVIEW_CHARS],
            created_at=message.created_at,
        )
        for chunk in _chunks(recipients, self.chunk_size):
            await self._retry(self.conversations.apply_message, update, chunk)

        await self._step("commit")
        await self._retry(self.messages.mark_committed, message_id)
        return attrs.evolve(message, status=MessageStatus.COMMITTED), recipients

    async def _acquire(self, conversation_id: str, holder: str) -> _Lease:
        deadline = asyncio.get_running_loop().time() + self.wait_ms / 1000
        delay = 0.002
        while True:
            lease = await self._retry(
                self.mailboxes.acquire,
                conversation_id,
                holder,
                self.lease_ms,
                self.clock(),
            )
            if lease is not None:
                return _Lease(lease.pending_message_id, lease.pending_seq)
            if asyncio.get_running_loop().time() + delay > deadline:
                raise ConversationBusy(conversation_id)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    async def _abandon(self, conversation_id: str, holder: str) -> None:
        try:
            await self.mailboxes.abandon(conversation_id, holder)
        except Exception:
            logger.warning(
                "could not free the send lease of %s; it expires by itself",
                conversation_id,
                exc_info=True,
            )

    async def _publish(self, message: Message, recipients: Sequence[str]) -> None:
        if self.bus is None or not recipients:
            return
        try:
            await self.bus.publish(message_event(message, recipients))
        except Exception:
            self.publish_failures += 1
            logger.warning(
                "publishing message %s failed; it is stored and will sync",
                message.message_id,
                exc_info=True,
            )

    async def _retry(self, call: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        attempt = 0
        while True:
            try:
                return await call(*args)
            except StoreError as exc:
                attempt += 1
                if not exc.transient or attempt > self.transient_retries:
                    raise
                logger.warning("transient store error, retry %d: %s", attempt, exc)
                await asyncio.sleep(0.01 * 2**attempt)

    async def _step(self, name: str) -> None:
        if self.step_hook is not None:
            await self.step_hook(name)

    def _local_lock(self, conversation_id: str) -> _LocalLock:
        return _LocalLock(self._local, conversation_id)


@attrs.frozen
class SendResult:
    """The message a send returned, and whether that call created it."""

    message: Message
    created: bool


@attrs.frozen
class _Lease:
    pending_message_id: str | None
    pending_seq: int


class _LocalLock:
    """Queues this process's sends per conversation before they ask the store.

    Without it, concurrent sends in one process would poll the store's lease;
    with it they wait in line, and only sends from other processes poll.
    """

    def __init__(self, table: dict[str, tuple[asyncio.Lock, int]], key: str) -> None:
        self._table = table
        self._key = key

    async def __aenter__(self) -> None:
        lock, users = self._table.get(self._key, (asyncio.Lock(), 0))
        self._table[self._key] = (lock, users + 1)
        try:
            await lock.acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._table[self._key][0].release()
        self._leave()

    def _leave(self) -> None:
        lock, users = self._table[self._key]
        if users == 1:
            del self._table[self._key]
        else:
            self._table[self._key] = (lock, users - 1)


def _chunks(items: Sequence[str] | Collection[str], size: int) -> list[list[str]]:
    ordered = sorted(items)
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]
