"""The replay itself: plan, run against a server, check, report.

`build_plan` turns the corpus into users, conversations and the sends of
each dialogue, all drawn from one seeded random generator, so a seed gives
the same run up to timing. `replay` runs a plan against a server (its own
embedded one unless a URL is given): it logs the users in, creates the
groups, connects the devices that start online, replays the dialogues with
bounded concurrency (one dialogue at a time per conversation, so the sends
into a conversation have a definite order), takes devices offline and back
as planned, and at the end brings every device online, lets it catch up,
reads every member's full view by sync from 0 and checks both views.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import secrets
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
from attrs import frozen
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from ..model import direct_conversation, group_conversation
from .check import (
    DUPLICATED,
    CheckResult,
    Problem,
    SentMessage,
    ViewEntry,
    check_views,
)
from .client import Api, ApiError, ReplayError, UserClient, entry_of
from .corpus import Dialogue, load_dialogues

__all__ = [
    "Absence",
    "ConversationPlan",
    "Plan",
    "ReplayReport",
    "Script",
    "Send",
    "build_plan",
    "replay",
]

logger = logging.getLogger(__name__)

#: The page size of the final full syncs.
FINAL_PAGE = 100

#: How long the pushes must have been quiet before the final check, in seconds.
QUIET_S = 0.5

#: The longest wait for the pushes to become quiet, in seconds.
SETTLE_MAX_S = 20.0


# -- the report -----------------------------------------------------------------


@frozen
class ReplayReport:
    """What a replay did and found.

    ``sent`` counts distinct sends, ``stored`` the distinct messages the
    server acknowledged for them, ``pushed`` the distinct (user, message)
    pairs received over WebSocket, ``synced`` the (user, message) pairs a
    device got first by sync while running (gap fills, catch-ups; not the
    final full sync). ``lost``, ``duplicated``, ``misordered`` and
    ``unexpected`` are the distinct problems `check_views` found in the
    devices' live views and the final full syncs; ``p50_ms`` and ``p99_ms``
    are latencies of the send requests, ``push_p50_ms`` and ``push_p99_ms``
    the delays from a send's answer to the push of its message (negative
    when the push came first).
    """

    sent: int
    stored: int
    pushed: int
    synced: int
    lost: int
    duplicated: int
    misordered: int
    p50_ms: float
    p99_ms: float
    push_p50_ms: float = 0.0
    push_p99_ms: float = 0.0
    unexpected: int = 0
    rejected: int = 0
    refused_resends: int = 0
    unacknowledged: int = 0
    created_twice: int = 0
    call_errors: int = 0
    resent: int = 0
    users: int = 0
    conversations: int = 0
    groups: int = 0
    offline_users: int = 0
    reconnects: int = 0
    drops: int = 0
    gap_syncs: int = 0
    skipped_seqs: int = 0
    elapsed_s: float = 0.0
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether no message was lost, duplicated, misordered or invented."""
        return (
            self.lost == self.duplicated == self.misordered == self.unexpected == 0
            and self.refused_resends == 0
        )

    def line(self) -> str:
        """Returns the one-line summary the command prints."""
        return (
            f"sent={self.sent} stored={self.stored} pushed={self.pushed} "
            f"synced={self.synced} lost={self.lost} duplicated={self.duplicated} "
            f"misordered={self.misordered} p50_ms={self.p50_ms:.1f} "
            f"p99_ms={self.p99_ms:.1f}"
        )

    def details(self) -> str:
        """Returns a few lines on the run for people (the command's stderr)."""
        lines = [
            f"{self.users} users, {self.conversations} conversations "
            f"({self.groups} groups), {self.offline_users} users offline for a "
            f"while; {self.resent} sends resent; {self.elapsed_s:.1f} s; push "
            f"p50_ms={self.push_p50_ms:.1f} p99_ms={self.push_p99_ms:.1f} "
            "after the answer",
            f"reconnects={self.reconnects} dropped_sockets={self.drops} "
            f"gap_syncs={self.gap_syncs} skipped_seqs={self.skipped_seqs} "
            f"unexpected={self.unexpected} rejected={self.rejected} "
            f"refused_resends={self.refused_resends} "
            f"unacknowledged={self.unacknowledged} "
            f"resends_answered_201_twice={self.created_twice} "
            f"failed_calls={self.call_errors}",
        ]
        lines.extend(f"  {p}" for p in self.problems)
        return "\n".join(lines)


