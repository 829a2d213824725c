"""The protocols that adapters implement.

Each store keeps one kind of data (see ARCHITECTURE.md): `MessageStore` the
content, `MailboxStore` the per-user index and the per-conversation seq
counter with its send lease, `ConversationStore` the conversation lists,
`NotificationStore` and `AnalyticsStore` their results. `MessageBus` carries
events, `Presence` and `Connection` deliver them to live clients, and
`Directory` says who belongs to a conversation.

Every method that writes is idempotent where the send pipeline may repeat
it after a crash; the docstrings say so. The conformance suites in
`fleets_mailbox.testing` pin each contract.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from attrs import frozen

from .model import (
    ConversationSummary,
    Group,
    MailboxEntry,
    Message,
    Notification,
    SendLease,
)

__all__ = [
    "AnalyticsStore",
    "BusEvent",
    "Connection",
    "ConversationStore",
    "Directory",
    "EventHandler",
    "GroupDirectory",
    "MailboxStore",
    "MessageBus",
    "MessageStore",
    "NotificationStore",
    "Presence",
    "SummaryUpdate",
    "Subscription",
    "UNREAD_UNKNOWN",
]


@runtime_checkable
class MessageStore(Protocol):
    """Keeps each message once, with its pending recipients until committed."""

    async def insert_pending(
        self, message: Message, recipients: Collection[str]
    ) -> Message:
        """Stores a pending message, or returns the one already stored.

        The idempotency key is ``(sender_id, client_msg_id)``: if a message
        with that key exists, nothing is written and that message is
        returned. Otherwise ``message`` is stored with ``recipients`` and
        returned.
        """
        ...

    async def get(self, message_id: str) -> Message | None:
        """Returns the message with this id, or None."""
        ...

    async def get_many(self, message_ids: Collection[str]) -> dict[str, Message]:
        """Returns the messages with these ids that exist, by id."""
        ...

    async def get_by_client_id(
        self, sender_id: str, client_msg_id: str
    ) -> Message | None:
        """Returns the message sent under this idempotency key, or None."""
        ...

    async def pending_recipients(self, message_id: str) -> tuple[str, ...]:
        """Returns the recipients stored with a pending message (sorted)."""
        ...

    async def assign_seq(self, message_id: str, seq: int) -> None:
        """Sets a pending message's seq; setting the same seq again is a no-op.

        Raises `StoreError` if the message already has another seq.
        """
        ...

    async def mark_committed(self, message_id: str) -> None:
        """Marks a message committed and forgets its pending recipients."""
        ...

    async def list_pending(self, created_before: int, limit: int) -> list[Message]:
        """Returns pending messages created before the given time, oldest first."""
        ...

    async def edit(self, message_id: str, body: str, edited_at: int) -> Message:
        """Replaces the body of a message and returns the new version."""
        ...

    async def mark_deleted(self, message_id: str, deleted_at: int) -> Message:
        """Tombstones a message: empties the body, keeps its seq."""
        ...


@runtime_checkable
class MailboxStore(Protocol):
    """Keeps the per-user mailbox entries and each conversation's seq counter.

    A conversation's seqs are allocated under a send lease: one sender at a
    time holds it, so the entries of seq N are all written before seq N+1 is
    allocated, and a reader can never see N+1 while N is still being written.
    """

    async def acquire(
        self, conversation_id: str, holder: str, lease_ms: int, now: int
    ) -> SendLease | None:
        """Takes the conversation's send lease for ``holder``.

        Returns None while another holder's lease runs. Returns the lease
        with the previous holder's unfinished send, if any, when the lease was
        free or had expired.
        """
        ...

    async def allocate_seq(
        self, conversation_id: str, holder: str, message_id: str
    ) -> int:
        """Allocates the next seq to ``message_id`` and records it as pending.

        Idempotent: while ``message_id`` is the pending message, asking again
        returns its seq instead of allocating another (a retry after a lost
        answer must not burn a seq). Raises `LeaseLost` if ``holder`` no
        longer holds the lease.
        """
        ...

    async def release(self, conversation_id: str, holder: str) -> None:
        """Clears the pending send and frees the lease, if ``holder`` has it."""
        ...

    async def abandon(self, conversation_id: str, holder: str) -> None:
        """Frees the lease at once but keeps the pending send for the next holder."""
        ...

    async def declare_hole(self, conversation_id: str, seq: int) -> None:
        """Records that ``seq`` was burned: no message will ever carry it."""
        ...

    async def last_seq(self, conversation_id: str) -> int:
        """Returns the highest seq allocated in the conversation (0 if none)."""
        ...

    async def holes(self, conversation_id: str, after: int, upto: int) -> list[int]:
        """Returns the burned seqs in ``(after, upto]``, ascending."""
        ...

    async def add_entries(self, entries: Sequence[MailboxEntry]) -> None:
        """Writes mailbox entries; entries that exist already are left as they are."""
        ...

    async def read(
        self, user_id: str, conversation_id: str, after_seq: int, limit: int
    ) -> list[MailboxEntry]:
        """Returns up to ``limit`` entries with seq > ``after_seq``, ascending."""
        ...

    async def count_unread(
        self, user_id: str, conversation_id: str, after_seq: int, upto_seq: int
    ) -> int:
        """Counts undeleted entries by others with seq in ``(after_seq, upto_seq]``."""
        ...

    async def mark_deleted(self, conversation_id: str, seq: int) -> list[str]:
        """Marks every entry of a seq deleted; returns the users who have one.

        The answer names every user with an entry of that seq, marked now or
        before, so a repeated call (finishing an interrupted delete) gives
        the same answer.
        """
        ...


#: The unread count of a summary that must be recounted from the mailbox.
UNREAD_UNKNOWN = -1


@frozen
class SummaryUpdate:
    """What one committed message changes in its recipients' conversation lists."""

    conversation_id: str
    seq: int
    message_id: str
    sender_id: str
    preview: str
    created_at: int


