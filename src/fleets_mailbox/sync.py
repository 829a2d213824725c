"""The sync service: conversation lists, mailbox pages and read positions."""

from __future__ import annotations

import logging

from attrs import frozen

from .errors import ConversationBusy, InvalidRange, NotFound, TransientStoreError
from .events import read_event
from .model import (
    ConversationSummary,
    SyncPage,
    validate_conversation_id,
    validate_id,
)
from .protocols import (
    UNREAD_UNKNOWN,
    ConversationStore,
    MailboxStore,
    MessageBus,
    MessageStore,
)

__all__ = ["MAX_PAGE", "ConversationPage", "SyncService"]

logger = logging.getLogger(__name__)

#: The largest page a sync or a conversation listing returns.
MAX_PAGE = 1000


@frozen
class ConversationPage:
    """Conversation summaries changed after a version cursor.

    Pass ``next_version`` as the next ``since_version``.
    """

    summaries: tuple[ConversationSummary, ...]
    next_version: int
    has_more: bool


class SyncService:
    """Reads a user's mailbox and conversation list, and moves read positions."""

    def __init__(
        self,
        *,
        messages: MessageStore,
        mailboxes: MailboxStore,
        conversations: ConversationStore,
        bus: MessageBus | None = None,
        cas_retries: int = 8,
    ) -> None:
        self.messages = messages
        self.mailboxes = mailboxes
        self.conversations = conversations
        self.bus = bus
        self.cas_retries = cas_retries
        self.publish_failures = 0

    async def sync(
        self, user_id: str, conversation_id: str, from_seq: int = 0, limit: int = 100
    ) -> SyncPage:
        """Returns the user's messages with seq > ``from_seq``, ascending.

        Walking pages with ``next_from_seq`` yields every message exactly
        once, also while messages arrive: a seq's entries are all written
        before the next seq is allocated, so no later seq can be seen first.
        """
        user_id = validate_id(user_id, "user_id")
        conversation_id = validate_conversation_id(conversation_id)
        _check_cursor(from_seq, "from_seq")
        _check_limit(limit)

        last_seq = await self.mailboxes.last_seq(conversation_id)
        entries = await self.mailboxes.read(
            user_id, conversation_id, from_seq, limit + 1
        )
        has_more = len(entries) > limit
        entries = entries[:limit]
        found = await self.messages.get_many([e.message_id for e in entries])
        messages = tuple(found[e.message_id] for e in entries if e.message_id in found)
        if len(messages) != len(entries):
            missing = [e.message_id for e in entries if e.message_id not in found]
            logger.warning("mailbox entries point at missing messages %s", missing)

        next_from = max([from_seq, *(e.seq for e in entries)])
        # A hole can be declared, and a later seq written, after last_seq
        # was read: look as far as the page reaches, or further.
        upto = next_from if has_more else max(last_seq, next_from)
        holes = await self.mailboxes.holes(conversation_id, from_seq, upto)
        return SyncPage(
            conversation_id=conversation_id,
            from_seq=from_seq,
            messages=messages,
            holes=tuple(holes),
            next_from_seq=next_from,
            has_more=has_more,
            last_seq=max([last_seq, *(e.seq for e in entries)]),
        )

    async def conversations_since(
        self, user_id: str, since_version: int = 0, limit: int = 100
    ) -> ConversationPage:
        """Returns the user's conversation summaries changed after a cursor."""
        user_id = validate_id(user_id, "user_id")
        _check_cursor(since_version, "since_version")
        _check_limit(limit)
        rows = await self.conversations.list_changed(user_id, since_version, limit + 1)
        has_more = len(rows) > limit
        rows = rows[:limit]
        next_version = rows[-1].version if rows else since_version
        # A recounted row gets a new version; listing from next_version
        # returns it once more, with the same content.
        fresh = [await self._recounted(row) for row in rows]
        return ConversationPage(tuple(fresh), next_version, has_more)

    async def summary(self, user_id: str, conversation_id: str) -> ConversationSummary:
        """Returns one of the user's conversation summaries."""
        user_id = validate_id(user_id, "user_id")
        conversation_id = validate_conversation_id(conversation_id)
        return await self._recounted(await self._stored(user_id, conversation_id))

    async def _stored(self, user_id: str, conversation_id: str) -> ConversationSummary:
        row = await self.conversations.get(user_id, conversation_id)
        if row is None:
            raise NotFound(f"{user_id!r} has no conversation {conversation_id!r}")
        return row

    async def _recounted(self, row: ConversationSummary) -> ConversationSummary:
        """Returns ``row`` with its unread count recounted if it is unknown."""
        for _ in range(self.cas_retries):
            if row.unread != UNREAD_UNKNOWN:
                return row
            moved = await self._write_read(row, row.read_seq)
            if moved is not None:
                return moved
            row = await self._stored(row.user_id, row.conversation_id)
        raise TransientStoreError(
            f"{row.conversation_id!r} kept changing while counting unread; retry"
        )

    async def _write_read(
        self, row: ConversationSummary, read_seq: int
    ) -> ConversationSummary | None:
        """Recounts unread after ``read_seq`` and writes both, compare-and-set.

        Writes nothing when the row already says so: devices that mark the
        same position at once do not contend after the first one's write.
        """
        target = max(min(read_seq, row.last_seq), row.read_seq)
        unread = await self.mailboxes.count_unread(
            row.user_id, row.conversation_id, target, row.last_seq
        )
        if (target, unread) == (row.read_seq, row.unread):
            return row
        return await self.conversations.set_read(
            row.user_id, row.conversation_id, target, unread, row.version
        )

    async def mark_read(
        self, user_id: str, conversation_id: str, read_seq: int
    ) -> ConversationSummary:
        """Moves the user's read position forward to ``read_seq`` and recounts.

        A ``read_seq`` below the stored one keeps the stored one; one above
        the last message means "everything". The unread count is recounted
        from the mailbox, so a drifted counter heals. The user's other
        devices are told through a read event.
        """
        user_id = validate_id(user_id, "user_id")
        conversation_id = validate_conversation_id(conversation_id)
        _check_cursor(read_seq, "read_seq")

        for _ in range(self.cas_retries):
            row = await self._stored(user_id, conversation_id)
            moved = await self._write_read(row, read_seq)
            if moved is not None:
                await self._publish_read(moved)
                return moved
        raise ConversationBusy(conversation_id)

    async def _publish_read(self, summary: ConversationSummary) -> None:
        if self.bus is None:
            return
        try:
            await self.bus.publish(read_event(summary))
        except Exception:
            self.publish_failures += 1
            logger.warning("publishing a read event failed", exc_info=True)


def _check_cursor(value: object, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidRange(
            f"{name} must be an integer >= 0 (got {value!r})", field=name
        )


def _check_limit(limit: object) -> None:
    if (
        not isinstance(limit, int)
        or isinstance(limit, bool)
        or not 1 <= limit <= MAX_PAGE
    ):
        raise InvalidRange(
            f"limit must be an integer from 1 to {MAX_PAGE} (got {limit!r})",
            field="limit",
        )
