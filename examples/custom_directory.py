"""Plugging the application's own `Directory` into fleets_mailbox.

The library asks a directory one question, ``members(conversation_id)``,
before every send; group management (the `GroupDirectory` methods) serves
the example server's group calls. Here the application already knows its
people and teams (a dict standing in for its database): only employees may
chat directly, and teams are the groups, managed by the application, so the
chat API may read them but not change them. Run it::

    python examples/custom_directory.py
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping

import attrs

from fleets_mailbox import (
    ConversationKind,
    Group,
    MailboxService,
    NotAllowed,
    NotAMember,
    Stores,
    UnknownConversation,
    UnknownGroup,
    direct_conversation,
    group_conversation,
)
from fleets_mailbox.adapters.local_bus import LocalBus
from fleets_mailbox.adapters.memory import MemoryPresence
from fleets_mailbox.model import conversation_kind, conversation_members_of_direct

# What the application keeps anyway: its people and its teams.
EMPLOYEES = {"ada", "grace", "linus", "barbara"}
TEAMS = {"compilers": ("grace", {"grace", "ada"}), "kernel": ("linus", {"linus"})}


class TeamDirectory:
    """Employees chat directly; each team is a group its lead owns."""

    def __init__(
        self, employees: Collection[str], teams: Mapping[str, tuple[str, set[str]]]
    ) -> None:
        self.employees = frozenset(employees)
        self.teams = teams

    async def members(self, conversation_id: str) -> frozenset[str]:
        kind = conversation_kind(conversation_id)
        if kind is ConversationKind.DIRECT:
            users = frozenset(conversation_members_of_direct(conversation_id))
            if users <= self.employees:
                return users
        elif kind is ConversationKind.GROUP and conversation_id[2:] in self.teams:
            return frozenset(self.teams[conversation_id[2:]][1])
        raise UnknownConversation(conversation_id)

    async def get_group(self, group_id: str) -> Group:
        if group_id not in self.teams:
            raise UnknownGroup(group_id)
        lead, members = self.teams[group_id]
        return Group(group_id, lead, group_id.title(), members)

    async def groups_of(self, user_id: str) -> list[Group]:
        names = sorted(
            g for g, (_, members) in self.teams.items() if user_id in members
        )
        return [await self.get_group(g) for g in names]

    # Teams change in the HR system, never through the chat API.
    async def create_group(
        self, group_id: str, owner_id: str, name: str, members: Collection[str]
    ) -> Group:
        raise NotAllowed("teams are managed in the HR system", user_id=owner_id)

    async def add_members(self, group_id: str, user_ids: Collection[str]) -> Group:
        raise NotAllowed("teams are managed in the HR system", user_id="")

    async def remove_members(self, group_id: str, user_ids: Collection[str]) -> Group:
        raise NotAllowed("teams are managed in the HR system", user_id="")


async def main() -> None:
    # Every store in memory, but the directory is the application's.
    stores = attrs.evolve(Stores.memory(), directory=TeamDirectory(EMPLOYEES, TEAMS))
    service = MailboxService(stores, LocalBus(), MemoryPresence())
    await service.start()
    try:
        team = group_conversation("compilers")
        sent = await service.pipeline.send("grace", team, "COBOL at 3?", "c-1")
        print(f"grace -> {team}: seq {sent.seq}")

        page = await service.sync.sync("ada", team)
        print("ada reads:", [m.body for m in page.messages])

        chat = direct_conversation("ada", "barbara")
        await service.pipeline.send("ada", chat, "lunch?", "c-2")
        print("ada -> barbara: delivered")

        try:
            await service.pipeline.send("linus", team, "hello compilers", "c-3")
        except NotAMember as exc:
            print("refused:", exc)
        try:
            outsider = direct_conversation("ada", "mallory")
            await service.pipeline.send("ada", outsider, "psst", "c-4")
        except UnknownConversation as exc:
            print("refused:", exc)
    finally:
        await service.close()


if __name__ == "__main__":
    asyncio.run(main())