@runtime_checkable
class ConversationStore(Protocol):
    """Keeps each user's conversation list: last message, read_seq, unread."""

    async def apply_message(
        self, update: SummaryUpdate, recipients: Collection[str]
    ) -> None:
        """Records a message in each recipient's summary, once.

        A summary whose ``last_seq`` is already >= ``update.seq`` is left
        alone, so a repeated call changes nothing. The sender's own
        ``read_seq`` moves to the message and its unread becomes 0; every
        other recipient's unread grows by one, unless it is `UNREAD_UNKNOWN`,
        which stays so.
        """
        ...

    async def get(
        self, user_id: str, conversation_id: str
    ) -> ConversationSummary | None:
        """Returns one summary, or None."""
        ...

    async def list_changed(
        self, user_id: str, since_version: int, limit: int
    ) -> list[ConversationSummary]:
        """Returns the user's summaries with version > ``since_version``, by version."""
        ...

    async def set_read(
        self,
        user_id: str,
        conversation_id: str,
        read_seq: int,
        unread: int,
        expect_version: int,
    ) -> ConversationSummary | None:
        """Moves ``read_seq`` forward and sets ``unread``, compare-and-set.

        Writes only if the summary's ``version`` still equals
        ``expect_version``; returns the new summary, or None when it changed
        meanwhile (the caller recounts and tries again). ``read_seq`` never
        moves backwards: a lower value keeps the stored one.
        """
        ...

    async def apply_delete(
        self, conversation_id: str, seq: int, user_ids: Collection[str]
    ) -> None:
        """Marks the unread count of ``user_ids`` unknown after a delete.

        Summaries whose ``read_seq`` is below ``seq`` (the deleted message was
        unread) get ``unread = UNREAD_UNKNOWN`` and a new version; the sync
        service recounts them from the mailbox, which no longer counts the
        deleted entry. A summary whose ``last_seq`` is ``seq`` also loses its
        preview. Repeating the call changes no count.
        """
        ...