# -- the plan -------------------------------------------------------------------


@frozen
class Send:
    """One utterance to send: ``copies`` > 1 sends it again with the same id."""

    conversation_id: str
    sender_id: str
    to: str | None
    body: str
    client_msg_id: str
    copies: int = 1
    concurrent: bool = False


@frozen
class Script:
    """One dialogue replayed in one conversation."""

    conversation_id: str
    dialogue: str
    sends: tuple[Send, ...]


@frozen
class ConversationPlan:
    """A conversation, its members and, for a group, its group id."""

    conversation_id: str
    members: tuple[str, ...]
    group_id: str | None = None


@frozen
class Absence:
    """A device offline from ``leave_at`` sends done until ``back_at``.

    ``leave_at`` 0 means offline from the start; ``back_at`` at or past the
    number of sends means back only for the final check.
    """

    user_id: str
    leave_at: int
    back_at: int


@frozen
class Plan:
    """Everything a replay does, drawn from one seed."""

    users: tuple[str, ...]
    conversations: tuple[ConversationPlan, ...]
    scripts: tuple[Script, ...]
    absences: tuple[Absence, ...]

    @property
    def sends(self) -> int:
        """The number of distinct sends."""
        return sum(len(s.sends) for s in self.scripts)


def build_plan(
    dialogues: Sequence[Dialogue],
    *,
    seed: int,
    users: int,
    messages: int,
    conversations: int | None = None,
    groups_share: float = 0.3,
    offline_share: float = 0.25,
    retry_share: float = 0.05,
    prefix: str = "",
) -> Plan:
    """Returns the plan of a replay of ``messages`` sends among ``users`` users.

    ``conversations`` (default: as many as users) are split into groups of
    3 to 8 members (``groups_share`` of them) and direct chats; each
    dialogue goes to a random conversation, its utterances sent by two
    alternating members; the dialogues loop until ``messages`` sends.
    """
    if users < 2:
        raise ValueError("a replay needs at least 2 users")
    if messages < 1:
        raise ValueError("a replay needs at least 1 message")
    if not dialogues:
        raise ValueError("no dialogues to replay")
    rng = random.Random(seed)
    names = tuple(f"{prefix}u{i:03d}" for i in range(users))
    total = max(1, conversations if conversations is not None else users)
    groups = round(total * groups_share) if users >= 3 else 0
    direct = min(total - groups, users * (users - 1) // 2)
    if direct + groups == 0:
        direct = 1
    plans = [
        ConversationPlan(direct_conversation(a, b), (a, b))
        for a, b in _pairs(rng, names, direct)
    ]
    for i in range(groups):
        size = rng.randint(3, min(8, users))
        members = tuple(rng.sample(names, size))
        group_id = f"{prefix}g{i:03d}"
        plans.append(ConversationPlan(group_conversation(group_id), members, group_id))

    scripts: list[Script] = []
    count = 0
    for dialogue in _endless(rng, dialogues):
        conversation = rng.choice(plans)
        first, second = rng.sample(conversation.members, 2)
        sends: list[Send] = []
        for i, body in enumerate(dialogue.utterances):
            if count == messages:
                break
            count += 1
            sender = (first, second)[i % 2]
            copies, concurrent = 1, False
            if rng.random() < retry_share:
                copies = rng.choice((2, 2, 3))
                concurrent = rng.random() < 0.5
            sends.append(
                Send(
                    conversation_id=conversation.conversation_id,
                    sender_id=sender,
                    to=None if conversation.group_id else (second, first)[i % 2],
                    body=body,
                    client_msg_id=f"{prefix}m{count:06d}",
                    copies=copies,
                    concurrent=concurrent,
                )
            )
        scripts.append(
            Script(
                conversation.conversation_id,
                f"{dialogue.source}#{dialogue.index}",
                tuple(sends),
            )
        )
        if count == messages:
            break

    absences = []
    for i, user in enumerate(rng.sample(names, round(users * offline_share))):
        if i % 2 == 0:
            leave_at = 0
            back_at = rng.randint(messages // 5, messages * 7 // 10)
        else:
            leave_at = rng.randint(max(1, messages // 10), max(1, messages * 6 // 10))
            back_at = min(
                messages, leave_at + rng.randint(messages // 10, messages * 2 // 5)
            )
        absences.append(Absence(user, leave_at, back_at))
    return Plan(names, tuple(plans), tuple(scripts), tuple(absences))


def _pairs(
    rng: random.Random, names: Sequence[str], wanted: int
) -> list[tuple[str, str]]:
    """Returns ``wanted`` distinct pairs, first covering every user once."""
    order = list(names)
    rng.shuffle(order)
    chosen: dict[frozenset[str], tuple[str, str]] = {}
    for a, b in zip(order[0::2], order[1::2], strict=False):
        chosen.setdefault(frozenset((a, b)), (a, b))
    if len(order) % 2:
        a = order[-1]
        b = rng.choice(order[:-1])
        chosen.setdefault(frozenset((a, b)), (a, b))
    pairs = list(chosen.values())[:wanted]
    taken = {frozenset(p) for p in pairs}
    while len(pairs) < wanted:
        a, b = rng.sample(names, 2)
        if frozenset((a, b)) not in taken:
            taken.add(frozenset((a, b)))
            pairs.append((a, b))
    return pairs


def _endless(rng: random.Random, dialogues: Sequence[Dialogue]) -> Iterator[Dialogue]:
    while True:
        order = list(dialogues)
        rng.shuffle(order)
        yield from order


# -- the run --------------------------------------------------------------------


async def replay(
    url: str | Sequence[str] | None = None,
    *,
    users: int = 60,
    messages: int = 1000,
    conversations: int | None = None,
    groups_share: float = 0.3,
    offline_share: float = 0.25,
    retry_share: float = 0.05,
    concurrency: int = 16,
    seed: int = 1,
    languages: Sequence[str] | None = None,
    run_id: str | None = None,
    store: str = "sqlite",
    sql_url: str | None = None,
    mongo_uri: str | None = None,
    progress: bool = False,
    dialogues: Sequence[Dialogue] | None = None,
) -> ReplayReport:
    """Replays the corpus through a server and checks every user's view.

    ``url`` is the base URL of a server, or several: the processes of one
    deployment that share stores and a bus. Users are spread over them,
    each user calling and listening on one, so messages cross between
    processes. Without ``url`` it runs its own server (`fleets_mailbox.server`) on a
    temporary SQLite file (``store="memory"``: in memory), or on the SQL
    database of ``sql_url`` (kept: its tables are shared by every run),
    with content and mailboxes in a new database of ``mongo_uri`` if given.
    ``run_id`` prefixes user, group and message ids (by default nothing on
    a fresh embedded store and a random tag otherwise, so runs do not
    meet).
    ``progress`` shows a progress bar on stderr. Raises `ReplayError` when
    the run cannot go on, `CorpusError` for an unknown language.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if store not in ("sqlite", "memory"):
        raise ValueError("store must be 'sqlite' or 'memory'")
    urls = [url] if isinstance(url, str) else list(url or ())
    for one in urls:
        if not one.startswith(("http://", "https://")):
            raise ValueError(f"a server URL starts with http:// or https:// ({one!r})")
    if urls and (sql_url or mongo_uri):
        raise ValueError("the SQL and MongoDB stores are for the embedded server only")
    if sql_url and store == "memory":
        raise ValueError("a memory store and a SQL URL exclude each other")
    if dialogues is None:
        dialogues = load_dialogues(languages)
    if run_id is None:
        fresh = not url and sql_url is None
        run_id = "" if fresh else f"r{secrets.token_hex(3)}-"
    plan = build_plan(
        dialogues,
        seed=seed,
        users=users,
        messages=messages,
        conversations=conversations,
        groups_share=groups_share,
        offline_share=offline_share,
        retry_share=retry_share,
        prefix=run_id,
    )
    started = time.perf_counter()
    with _Progress(progress, plan.sends) as bar:
        async with _server(url, store, sql_url, mongo_uri) as base_urls:
            run = _Run(plan, base_urls, concurrency, bar)
            return await run.execute(started)


@contextlib.asynccontextmanager
async def _server(
    url: str | Sequence[str] | None,
    store: str,
    sql_url: str | None,
    mongo_uri: str | None,
) -> AsyncIterator[list[str]]:
    """Yields the base URLs of the servers to replay through."""
    urls = [url] if isinstance(url, str) else list(url or ())
    if urls:
        yield [u.rstrip("/") for u in urls]
        return
    try:
        from ..server import BackgroundServer, create_app, open_demo_service
    except ImportError as exc:
        raise ReplayError(
            f"the embedded server needs fleets-mailbox[server] ({exc}); or pass --url"
        ) from exc
    with tempfile.TemporaryDirectory(prefix="fleets-replay-") as tmp:
        db_path = None if store == "memory" else str(Path(tmp) / "replay.sqlite3")
        database = f"fleets_replay_{secrets.token_hex(4)}"
        service = await open_demo_service(
            db_path, sql_url=sql_url, mongo_uri=mongo_uri, mongo_database=database
        )
        try:
            app = create_app(service, secret=secrets.token_urlsafe(32))
            server = BackgroundServer(app)
            await server.start()
        except BaseException:
            await service.close()
            raise
        try:
            yield [server.url]
        finally:
            await server.stop()
            if mongo_uri is not None:
                await _drop_database(mongo_uri, database)


async def _drop_database(uri: str, database: str) -> None:
    """Drops the MongoDB database an embedded server used."""
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        await client.drop_database(database)
    finally:
        await client.close()


class _Progress:
    """A rich progress bar on stderr, or nothing."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled = enabled
        self.total = total
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description:<11}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                "starting", total=self.total, status=""
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(
        self,
        phase: str | None = None,
        done: int | None = None,
        status: str | None = None,
    ) -> None:
        if self._progress is None or self._task is None:
            return
        fields: dict[str, Any] = {}
        if status is not None:
            fields["status"] = status
        if phase is not None:
            fields["description"] = phase
        if done is not None:
            fields["completed"] = done
        self._progress.update(self._task, **fields)


class _Run:
    """One replay against the processes of one deployment."""

    def __init__(
        self, plan: Plan, base_urls: Sequence[str], concurrency: int, bar: _Progress
    ) -> None:
        self.plan = plan
        self.base_urls = list(base_urls)
        self.concurrency = concurrency
        self.bar = bar
        self.clients: dict[str, UserClient] = {}
        self.sent: list[SentMessage] = []
        self.rejected = 0
        self.refused_resends: list[Problem] = []
        self.unacknowledged = 0
        self.created_twice = 0
        self.ack_times: dict[str, float] = {}
        self.done = 0
        self.sending = True
        self.last_frame = time.monotonic()
        self._index: Counter[str] = Counter()
        self._progress_changed = asyncio.Condition()
        self._absences: list[asyncio.Task[None]] = []
        self.apis: list[Api] = []

    async def execute(self, started: float) -> ReplayReport:
        users = len(self.plan.users)
        limits = httpx.Limits(
            max_connections=self.concurrency * 3 + users + 16,
            max_keepalive_connections=self.concurrency * 3 + users + 16,
        )
        timeout = httpx.Timeout(60.0, connect=10.0, pool=None)
        async with contextlib.AsyncExitStack() as stack:
            for base_url in self.base_urls:
                http = await stack.enter_async_context(
                    httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout)
                )
                self.apis.append(Api(http))
            try:
                await self._prepare()
                refresher = asyncio.create_task(self._refresh(), name="progress")
                try:
                    await self._replay()
                    await self._finish_absences()
                    await self._settle()
                    live, conflicts = await self._live_views()
                    final = await self._final_views()
                finally:
                    refresher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await refresher
            finally:
                for task in self._absences:
                    task.cancel()
                await asyncio.gather(*self._absences, return_exceptions=True)
                await asyncio.gather(
                    *(c.close() for c in self.clients.values()),
                    return_exceptions=True,
                )
        return self._report(live, conflicts, final, time.perf_counter() - started)

    # -- setting up ---------------------------------------------------------------

    async def _prepare(self) -> None:
        self.bar.update("connecting")
        for api in self.apis:
            await api.call("GET", "/healthz", retry_for=10.0)
        self.bar.update("logging in")
        # User i calls and listens on process i mod n.
        homes = [
            (self.apis[i % len(self.apis)], self.base_urls[i % len(self.apis)])
            for i in range(len(self.plan.users))
        ]
        tokens = await _bounded(
            self.concurrency,
            (api.login(u) for u, (api, _) in zip(self.plan.users, homes, strict=True)),
        )
        for user_id, token, (api, base_url) in zip(
            self.plan.users, tokens, homes, strict=True
        ):
            ws_url = "ws" + base_url.removeprefix("http") + "/ws"
            self.clients[user_id] = UserClient(
                api, user_id, token, ws_url, on_frame=self._on_frame
            )
        self.bar.update("groups")
        groups = [c for c in self.plan.conversations if c.group_id is not None]
        await _bounded(self.concurrency, (self._create_group(g) for g in groups))
        self.bar.update("connecting")
        absent = {a.user_id for a in self.plan.absences if a.leave_at == 0}
        await _bounded(
            self.concurrency,
            (c.connect() for u, c in self.clients.items() if u not in absent),
        )

    async def _create_group(self, group: ConversationPlan) -> None:
        owner = self.clients[group.members[0]]
        _, body = await owner.api.call(
            "POST",
            "/api/groups",
            token=owner.token,
            json_body={
                "groupId": group.group_id,
                "name": f"replay {group.group_id}",
                "members": list(group.members),
            },
        )
        if body.get("conversationId") != group.conversation_id:
            raise ReplayError(f"group {group.group_id} came back as {body!r}")

    def _on_frame(self) -> None:
        self.last_frame = time.monotonic()

    # -- sending ------------------------------------------------------------------

    async def _replay(self) -> None:
        self.bar.update("replaying")
        self._absences = [
            asyncio.create_task(self._absence(a), name=f"absence-{a.user_id}")
            for a in self.plan.absences
        ]
        pending = list(self.plan.scripts)
        busy: set[str] = set()
        ready = asyncio.Condition()

        async def worker() -> None:
            while True:
                async with ready:
                    while True:
                        if not pending:
                            return
                        pick = next(
                            (
                                i
                                for i, s in enumerate(pending)
                                if s.conversation_id not in busy
                            ),
                            None,
                        )
                        if pick is not None:
                            break
                        await ready.wait()
                    script = pending.pop(pick)
                    busy.add(script.conversation_id)
                try:
                    for send in script.sends:
                        await self._send(send)
                finally:
                    async with ready:
                        busy.discard(script.conversation_id)
                        ready.notify_all()

        try:
            await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        finally:
            self.sending = False
            async with self._progress_changed:
                self._progress_changed.notify_all()

    async def _send(self, send: Send) -> None:
        self._index[send.conversation_id] += 1
        index = self._index[send.conversation_id]
        client = self.clients[send.sender_id]
        payload: dict[str, Any] = {"body": send.body, "clientMsgId": send.client_msg_id}
        if send.to is not None:
            payload["to"] = send.to
        else:
            payload["conversationId"] = send.conversation_id

        statuses: list[int] = []

        async def attempt() -> Mapping[str, Any] | ApiError | None:
            try:
                status, body = await client.api.call(
                    "POST",
                    "/api/messages",
                    token=client.token,
                    json_body=payload,
                    timed=True,
                )
            except ApiError as exc:
                return exc
            except ReplayError as exc:
                logger.warning("%s: %s", send.client_msg_id, exc)
                return None
            statuses.append(status)
            message: Mapping[str, Any] = body["message"]
            return message

        if send.copies == 1:
            answers = [await attempt()]
        elif send.concurrent:
            answers = list(
                await asyncio.gather(*(attempt() for _ in range(send.copies)))
            )
        else:
            answers = [await attempt() for _ in range(send.copies)]

        if statuses.count(201) > 1:
            # the API says 201 for a new message and 200 for a resend
            self.created_twice += 1
        messages = [a for a in answers if isinstance(a, Mapping)]
        refusals = [a for a in answers if isinstance(a, ApiError)]
        if refusals and not messages:
            self.rejected += 1
            logger.warning("%s refused: %s", send.client_msg_id, refusals[0])
            self._index[send.conversation_id] -= 1
        else:
            for refusal in refusals:
                self.refused_resends.append(
                    Problem(
                        DUPLICATED,
                        "*",
                        send.conversation_id,
                        send.client_msg_id,
                        f"a resend was refused: {refusal}",
                    )
                )
            if not messages:
                self.unacknowledged += 1
            acks = tuple((str(m["messageId"]), int(m["seq"])) for m in messages)
            if acks:
                self.ack_times.setdefault(acks[0][0], time.monotonic())
            self.sent.append(
                SentMessage(
                    send.conversation_id,
                    send.sender_id,
                    send.client_msg_id,
                    index,
                    acks,
                )
            )
            if client.online:
                # the sender's device shows its own message from the answer
                for message in messages:
                    client.take(str(message["conversationId"]), entry_of(message))
        async with self._progress_changed:
            self.done += 1
            self._progress_changed.notify_all()

    # -- going offline and back ---------------------------------------------------

    async def _reached(self, count: int) -> None:
        async with self._progress_changed:
            await self._progress_changed.wait_for(
                lambda: self.done >= count or not self.sending
            )

    async def _absence(self, absence: Absence) -> None:
        client = self.clients[absence.user_id]
        if absence.leave_at > 0:
            await self._reached(absence.leave_at)
            await client.disconnect()
        await self._reached(absence.back_at)
        await client.connect()

    async def _finish_absences(self) -> None:
        self.bar.update("reconnecting")
        await asyncio.gather(*self._absences)

    # -- the end ------------------------------------------------------------------

    async def _settle(self) -> None:
        """Waits until no frame came for a while, then lets every device catch up."""
        self.bar.update("settling")
        deadline = time.monotonic() + SETTLE_MAX_S
        while time.monotonic() < deadline:
            if time.monotonic() - self.last_frame >= QUIET_S:
                break
            await asyncio.sleep(0.05)
        for client in self.clients.values():
            await client.settle()
        self.bar.update("catching up")
        await _bounded(self.concurrency, (c.connect() for c in self.clients.values()))
        await _bounded(
            self.concurrency, (self._final_catch_up(c) for c in self.clients.values())
        )

    @staticmethod
    async def _final_catch_up(client: UserClient) -> None:
        await client.settle()
        await client.catch_up()
        await client.settle()

    async def _live_views(
        self,
    ) -> tuple[dict[tuple[str, str], list[ViewEntry]], list[Problem]]:
        views: dict[tuple[str, str], list[ViewEntry]] = {}
        conflicts: list[Problem] = []
        for client in self.clients.values():
            for conversation_id, state in client.states.items():
                views[(client.user_id, conversation_id)] = list(state.timeline)
                for entry, reason in state.conflicts:
                    conflicts.append(
                        Problem(
                            DUPLICATED,
                            client.user_id,
                            conversation_id,
                            entry.client_msg_id,
                            f"device was given {entry.message_id}, but {reason}",
                        )
                    )
        return views, conflicts

    async def _final_views(self) -> dict[tuple[str, str], list[ViewEntry]]:
        self.bar.update("final sync")
        keys = [
            (user_id, c.conversation_id)
            for c in self.plan.conversations
            for user_id in c.members
        ]
        views = await _bounded(
            self.concurrency * 2, (self._full_view(u, c) for u, c in keys)
        )
        return {k: v for k, v in zip(keys, views, strict=True) if v is not None}

    async def _full_view(
        self, user_id: str, conversation_id: str
    ) -> list[ViewEntry] | None:
        client = self.clients[user_id]
        try:
            return await client.full_view(conversation_id, FINAL_PAGE)
        except ReplayError as exc:
            # no view: the checker counts everything sent there as lost
            client.failed(f"final sync of {conversation_id}: {exc}")
            return None

    async def _refresh(self) -> None:
        while True:
            clients = self.clients.values()
            online = sum(c.online for c in clients)
            pushed = sum(len(c.pushed) for c in clients)
            synced = sum(len(c.synced) for c in clients)
            self.bar.update(
                done=self.done,
                status=f"online {online}/{len(clients)} pushed {pushed} "
                f"synced {synced}",
            )
            await asyncio.sleep(0.1)

    def _report(
        self,
        live: Mapping[tuple[str, str], Sequence[ViewEntry]],
        conflicts: Iterable[Problem],
        final: Mapping[tuple[str, str], Sequence[ViewEntry]],
        elapsed: float,
    ) -> ReplayReport:
        members = {c.conversation_id: c.members for c in self.plan.conversations}
        result = (
            check_views(self.sent, members, final)
            .merge(check_views(self.sent, members, live))
            .merge(conflicts)
        )
        refused = CheckResult(frozenset(self.refused_resends))
        stored = {m for s in self.sent for m, _ in s.acks}
        latencies = sorted(t for api in self.apis for t in api.send_latencies_ms)
        clients = list(self.clients.values())
        push_lags = sorted(
            (at - self.ack_times[m]) * 1000
            for c in clients
            for m, at in c.push_times.items()
            if m in self.ack_times
        )
        return ReplayReport(
            sent=len(self.sent),
            stored=len(stored),
            pushed=sum(len(c.pushed) for c in clients),
            synced=sum(len(c.synced) for c in clients),
            lost=result.lost,
            duplicated=result.duplicated,
            misordered=result.misordered,
            p50_ms=_percentile(latencies, 0.50),
            p99_ms=_percentile(latencies, 0.99),
            push_p50_ms=_percentile(push_lags, 0.50),
            push_p99_ms=_percentile(push_lags, 0.99),
            unexpected=result.unexpected,
            rejected=self.rejected,
            refused_resends=len(refused.problems),
            unacknowledged=self.unacknowledged,
            created_twice=self.created_twice,
            call_errors=sum(len(c.errors) for c in clients),
            resent=sum(1 for s in self.plan.scripts for x in s.sends if x.copies > 1),
            users=len(clients),
            conversations=len(self.plan.conversations),
            groups=sum(1 for c in self.plan.conversations if c.group_id),
            offline_users=len(self.plan.absences),
            reconnects=sum(c.connects for c in clients) - len(clients),
            drops=sum(c.drops for c in clients),
            gap_syncs=sum(c.gap_syncs for c in clients),
            skipped_seqs=sum(
                len(s.skipped) for c in clients for s in c.states.values()
            ),
            elapsed_s=elapsed,
            problems=tuple(refused.samples() + result.samples()),
        )


def _percentile(ordered: Sequence[float], q: float) -> float:
    """Returns the nearest-rank percentile of sorted values (0 when empty)."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


async def _bounded(limit: int, jobs: Iterable[Any]) -> list[Any]:
    """Awaits the coroutines ``jobs``, at most ``limit`` at a time, in order."""
    gate = asyncio.Semaphore(limit)

    async def one(job: Any) -> Any:
        async with gate:
            return await job

    return list(await asyncio.gather(*(one(j) for j in jobs)))
