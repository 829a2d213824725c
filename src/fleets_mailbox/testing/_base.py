"""Plumbing shared by the conformance suites."""

from __future__ import annotations

import abc
import contextlib
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

from ..model import Message, new_message_id

_S = TypeVar("_S")

#: A fixed time for the values the suites write (milliseconds, November 2023).
T0 = 1_700_000_000_000


class StoreSuite(abc.ABC, Generic[_S]):
    """A suite over one object made by `make_store` for each test."""

    @abc.abstractmethod
    async def make_store(self) -> _S:
        """Returns a fresh, empty store; called once at the start of each test."""

    async def close_store(self, store: _S) -> None:
        """Releases what `make_store` opened; called at the end of each test."""

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[_S]:
        """Yields a store from `make_store` and closes it afterwards."""
        store = await self.make_store()
        try:
            yield store
        finally:
            await self.close_store(store)


def message(
    *,
    sender_id: str = "alice",
    conversation_id: str = "d:alice:bob",
    client_msg_id: str | None = None,
    body: str = "hello",
    created_at: int = T0,
    message_id: str | None = None,
    kind: str = "text",
) -> Message:
    """Returns a new pending message with a fresh id."""
    message_id = message_id or new_message_id()
    return Message(
        message_id=message_id,
        conversation_id=conversation_id,
        sender_id=sender_id,
        client_msg_id=client_msg_id or f"c-{message_id}",
        body=body,
        created_at=created_at,
        kind=kind,
    )