@runtime_checkable
class NotificationStore(Protocol):
    """Keeps system notifications per user."""

    async def add(
        self, user_id: str, kind: str, payload: Mapping[str, Any], created_at: int
    ) -> Notification:
        """Stores a notification and returns it with its new id."""
        ...

    async def list(self, user_id: str, after_id: int, limit: int) -> list[Notification]:
        """Returns the user's notifications with id > ``after_id``, ascending."""
        ...

    async def mark_read(self, user_id: str, notification_id: int) -> bool:
        """Marks one notification read; False if the user has no such one."""
        ...


@runtime_checkable
class AnalyticsStore(Protocol):
    """Keeps counts of messages and of active users per day."""

    async def record_message(
        self, message_id: str, day: str, conversation_kind: str, sender_id: str
    ) -> bool:
        """Counts a message once; False if this message id was counted before."""
        ...

    async def message_counts(self, day: str) -> dict[str, int]:
        """Returns the day's message counts by conversation kind."""
        ...

    async def active_users(self, day: str) -> int:
        """Returns how many distinct users sent messages on that day."""
        ...


@frozen
class BusEvent:
    """An event on the message bus: topic, tag, key and a JSON-ready payload."""

    topic: str
    tag: str
    key: str
    payload: Mapping[str, Any]


EventHandler = Callable[[BusEvent], Awaitable[None]]


class Subscription(Protocol):
    """A running consumer; `close` stops it."""

    async def close(self) -> None:
        """Stops consuming and waits for handlers in flight."""
        ...


@runtime_checkable
class MessageBus(Protocol):
    """Carries notifications of events; never the record of anything.

    Delivery is at least once per consumer group, in no guaranteed order.
    """

    async def publish(self, event: BusEvent) -> None:
        """Publishes an event; raises `StoreError` if the bus refused it."""
        ...

    async def subscribe(
        self, topic: str, group: str, handler: EventHandler
    ) -> Subscription:
        """Starts consuming ``topic`` as consumer ``group``.

        Each group sees every event; within a group each event goes to one
        subscriber. If the handler raises, the event is delivered again later.
        """
        ...

    async def close(self) -> None:
        """Stops every subscription and releases connections."""
        ...


@runtime_checkable
class Connection(Protocol):
    """A live client connection that frames can be pushed to (the Pusher)."""

    @property
    def connection_id(self) -> str:
        """A unique id of this connection."""
        ...

    async def push(self, frame: Mapping[str, Any]) -> None:
        """Sends one JSON frame; raises if the connection is gone."""
        ...


@runtime_checkable
class Presence(Protocol):
    """Knows which users have connections on this node."""

    async def connect(self, user_id: str, connection: Connection) -> None:
        """Registers a connection of a user."""
        ...

    async def disconnect(self, user_id: str, connection: Connection) -> None:
        """Forgets a connection of a user."""
        ...

    async def connections(self, user_id: str) -> list[Connection]:
        """Returns the user's connections on this node."""
        ...


@runtime_checkable
class Directory(Protocol):
    """Says who belongs to a conversation."""

    async def members(self, conversation_id: str) -> frozenset[str]:
        """Returns the members, or raises `UnknownConversation`."""
        ...


@runtime_checkable
class GroupDirectory(Directory, Protocol):
    """A directory that also manages groups."""

    async def create_group(
        self, group_id: str, owner_id: str, name: str, members: Collection[str]
    ) -> Group:
        """Creates a group (the owner is a member); raises `GroupExists`."""
        ...

    async def get_group(self, group_id: str) -> Group:
        """Returns a group, or raises `UnknownGroup`."""
        ...

    async def add_members(self, group_id: str, user_ids: Collection[str]) -> Group:
        """Adds members and returns the group."""
        ...

    async def remove_members(self, group_id: str, user_ids: Collection[str]) -> Group:
        """Removes members and returns the group."""
        ...

    async def groups_of(self, user_id: str) -> list[Group]:
        """Returns the groups the user belongs to."""
        ...
