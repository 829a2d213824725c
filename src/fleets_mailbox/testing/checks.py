"""Checks of the invariants that tests of any store bundle can reuse."""

from __future__ import annotations

from attrs import frozen

from ..model import Message, SyncPage
from ..sync import SyncService

__all__ = ["SyncWalk", "check_page", "walk_sync"]


@frozen
class SyncWalk:
    """What walking a user's sync pages to the end returned."""

    messages: tuple[Message, ...]
    holes: tuple[int, ...]
    pages: tuple[SyncPage, ...]

    @property
    def seqs(self) -> list[int]:
        """The seqs of the messages, in the order received."""
        return [m.seq for m in self.messages]


def check_page(page: SyncPage, from_seq: int, limit: int) -> None:
    """Raises `AssertionError` unless ``page`` is a well-formed answer.

    Its messages have ascending seqs in ``(from_seq, next_from_seq]``, at most
    ``limit`` of them; its holes lie in the range it covers and are no
    message's seq; ``next_from_seq`` is its last seq (``from_seq`` if empty).
    """
    seqs = [m.seq for m in page.messages]
    assert page.from_seq == from_seq, (page.from_seq, from_seq)
    assert len(seqs) <= limit, f"{len(seqs)} messages in a page of {limit}"
    assert seqs == sorted(set(seqs)), f"seqs not strictly ascending: {seqs}"
    assert all(s > from_seq for s in seqs), f"seq <= from_seq {from_seq}: {seqs}"
    assert page.next_from_seq == (seqs[-1] if seqs else from_seq), (
        f"next_from_seq {page.next_from_seq} but seqs {seqs} after {from_seq}"
    )
    # last_seq is the conversation's, not the cursor's: a cursor ahead of the
    # conversation (a restored client) must be able to see that it is.
    assert page.last_seq >= (seqs[-1] if seqs else 0), (page.last_seq, seqs)
    assert list(page.holes) == sorted(set(page.holes)), page.holes
    assert not set(page.holes) & set(seqs), f"holes {page.holes} carry messages"
    assert all(h > from_seq for h in page.holes), (from_seq, page.holes)
    if page.has_more:
        assert len(seqs) == limit, "has_more on a page that is not full"
    for message in page.messages:
        assert message.conversation_id == page.conversation_id, message


async def walk_sync(
    sync: SyncService,
    user_id: str,
    conversation_id: str,
    *,
    from_seq: int = 0,
    limit: int = 100,
    max_pages: int = 10_000,
) -> SyncWalk:
    """Syncs page after page from ``from_seq`` until ``has_more`` is False.

    Each page is checked with `check_page`; across pages no seq repeats.
    """
    messages: list[Message] = []
    holes: list[int] = []
    pages: list[SyncPage] = []
    cursor = from_seq
    for _ in range(max_pages):
        page = await sync.sync(user_id, conversation_id, cursor, limit)
        check_page(page, cursor, limit)
        pages.append(page)
        messages.extend(page.messages)
        holes.extend(h for h in page.holes if h not in holes)
        cursor = page.next_from_seq
        if not page.has_more:
            break
    else:
        raise AssertionError(f"sync did not end within {max_pages} pages")
    seqs = [m.seq for m in messages]
    assert seqs == sorted(set(seqs)), f"a seq came twice or out of order: {seqs}"
    return SyncWalk(tuple(messages), tuple(sorted(holes)), tuple(pages))
