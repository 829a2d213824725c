"""fleets_mailbox: store, order, sync and push chat messages.

Every message is stored once and indexed into each recipient's mailbox under
a per-conversation seq; a message bus carries notifications so online users
are pushed at once, and offline users pull from their mailbox on return.
"""

from .analytics import AnalyticsConsumer
from .errors import (
    ConversationBusy,
    DuplicateMessage,
    EmptyBody,
    FleetsError,
    GroupExists,
    InvalidId,
    InvalidRange,
    InvalidRequest,
    LeaseLost,
    MessageTooLarge,
    NotAllowed,
    NotAMember,
    NotFound,
    StoreError,
    TransientStoreError,
    UnknownConversation,
    UnknownGroup,
    UnknownMessage,
)
from .model import (
    ConversationKind,
    ConversationSummary,
    Group,
    MailboxEntry,
    Message,
    MessageStatus,
    Notification,
    SyncPage,
    direct_conversation,
    group_conversation,
    system_conversation,
)
from .notifications import NotificationService
from .pipeline import DEFAULT_MAX_BODY_BYTES, SendPipeline
from .protocols import (
    AnalyticsStore,
    BusEvent,
    Connection,
    ConversationStore,
    Directory,
    GroupDirectory,
    MailboxStore,
    MessageBus,
    MessageStore,
    NotificationStore,
    Presence,
)
from .push import PushConsumer
from .service import MailboxService, Stores
from .sync import ConversationPage, SyncService

__version__ = "0.1.0.dev0"

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "AnalyticsConsumer",
    "AnalyticsStore",
    "BusEvent",
    "Connection",
    "ConversationBusy",
    "ConversationKind",
    "ConversationPage",
    "ConversationStore",
    "ConversationSummary",
    "Directory",
    "DuplicateMessage",
    "EmptyBody",
    "FleetsError",
    "Group",
    "GroupDirectory",
    "GroupExists",
    "InvalidId",
    "InvalidRange",
    "InvalidRequest",
    "LeaseLost",
    "MailboxEntry",
    "MailboxService",
    "MailboxStore",
    "Message",
    "MessageBus",
    "MessageStatus",
    "MessageStore",
    "MessageTooLarge",
    "NotAMember",
    "NotAllowed",
    "NotFound",
    "Notification",
    "NotificationService",
    "NotificationStore",
    "Presence",
    "PushConsumer",
    "SendPipeline",
    "StoreError",
    "Stores",
    "SyncPage",
    "SyncService",
    "TransientStoreError",
    "UnknownConversation",
    "UnknownGroup",
    "UnknownMessage",
    "__version__",
    "direct_conversation",
    "group_conversation",
    "system_conversation",
]
