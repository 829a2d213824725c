"""The error tree of fleets_mailbox.

Every error the library raises on purpose derives from `FleetsError`::

    FleetsError
    ├── InvalidRequest (also ValueError)         bad input; nothing was stored
    │   ├── InvalidId                            an id that is not a plain string
    │   ├── EmptyBody
    │   ├── MessageTooLarge                      .size, .limit (bytes of UTF-8)
    │   └── InvalidRange                         from_seq, limit, read_seq out of range
    ├── NotAMember (also PermissionError)       .user_id, .conversation_id
    ├── NotAllowed (also PermissionError)       an act reserved to someone else
    ├── NotFound (also LookupError)
    │   ├── UnknownConversation                  .conversation_id
    │   ├── UnknownGroup                         .group_id
    │   └── UnknownMessage                       .message_id
    ├── GroupExists                              .group_id
    ├── DuplicateMessage                         .sender_id, .client_msg_id, .message_id
    └── StoreError                               a store failed; see .transient
        ├── TransientStoreError                  network, lock timeout, deadlock
        │   └── ConversationBusy                 .conversation_id: lease held too long
        └── LeaseLost                            the send lease passed to another sender

Adapters translate their driver's exceptions into `StoreError` subclasses at
one place each, chaining the original exception as ``__cause__``.
"""

from __future__ import annotations

__all__ = [
    "ConversationBusy",
    "DuplicateMessage",
    "EmptyBody",
    "FleetsError",
    "GroupExists",
    "InvalidId",
    "InvalidRange",
    "InvalidRequest",
    "LeaseLost",
    "MessageTooLarge",
    "NotAMember",
    "NotAllowed",
    "NotFound",
    "StoreError",
    "TransientStoreError",
    "UnknownConversation",
    "UnknownGroup",
    "UnknownMessage",
]


class FleetsError(Exception):
    """Base class of every error the library raises on purpose."""

    #: A short machine-readable name, used by the example server's JSON errors.
    code = "error"

    def to_dict(self) -> dict[str, object]:
        """Returns the error as a JSON-ready mapping."""
        fields = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        return {"error": self.code, "message": str(self), **fields}


class InvalidRequest(FleetsError, ValueError):
    """The request is malformed; nothing was stored."""

    code = "invalid_request"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidId(InvalidRequest):
    """An id is not a non-empty string of the allowed characters."""

    code = "invalid_id"


class EmptyBody(InvalidRequest):
    """A message body is empty or only white space."""

    code = "empty_body"

    def __init__(self) -> None:
        super().__init__("message body is empty", field="body")


class MessageTooLarge(InvalidRequest):
    """A message body is larger than the configured limit."""

    code = "message_too_large"

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"message body is {size} bytes, the limit is {limit}", field="body"
        )
        self.size = size
        self.limit = limit


class InvalidRange(InvalidRequest):
    """A seq, cursor or page limit is out of its allowed range."""

    code = "invalid_range"


class NotAMember(FleetsError, PermissionError):
    """The user does not belong to the conversation."""

    code = "not_a_member"

    def __init__(self, user_id: str, conversation_id: str) -> None:
        super().__init__(f"{user_id!r} is not a member of {conversation_id!r}")
        self.user_id = user_id
        self.conversation_id = conversation_id


class NotAllowed(FleetsError, PermissionError):
    """The user may not do this (edit another's message, manage a group...)."""

    code = "not_allowed"

    def __init__(self, message: str, *, user_id: str) -> None:
        super().__init__(message)
        self.user_id = user_id


class NotFound(FleetsError, LookupError):
    """Something named by the request does not exist."""

    code = "not_found"


class UnknownConversation(NotFound):
    """No conversation has this id."""

    code = "unknown_conversation"

    def __init__(self, conversation_id: str) -> None:
        super().__init__(f"unknown conversation {conversation_id!r}")
        self.conversation_id = conversation_id


class UnknownGroup(NotFound):
    """No group has this id."""

    code = "unknown_group"

    def __init__(self, group_id: str) -> None:
        super().__init__(f"unknown group {group_id!r}")
        self.group_id = group_id


class UnknownMessage(NotFound):
    """No message has this id."""

    code = "unknown_message"

    def __init__(self, message_id: str) -> None:
        super().__init__(f"unknown message {message_id!r}")
        self.message_id = message_id


class GroupExists(FleetsError):
    """A group with this id already exists."""

    code = "group_exists"

    def __init__(self, group_id: str) -> None:
        super().__init__(f"group {group_id!r} already exists")
        self.group_id = group_id


class DuplicateMessage(FleetsError):
    """A client message id was reused for a different message.

    Resending the same message with the same client message id is not an
    error (the original is returned); this is raised when the resend differs
    in conversation or body from the message first sent under that id.
    """

    code = "duplicate_message"

    def __init__(self, sender_id: str, client_msg_id: str, message_id: str) -> None:
        super().__init__(
            f"client message id {client_msg_id!r} of {sender_id!r} already names "
            f"message {message_id!r} with other content"
        )
        self.sender_id = sender_id
        self.client_msg_id = client_msg_id
        self.message_id = message_id


class StoreError(FleetsError):
    """A store failed. ``transient`` tells whether a retry may succeed."""

    code = "store_error"
    transient = False


class TransientStoreError(StoreError):
    """A store failed in a way that a retry may cure."""

    code = "store_unavailable"
    transient = True


class ConversationBusy(TransientStoreError):
    """Another sender holds the conversation's send lease for too long."""

    code = "conversation_busy"

    def __init__(self, conversation_id: str) -> None:
        super().__init__(f"conversation {conversation_id!r} is busy, retry the send")
        self.conversation_id = conversation_id


class LeaseLost(StoreError):
    """The send lease expired and another sender took the conversation over."""

    code = "lease_lost"
    transient = True

    def __init__(self, conversation_id: str) -> None:
        super().__init__(f"send lease on {conversation_id!r} was taken over")
        self.conversation_id = conversation_id
