"""Value types: messages, mailbox entries, conversation summaries and events.

All of them are frozen attrs classes. Times are integers of milliseconds
since the Unix epoch (UTC), so every store keeps them exactly.
"""

from __future__ import annotations

import enum
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, cast

from attrs import field, frozen

from .errors import InvalidId

__all__ = [
    "ConversationKind",
    "ConversationSummary",
    "Group",
    "MailboxEntry",
    "Message",
    "MessageStatus",
    "Notification",
    "SendLease",
    "SyncPage",
    "conversation_kind",
    "conversation_members_of_direct",
    "direct_conversation",
    "group_conversation",
    "group_of",
    "new_message_id",
    "now_ms",
    "system_conversation",
    "validate_client_msg_id",
    "validate_conversation_id",
    "validate_id",
]

_ID = re.compile(r"[A-Za-z0-9_.@+-]{1,128}")
_CLIENT_MSG_ID = re.compile(r"[A-Za-z0-9_.:@+-]{1,128}")


def validate_id(value: object, name: str = "id") -> str:
    """Returns ``value`` if it is a valid user, group or channel id.

    Ids are strings of 1 to 128 characters from letters, digits and
    ``_ . @ + -``. Anything else (a mapping such as ``{"$ne": ""}``, a
    number, a ``$``-prefixed string) raises `InvalidId`.
    """
    if not isinstance(value, str) or _ID.fullmatch(value) is None:
        raise InvalidId(
            f"{name} must be 1-128 characters of letters, digits and _.@+- "
            f"(got {_show(value)})",
            field=name,
        )
    return value


def validate_client_msg_id(value: object) -> str:
    """Returns ``value`` if it is a valid client message id (``:`` allowed)."""
    if not isinstance(value, str) or _CLIENT_MSG_ID.fullmatch(value) is None:
        raise InvalidId(
            "client_msg_id must be 1-128 characters of letters, digits and _.:@+- "
            f"(got {_show(value)})",
            field="client_msg_id",
        )
    return value


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class ConversationKind(enum.Enum):
    """What a conversation id stands for; its value is the id's prefix."""

    DIRECT = "d"
    GROUP = "g"
    SYSTEM = "s"


def direct_conversation(a: str, b: str) -> str:
    """Returns the id of the direct chat between ``a`` and ``b``, in any order."""
    a, b = sorted((validate_id(a, "user_id"), validate_id(b, "user_id")))
    return f"d:{a}:{b}"


def group_conversation(group_id: str) -> str:
    """Returns the conversation id of a group."""
    return f"g:{validate_id(group_id, 'group_id')}"


def system_conversation(channel: str) -> str:
    """Returns the conversation id of a system channel."""
    return f"s:{validate_id(channel, 'channel')}"


def validate_conversation_id(value: object) -> str:
    """Returns ``value`` if it is a well-formed conversation id."""
    conversation_kind(value)
    return cast(str, value)


def conversation_kind(conversation_id: object) -> ConversationKind:
    """Returns the kind of a conversation id, or raises `InvalidId`."""
    if isinstance(conversation_id, str):
        prefix, _, rest = conversation_id.partition(":")
        parts = rest.split(":")
        if prefix == "d" and len(parts) == 2 and parts[0] < parts[1]:
            if all(_ID.fullmatch(p) for p in parts):
                return ConversationKind.DIRECT
        elif prefix in ("g", "s") and len(parts) == 1 and _ID.fullmatch(parts[0]):
            return ConversationKind(prefix)
    raise InvalidId(
        f"not a conversation id: {_show(conversation_id)} "
        "(expected d:<user>:<user>, g:<group> or s:<channel>)",
        field="conversation_id",
    )


def conversation_members_of_direct(conversation_id: str) -> tuple[str, str]:
    """Returns the two users of a direct conversation id."""
    if conversation_kind(conversation_id) is not ConversationKind.DIRECT:
        raise InvalidId(
            f"{conversation_id!r} is not a direct conversation", field="conversation_id"
        )
    a, b = conversation_id[2:].split(":")
    return a, b


def group_of(conversation_id: str) -> str:
    """Returns the group id of a group conversation id."""
    if conversation_kind(conversation_id) is not ConversationKind.GROUP:
        raise InvalidId(
            f"{conversation_id!r} is not a group conversation", field="conversation_id"
        )
    return conversation_id[2:]


