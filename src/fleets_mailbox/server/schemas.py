"""The request bodies of the HTTP API, as strict pydantic models.

Keys are camelCase on the wire. Every field is strict: a number or an object
where a string is expected (``{"conversationId": {"$ne": ""}}``) is refused
with 422 instead of being coerced, and unknown keys are refused too, so no
field of a request can name the user it acts as. The ids inside are checked
by the library's own validators, which refuse ``$``-prefixed and other
malformed ids with ``invalid_id``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = [
    "CreateGroupRequest",
    "EditRequest",
    "LoginRequest",
    "MembersRequest",
    "ReadRequest",
    "SendRequest",
    "Text",
]


def _unicode(value: str) -> str:
    # JSON may escape lone surrogates ("\\ud800"); they are not text, and
    # stores that keep UTF-8 cannot keep them.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            "the text holds a lone surrogate (not valid Unicode)"
        ) from None
    return value


#: A string of valid Unicode text.
Text = Annotated[str, AfterValidator(_unicode)]


class _Request(BaseModel):
    model_config = ConfigDict(
        strict=True, extra="forbid", alias_generator=to_camel, frozen=True
    )


class LoginRequest(_Request):
    """``POST /api/login``: the user to log in as."""

    user_id: Text


class SendRequest(_Request):
    """``POST /api/messages``: a conversation id, or ``to`` for a direct chat."""

    conversation_id: Text | None = None
    to: Text | None = None
    body: Text
    client_msg_id: Text


class EditRequest(_Request):
    """``PATCH /api/messages/{messageId}``: the new body."""

    body: Text


class ReadRequest(_Request):
    """``POST /api/conversations/{conversationId}/read``: the read position."""

    read_seq: int


class CreateGroupRequest(_Request):
    """``POST /api/groups``: the new group; the caller becomes its owner."""

    group_id: Text
    name: Text = ""
    members: list[Text] = Field(default_factory=list)


class MembersRequest(_Request):
    """``POST /api/groups/{groupId}/members``: members to add and to remove."""

    add: list[Text] = Field(default_factory=list)
    remove: list[Text] = Field(default_factory=list)
