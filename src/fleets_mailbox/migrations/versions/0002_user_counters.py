"""Counters per user instead of one shared counter row.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03

Summary versions and the notification writers' lock move from the single
rows of ``fleets_counters`` to a row per user in ``fleets_user_counters``,
so that writers of different users no longer wait for each other. Each
user's summary version counter starts at the highest version among the
user's summaries, so versions keep increasing across the upgrade.
``fleets_counters`` is dropped: a process of an older release still
running fails on it at once rather than writing versions out of order.
Stop those processes before upgrading.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.types import TypeEngine

revision: str = "0002"
down_revision: str | None = "0001"
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


def upgrade() -> None:
    op.create_table(
        "fleets_user_counters",
        sa.Column("user_id", _id(128), nullable=False),
        sa.Column("name", _id(32), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "user_id", "name", name=op.f("pk_fleets_user_counters")
        ),
        **_TABLE,
    )
    op.execute(
        "INSERT INTO fleets_user_counters (user_id, name, value) "
        "SELECT user_id, 'summary_version', MAX(version) "
        "FROM fleets_summaries GROUP BY user_id"
    )
    op.drop_table("fleets_counters")


def downgrade() -> None:
    op.create_table(
        "fleets_counters",
        sa.Column("name", _id(64), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_fleets_counters")),
        **_TABLE,
    )
    op.execute(
        "INSERT INTO fleets_counters (name, value) "
        "SELECT 'summary_version', COALESCE(MAX(value), 0) "
        "FROM fleets_user_counters WHERE name = 'summary_version'"
    )
    op.drop_table("fleets_user_counters")