def now_ms() -> int:
    """Returns the current time in milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


_id_lock = threading.Lock()
_id_last = 0


def new_message_id() -> str:
    """Returns a new unique, time-ordered message id (26 hex digits).

    The first 12 digits are milliseconds, the next 6 a per-process counter
    that keeps ids strictly increasing within a process even when the clock
    stands still or steps back, the last 8 random bits that keep processes
    apart.
    """
    global _id_last
    with _id_lock:
        stamp = now_ms() << 24
        _id_last = max(stamp, _id_last + 1)
        value = _id_last
    return f"{value:018x}{os.urandom(4).hex()}"


class MessageStatus(enum.Enum):
    """Where a message is on its way through the send pipeline."""

    PENDING = "pending"
    COMMITTED = "committed"


@frozen
class Message:
    """A message, stored once whatever the number of recipients.

    ``seq`` is 0 until the send pipeline allocates it. ``deleted`` and
    ``edited_at`` are the tombstone and edit marks; a deleted message keeps
    its seq and loses its body.
    """

    message_id: str
    conversation_id: str
    sender_id: str
    client_msg_id: str
    body: str
    created_at: int
    seq: int = 0
    status: MessageStatus = MessageStatus.PENDING
    kind: str = "text"
    edited_at: int | None = None
    deleted: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Returns the message as a JSON-ready mapping."""
        return {
            "message_id": self.message_id,
            "conversation_id": self.conversation_id,
            "sender_id": self.sender_id,
            "client_msg_id": self.client_msg_id,
            "body": self.body,
            "created_at": self.created_at,
            "seq": self.seq,
            "status": self.status.value,
            "kind": self.kind,
            "edited_at": self.edited_at,
            "deleted": self.deleted,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Message:
        """Builds a message from `to_dict` output."""
        return cls(
            message_id=data["message_id"],
            conversation_id=data["conversation_id"],
            sender_id=data["sender_id"],
            client_msg_id=data["client_msg_id"],
            body=data["body"],
            created_at=int(data["created_at"]),
            seq=int(data["seq"]),
            status=MessageStatus(data["status"]),
            kind=data.get("kind", "text"),
            edited_at=data.get("edited_at"),
            deleted=bool(data.get("deleted", False)),
        )


@frozen
class MailboxEntry:
    """One recipient's index entry for one message."""

    user_id: str
    conversation_id: str
    seq: int
    message_id: str
    sender_id: str
    created_at: int
    deleted: bool = False


@frozen
class SendLease:
    """The state of a conversation's send lease, as `acquire` found it.

    ``pending_message_id``/``pending_seq`` name a send that a previous holder
    started and may not have finished; the new holder completes it first.
    """

    conversation_id: str
    holder: str
    last_seq: int
    pending_message_id: str | None = None
    pending_seq: int = 0


@frozen
class SyncPage:
    """One page of a user's mailbox in one conversation.

    ``messages`` hold seqs in ``(from_seq, next_from_seq]`` in ascending
    order; ``holes`` lists burned seqs in that range. Pass ``next_from_seq``
    as the next ``from_seq``; ``has_more`` says whether a next page exists.
    """

    conversation_id: str
    from_seq: int
    messages: tuple[Message, ...]
    holes: tuple[int, ...]
    next_from_seq: int
    has_more: bool
    last_seq: int


@frozen
class ConversationSummary:
    """One row of a user's conversation list.

    ``version`` increases each time the row changes; listing with
    ``since=version`` returns only rows changed after it.
    """

    user_id: str
    conversation_id: str
    last_seq: int
    last_message_id: str
    last_sender_id: str
    last_preview: str
    last_at: int
    read_seq: int
    unread: int
    version: int

    def to_dict(self) -> dict[str, Any]:
        """Returns the summary as a JSON-ready mapping."""
        return {
            "user_id": self.user_id,
            "conversation_id": self.conversation_id,
            "last_seq": self.last_seq,
            "last_message_id": self.last_message_id,
            "last_sender_id": self.last_sender_id,
            "last_preview": self.last_preview,
            "last_at": self.last_at,
            "read_seq": self.read_seq,
            "unread": self.unread,
            "version": self.version,
        }


def _members(value: Iterable[str]) -> frozenset[str]:
    return frozenset(value)


@frozen
class Group:
    """A group and its members."""

    group_id: str
    owner_id: str
    name: str
    members: frozenset[str] = field(converter=_members)

    def to_dict(self) -> dict[str, Any]:
        """Returns the group as a JSON-ready mapping."""
        return {
            "group_id": self.group_id,
            "conversation_id": f"g:{self.group_id}",
            "owner_id": self.owner_id,
            "name": self.name,
            "members": sorted(self.members),
        }


@frozen
class Notification:
    """A system notification for one user (friend request, invite, notice).

    ``notification_id`` is given by the store: increasing per store, so a
    client lists what came after the last id it saw.
    """

    notification_id: int
    user_id: str
    kind: str
    payload: Mapping[str, Any]
    created_at: int
    read: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Returns the notification as a JSON-ready mapping."""
        return {
            "notification_id": self.notification_id,
            "user_id": self.user_id,
            "kind": self.kind,
            "payload": dict(self.payload),
            "created_at": self.created_at,
            "read": self.read,
        }
