"""What every directory answers alike: who belongs to a conversation.

A direct conversation's members are in its id; a group's are the directory's
to look up; a system channel's are configured. `members_of` does the part
that is the same for every `GroupDirectory`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from .errors import UnknownConversation
from .model import (
    ConversationKind,
    conversation_kind,
    conversation_members_of_direct,
    group_of,
)

__all__ = ["members_of"]


async def members_of(
    conversation_id: str,
    group_members: Callable[[str], Awaitable[frozenset[str] | None]],
    system_members: Mapping[str, frozenset[str]],
) -> frozenset[str]:
    """Returns a conversation's members, or raises `UnknownConversation`.

    ``group_members`` looks a group up by id (None if there is none);
    ``system_members`` gives each system channel's members.
    """
    kind = conversation_kind(conversation_id)
    if kind is ConversationKind.DIRECT:
        return frozenset(conversation_members_of_direct(conversation_id))
    if kind is ConversationKind.GROUP:
        members = await group_members(group_of(conversation_id))
    else:
        members = system_members.get(conversation_id[2:])
    if members is None:
        raise UnknownConversation(conversation_id)
    return members
