"""The notification service: store a notification, then announce it."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from .errors import InvalidRange, InvalidRequest
from .events import notification_event
from .model import Notification, now_ms, validate_id
from .protocols import MessageBus, NotificationStore

__all__ = ["NotificationService"]

logger = logging.getLogger(__name__)

_MAX_PAYLOAD_KEYS = 32


class NotificationService:
    """Stores notifications (friend requests, invites, notices) and pushes them."""

    def __init__(
        self,
        store: NotificationStore,
        bus: MessageBus | None = None,
        *,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.store = store
        self.bus = bus
        self.clock = clock
        self.publish_failures = 0

    async def notify(
        self, user_id: str, kind: str, payload: Mapping[str, Any] | None = None
    ) -> Notification:
        """Stores a notification for ``user_id``, publishes it and returns it."""
        user_id = validate_id(user_id, "user_id")
        kind = validate_id(kind, "kind")
        payload = dict(payload or {})
        if len(payload) > _MAX_PAYLOAD_KEYS or not all(
            isinstance(k, str) and not k.startswith("$") for k in payload
        ):
            raise InvalidRequest(
                f"payload must have at most {_MAX_PAYLOAD_KEYS} string keys, "
                "none starting with $",
                field="payload",
            )
        try:
            # What every store and the bus carry: JSON, exactly as given.
            if json.loads(json.dumps(payload, allow_nan=False)) != payload:
                raise ValueError("it changes through JSON")
        except (TypeError, ValueError) as exc:
            raise InvalidRequest(
                f"payload must be JSON: strings, numbers, booleans, null, lists "
                f"and objects with string keys ({exc})",
                field="payload",
            ) from None
        notification = await self.store.add(user_id, kind, payload, self.clock())
        if self.bus is not None:
            try:
                await self.bus.publish(notification_event(notification))
            except Exception:
                self.publish_failures += 1
                logger.warning(
                    "publishing notification %d failed; it is stored",
                    notification.notification_id,
                    exc_info=True,
                )
        return notification

    async def list(
        self, user_id: str, after_id: int = 0, limit: int = 100
    ) -> list[Notification]:
        """Returns the user's notifications after ``after_id``, oldest first."""
        user_id = validate_id(user_id, "user_id")
        if not isinstance(after_id, int) or after_id < 0:
            raise InvalidRange("after_id must be an integer >= 0", field="after_id")
        if not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise InvalidRange("limit must be from 1 to 1000", field="limit")
        return await self.store.list(user_id, after_id, limit)

    async def mark_read(self, user_id: str, notification_id: int) -> bool:
        """Marks one of the user's notifications read."""
        return await self.store.mark_read(
            validate_id(user_id, "user_id"), notification_id
        )
