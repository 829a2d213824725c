"""The events carried by the message bus, and their topics and tags.

Events are notifications that something is already stored; a consumer that
misses one loses a push, never data. Payloads are JSON-ready mappings so any
bus can carry them as bytes.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from .model import ConversationSummary, Message, Notification, conversation_kind
from .protocols import BusEvent

__all__ = [
    "ANALYTICS_GROUP",
    "MESSAGE_TOPIC",
    "NOTIFICATION_TOPIC",
    "PUSH_GROUP",
    "READ_TOPIC",
    "message_event",
    "notification_event",
    "read_event",
]

MESSAGE_TOPIC = "fleets-message-events"
NOTIFICATION_TOPIC = "fleets-notification-events"
READ_TOPIC = "fleets-read-events"

PUSH_GROUP = "fleets-push"
ANALYTICS_GROUP = "fleets-analytics"

_TAGS = {"d": "direct", "g": "group", "s": "system"}


def message_event(message: Message, recipients: Collection[str]) -> BusEvent:
    """Returns the event that announces a committed message to its recipients."""
    payload: dict[str, Any] = {
        "type": "message",
        "message": message.to_dict(),
        "recipients": sorted(recipients),
    }
    tag = _TAGS[conversation_kind(message.conversation_id).value]
    return BusEvent(MESSAGE_TOPIC, tag, message.message_id, payload)


def read_event(summary: ConversationSummary) -> BusEvent:
    """Returns the event that announces a moved read position to its user."""
    payload = {
        "type": "read",
        "user_id": summary.user_id,
        "conversation_id": summary.conversation_id,
        "read_seq": summary.read_seq,
        "unread": summary.unread,
    }
    key = f"{summary.user_id}/{summary.conversation_id}/{summary.read_seq}"
    return BusEvent(READ_TOPIC, "read", key, payload)


def notification_event(notification: Notification) -> BusEvent:
    """Returns the event that announces a stored notification."""
    payload = {"type": "notification", "notification": notification.to_dict()}
    key = f"notification/{notification.notification_id}"
    return BusEvent(NOTIFICATION_TOPIC, notification.kind, key, payload)
