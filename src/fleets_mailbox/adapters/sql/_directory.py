"""The SQL group directory."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from sqlalchemy import Row, Select, bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ...directory import members_of
from ...errors import GroupExists, UnknownGroup
from ...model import (
    Group,
)
from ._dialect import Database, IntegrityViolation
from .schema import group_members, groups

__all__ = ["SqlDirectory"]


class SqlDirectory:
    """Keeps groups and their members; direct conversations need no rows.

    ``system_members`` gives the members of system channels (by default
    none, so sending to one raises `UnknownConversation`).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        system_members: Mapping[str, Collection[str]] | None = None,
    ) -> None:
        self._db = Database(engine)
        self._system = {k: frozenset(v) for k, v in (system_members or {}).items()}

    async def members(self, conversation_id: str) -> frozenset[str]:
        return await members_of(conversation_id, self._group_members, self._system)

    async def _group_members(self, group_id: str) -> frozenset[str] | None:
        async with self._db.read() as conn:
            group = await _group(conn, group_id)
        return None if group is None else group.members

    async def create_group(
        self, group_id: str, owner_id: str, name: str, members: Collection[str]
    ) -> Group:
        everyone = sorted({owner_id, *members})
        try:
            async with self._db.write() as conn:
                await conn.execute(
                    groups.insert().values(
                        group_id=group_id, owner_id=owner_id, name=name
                    )
                )
                await conn.execute(
                    self._db.insert_ignore(group_members),
                    [{"group_id": group_id, "user_id": u} for u in everyone],
                )
        except IntegrityViolation:
            raise GroupExists(group_id) from None
        return Group(group_id, owner_id, name, everyone)

    async def get_group(self, group_id: str) -> Group:
        async with self._db.read() as conn:
            group = await _group(conn, group_id)
        if group is None:
            raise UnknownGroup(group_id)
        return group

    async def add_members(self, group_id: str, user_ids: Collection[str]) -> Group:
        users = sorted(set(user_ids))
        async with self._db.write() as conn:
            await self._lock(conn, group_id)
            if users:
                await conn.execute(
                    self._db.insert_ignore(group_members),
                    [{"group_id": group_id, "user_id": u} for u in users],
                )
            group = await _group(conn, group_id)
        if group is None:
            raise UnknownGroup(group_id)
        return group

    async def remove_members(self, group_id: str, user_ids: Collection[str]) -> Group:
        users = sorted(set(user_ids))
        t = group_members
        async with self._db.write() as conn:
            await self._lock(conn, group_id)
            if users:
                await conn.execute(
                    delete(t).where(
                        t.c.group_id == group_id, t.c.user_id == bindparam("b_user_id")
                    ),
                    [{"b_user_id": u} for u in users],
                )
            group = await _group(conn, group_id)
        if group is None:
            raise UnknownGroup(group_id)
        return group

    async def groups_of(self, user_id: str) -> list[Group]:
        mine = select(group_members.c.group_id).where(
            group_members.c.user_id == user_id
        )
        async with self._db.read() as conn:
            result = await conn.execute(
                _group_rows().where(groups.c.group_id.in_(mine))
            )
            found = _groups_of_rows(result)
        return sorted(found.values(), key=lambda g: g.group_id)

    async def _lock(self, conn: AsyncConnection, group_id: str) -> None:
        exists = await conn.scalar(
            select(groups.c.group_id)
            .where(groups.c.group_id == group_id)
            .with_for_update()
        )
        if exists is None:
            raise UnknownGroup(group_id)


def _group_rows() -> Select[str, str, str, str]:
    return select(
        groups.c.group_id, groups.c.owner_id, groups.c.name, group_members.c.user_id
    ).select_from(
        groups.outerjoin(group_members, group_members.c.group_id == groups.c.group_id)
    )


def _groups_of_rows(rows: Iterable[Row[str, str, str, str]]) -> dict[str, Group]:
    found: dict[str, tuple[str, str, set[str]]] = {}
    for row in rows:
        _, _, members = found.setdefault(row.group_id, (row.owner_id, row.name, set()))
        if row.user_id is not None:
            members.add(row.user_id)
    return {
        g: Group(g, owner, name, members) for g, (owner, name, members) in found.items()
    }


async def _group(conn: AsyncConnection, group_id: str) -> Group | None:
    result = await conn.execute(_group_rows().where(groups.c.group_id == group_id))
    return _groups_of_rows(result).get(group_id)
