"""The SQL schema of every store, as SQLAlchemy Core `MetaData`.

Tables are prefixed ``fleets_`` so that they can share a database with the
application's own. The migrations in ``fleets_mailbox/migrations`` create
exactly this schema; a test compares the two.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
)

from ._dialect import TABLE_OPTIONS, body_type, id_type

__all__ = [
    "VERSION_TABLE",
    "analytics_active",
    "analytics_counted",
    "analytics_counts",
    "group_members",
    "groups",
    "holes",
    "logs",
    "mailbox_entries",
    "messages",
    "metadata",
    "notifications",
    "summaries",
    "user_counters",
]

#: Alembic's version table of this library, apart from the application's own.
VERSION_TABLE = "fleets_alembic_version"

#: Ids of users, groups, messages (validated to at most 128 characters).
ID = 128
#: Conversation ids: a kind prefix and up to two ids.
CONVERSATION_ID = 260

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

#: Each message once; ``recipients`` (a JSON array) only while it is pending.
messages = Table(
    "fleets_messages",
    metadata,
    Column("message_id", id_type(ID), primary_key=True),
    Column("conversation_id", id_type(CONVERSATION_ID), nullable=False),
    Column("sender_id", id_type(ID), nullable=False),
    Column("client_msg_id", id_type(ID), nullable=False),
    Column("body", body_type(), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("status", id_type(16), nullable=False),
    Column("kind", id_type(ID), nullable=False),
    Column("edited_at", BigInteger, nullable=True),
    Column("deleted", Boolean, nullable=False),
    Column("recipients", body_type(), nullable=True),
    UniqueConstraint("sender_id", "client_msg_id"),
    Index(None, "status", "created_at"),
    **TABLE_OPTIONS,
)

#: Each conversation's seq counter and send lease.
logs = Table(
    "fleets_conversation_logs",
    metadata,
    Column("conversation_id", id_type(CONVERSATION_ID), primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
    Column("holder", id_type(ID), nullable=True),
    Column("lease_until", BigInteger, nullable=False),
    Column("pending_message_id", id_type(ID), nullable=True),
    Column("pending_seq", BigInteger, nullable=False),
    **TABLE_OPTIONS,
)

#: Burned seqs.
holes = Table(
    "fleets_holes",
    metadata,
    Column("conversation_id", id_type(CONVERSATION_ID), nullable=False),
    Column("seq", BigInteger, nullable=False),
    PrimaryKeyConstraint("conversation_id", "seq"),
    **TABLE_OPTIONS,
)

#: One row per recipient and message; the primary key serves sync.
mailbox_entries = Table(
    "fleets_mailbox_entries",
    metadata,
    Column("user_id", id_type(ID), nullable=False),
    Column("conversation_id", id_type(CONVERSATION_ID), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("message_id", id_type(ID), nullable=False),
    Column("sender_id", id_type(ID), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False),
    PrimaryKeyConstraint("user_id", "conversation_id", "seq"),
    Index(None, "conversation_id", "seq"),
    **TABLE_OPTIONS,
)

#: One row per user and conversation: the conversation list.
summaries = Table(
    "fleets_summaries",
    metadata,
    Column("user_id", id_type(ID), nullable=False),
    Column("conversation_id", id_type(CONVERSATION_ID), nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("last_message_id", id_type(ID), nullable=False),
    Column("last_sender_id", id_type(ID), nullable=False),
    Column("last_preview", Text, nullable=False),
    Column("last_at", BigInteger, nullable=False),
    Column("read_seq", BigInteger, nullable=False),
    Column("unread", BigInteger, nullable=False),
    Column("version", BigInteger, nullable=False),
    PrimaryKeyConstraint("user_id", "conversation_id"),
    Index(None, "user_id", "version"),
    **TABLE_OPTIONS,
)

#: Counters per user: the version of the user's summaries, and the lock that
#: orders the user's notification writers. A user's row is locked by every
#: transaction that writes the user's summaries or notifications, always
#: before those rows and, for many users, in sorted user order.
user_counters = Table(
    "fleets_user_counters",
    metadata,
    Column("user_id", id_type(ID), nullable=False),
    Column("name", id_type(32), nullable=False),
    Column("value", BigInteger, nullable=False),
    PrimaryKeyConstraint("user_id", "name"),
    **TABLE_OPTIONS,
)

notifications = Table(
    "fleets_notifications",
    metadata,
    Column(
        "notification_id",
        BigInteger().with_variant(Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("user_id", id_type(ID), nullable=False),
    Column("kind", id_type(ID), nullable=False),
    Column("payload", body_type(), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("is_read", Boolean, nullable=False),
    Index(None, "user_id", "notification_id"),
    **TABLE_OPTIONS,
)

#: Message ids counted once each.
analytics_counted = Table(
    "fleets_analytics_messages",
    metadata,
    Column("message_id", id_type(ID), primary_key=True),
    Column("day", id_type(32), nullable=False),
    **TABLE_OPTIONS,
)

analytics_counts = Table(
    "fleets_analytics_counts",
    metadata,
    Column("day", id_type(32), nullable=False),
    Column("kind", id_type(64), nullable=False),
    Column("count", BigInteger, nullable=False),
    PrimaryKeyConstraint("day", "kind"),
    **TABLE_OPTIONS,
)

analytics_active = Table(
    "fleets_analytics_active_users",
    metadata,
    Column("day", id_type(32), nullable=False),
    Column("user_id", id_type(ID), nullable=False),
    PrimaryKeyConstraint("day", "user_id"),
    **TABLE_OPTIONS,
)

groups = Table(
    "fleets_groups",
    metadata,
    Column("group_id", id_type(ID), primary_key=True),
    Column("owner_id", id_type(ID), nullable=False),
    Column("name", Text, nullable=False),
    **TABLE_OPTIONS,
)

group_members = Table(
    "fleets_group_members",
    metadata,
    Column("group_id", id_type(ID), nullable=False),
    Column("user_id", id_type(ID), nullable=False),
    PrimaryKeyConstraint("group_id", "user_id"),
    Index(None, "user_id"),
    **TABLE_OPTIONS,
)
