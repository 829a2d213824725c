"""The initial schema of the SQL stores.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Self-contained on purpose: later changes to the package's MetaData must not
change what this revision creates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.types import TypeEngine

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MYSQL = ("mysql", "mariadb")
_TABLE: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def _id(length: int) -> TypeEngine[str]:
    return (
        sa.String(length)
        .with_variant(mysql.VARCHAR(length, collation="utf8mb4_bin"), *_MYSQL)
        .with_variant(postgresql.VARCHAR(length, collation="C"), "postgresql")
    )


def _body() -> TypeEngine[str]:
    return sa.Text().with_variant(mysql.MEDIUMTEXT(), *_MYSQL)


def upgrade() -> None:
    op.create_table(
        "fleets_messages",
        sa.Column("message_id", _id(128), nullable=False),
        sa.Column("conversation_id", _id(260), nullable=False),
        sa.Column("sender_id", _id(128), nullable=False),
        sa.Column("client_msg_id", _id(128), nullable=False),
        sa.Column("body", _body(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("status", _id(16), nullable=False),
        sa.Column("kind", _id(128), nullable=False),
        sa.Column("edited_at", sa.BigInteger(), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("recipients", _body(), nullable=True),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_fleets_messages")),
        sa.UniqueConstraint(
            "sender_id",
            "client_msg_id",
            name=op.f("uq_fleets_messages_sender_id_client_msg_id"),
        ),
        **_TABLE,
    )
    op.create_index(
        op.f("ix_fleets_messages_status_created_at"),
        "fleets_messages",
        ["status", "created_at"],
    )

    op.create_table(
        "fleets_conversation_logs",
        sa.Column("conversation_id", _id(260), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("holder", _id(128), nullable=True),
        sa.Column("lease_until", sa.BigInteger(), nullable=False),
        sa.Column("pending_message_id", _id(128), nullable=True),
        sa.Column("pending_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "conversation_id", name=op.f("pk_fleets_conversation_logs")
        ),
        **_TABLE,
    )

    op.create_table(
        "fleets_holes",
        sa.Column("conversation_id", _id(260), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", "seq", name=op.f("pk_fleets_holes")),
        **_TABLE,
    )

    op.create_table(
        "fleets_mailbox_entries",
        sa.Column("user_id", _id(128), nullable=False),
        sa.Column("conversation_id", _id(260), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("message_id", _id(128), nullable=False),
        sa.Column("sender_id", _id(128), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint(
            "user_id",
            "conversation_id",
            "seq",
            name=op.f("pk_fleets_mailbox_entries"),
        ),
        **_TABLE,
    )
    op.create_index(
        op.f("ix_fleets_mailbox_entries_conversation_id_seq"),
        "fleets_mailbox_entries",
        ["conversation_id", "seq"],
    )

    op.create_table(
        "fleets_summaries",
        sa.Column("user_id", _id(128), nullable=False),
        sa.Column("conversation_id", _id(260), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_message_id", _id(128), nullable=False),
        sa.Column("last_sender_id", _id(128), nullable=False),
        sa.Column("last_preview", sa.Text(), nullable=False),
        sa.Column("last_at", sa.BigInteger(), nullable=False),
        sa.Column("read_seq", sa.BigInteger(), nullable=False),
        sa.Column("unread", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "user_id", "conversation_id", name=op.f("pk_fleets_summaries")
        ),
        **_TABLE,
    )
    op.create_index(
        op.f("ix_fleets_summaries_user_id_version"),
        "fleets_summaries",
        ["user_id", "version"],
    )

    op.create_table(
        "fleets_counters",
        sa.Column("name", _id(64), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_fleets_counters")),
        **_TABLE,
    )

    op.create_table(
        "fleets_notifications",
        sa.Column(
            "notification_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("user_id", _id(128), nullable=False),
        sa.Column("kind", _id(128), nullable=False),
        sa.Column("payload", _body(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("is_read", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint(
            "notification_id", name=op.f("pk_fleets_notifications")
        ),
        **_TABLE,
    )
    op.create_index(
        op.f("ix_fleets_notifications_user_id_notification_id"),
        "fleets_notifications",
        ["user_id", "notification_id"],
    )

    op.create_table(
        "fleets_analytics_messages",
        sa.Column("message_id", _id(128), nullable=False),
        sa.Column("day", _id(32), nullable=False),
        sa.PrimaryKeyConstraint(
            "message_id", name=op.f("pk_fleets_analytics_messages")
        ),
        **_TABLE,
    )

    op.create_table(
        "fleets_analytics_counts",
        sa.Column("day", _id(32), nullable=False),
        sa.Column("kind", _id(64), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "kind", name=op.f("pk_fleets_analytics_counts")),
        **_TABLE,
    )

    op.create_table(
        "fleets_analytics_active_users",
        sa.Column("day", _id(32), nullable=False),
        sa.Column("user_id", _id(128), nullable=False),
        sa.PrimaryKeyConstraint(
            "day", "user_id", name=op.f("pk_fleets_analytics_active_users")
        ),
        **_TABLE,
    )

    op.create_table(
        "fleets_groups",
        sa.Column("group_id", _id(128), nullable=False),
        sa.Column("owner_id", _id(128), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("group_id", name=op.f("pk_fleets_groups")),
        **_TABLE,
    )

    op.create_table(
        "fleets_group_members",
        sa.Column("group_id", _id(128), nullable=False),
        sa.Column("user_id", _id(128), nullable=False),
        sa.PrimaryKeyConstraint(
            "group_id", "user_id", name=op.f("pk_fleets_group_members")
        ),
        **_TABLE,
    )
    op.create_index(
        op.f("ix_fleets_group_members_user_id"),
        "fleets_group_members",
        ["user_id"],
    )


def downgrade() -> None:
    op.drop_table("fleets_group_members")
    op.drop_table("fleets_groups")
    op.drop_table("fleets_analytics_active_users")
    op.drop_table("fleets_analytics_counts")
    op.drop_table("fleets_analytics_messages")
    op.drop_table("fleets_notifications")
    op.drop_table("fleets_counters")
    op.drop_table("fleets_summaries")
    op.drop_table("fleets_mailbox_entries")
    op.drop_table("fleets_holes")
    op.drop_table("fleets_conversation_logs")
    op.drop_table("fleets_messages")
