"""Tests of ``fleets-mailbox replay``: corpus, plan, client state, checker, runs."""

from __future__ import annotations

import argparse
import itertools
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fleets_mailbox.replay import (
    ConversationState,
    CorpusError,
    Offer,
    SentMessage,
    ViewEntry,
    add_arguments,
    available_languages,
    build_plan,
    check_views,
    load_dialogues,
    replay,
    run,
)

LINE = re.compile(
    r"sent=\d+ stored=\d+ pushed=\d+ synced=\d+ lost=\d+ duplicated=\d+ "
    r"misordered=\d+ p50_ms=\d+\.\d p99_ms=\d+\.\d"
)


# -- the corpus -------------------------------------------------------------------


def test_corpus_loads_every_language() -> None:
    dialogues = load_dialogues()
    languages = available_languages()
    assert len(languages) > 20
    assert {d.language for d in dialogues} == set(languages)
    assert len(dialogues) > 7000
    assert all(d.utterances for d in dialogues)
    assert all(u.strip() for d in dialogues for u in d.utterances)
    # a dialogue written as a bare string is kept as one utterance
    ukrainian = [d for d in dialogues if d.source == "ukrainian/ai.yml"]
    assert any(len(d.utterances) == 1 for d in ukrainian)


def test_corpus_languages_filter_and_refuse_unknown() -> None:
    dialogues = load_dialogues(["japanese", "yoruba"])
    assert {d.language for d in dialogues} == {"japanese", "yoruba"}
    with pytest.raises(CorpusError, match="klingon"):
        load_dialogues(["klingon"])


# -- the plan ---------------------------------------------------------------------


def test_plan_is_deterministic_and_well_formed() -> None:
    dialogues = load_dialogues(["thai"])  # 6 short dialogues: they must loop
    options: dict[str, Any] = {
        "users": 10,
        "messages": 300,
        "groups_share": 0.5,
        "offline_share": 0.3,
    }
    plan = build_plan(dialogues, seed=5, **options)
    assert plan == build_plan(dialogues, seed=5, **options)
    assert plan != build_plan(dialogues, seed=6, **options)
    assert plan.sends == 300
    sends = [s for script in plan.scripts for s in script.sends]
    assert len({s.client_msg_id for s in sends}) == 300
    members = {c.conversation_id: c.members for c in plan.conversations}
    groups = [c for c in plan.conversations if c.group_id]
    assert len(groups) == 5
    assert all(3 <= len(g.members) <= 8 for g in groups)
    assert all(s.sender_id in members[s.conversation_id] for s in sends)
    for script in plan.scripts:
        senders = [s.sender_id for s in script.sends]
        assert all(a != b for a, b in itertools.pairwise(senders))
    assert len(plan.absences) == 3
    assert any(a.leave_at == 0 for a in plan.absences)
    assert all(a.back_at > a.leave_at for a in plan.absences)


# -- the client's per-conversation state --------------------------------------------


def entry(seq: int, message_id: str | None = None) -> ViewEntry:
    return ViewEntry(seq, message_id or f"m{seq}", "alice", f"c{seq}")


def test_state_dedupes_orders_and_reports_gaps() -> None:
    state = ConversationState("d:alice:bob")
    assert state.offer(entry(1)) is Offer.APPLIED
    assert state.offer(entry(1)) is Offer.DUPLICATE
    assert state.offer(entry(3)) is Offer.BUFFERED
    assert state.has_gap and state.cursor == 1
    assert state.offer(entry(2)) is Offer.APPLIED
    assert not state.has_gap and state.cursor == 3
    assert state.offer(entry(5)) is Offer.BUFFERED
    state.add_holes([4])  # a burned seq: the cursor moves over it
    assert state.cursor == 5
    assert [e.seq for e in state.timeline] == [1, 2, 3, 5]
    assert state.offer(entry(5, "other")) is Offer.CONFLICT
    assert state.offer(entry(4)) is Offer.CONFLICT  # a message for a hole
    assert len(state.conflicts) == 2
    assert state.offer(entry(8)) is Offer.BUFFERED
    assert state.skip_gap() == [6, 7]
    assert state.cursor == 8 and not state.has_gap


# -- the checker ----------------------------------------------------------------------


def sent(n: int, conversation: str = "g:team") -> list[SentMessage]:
    return [
        SentMessage(conversation, "alice", f"c{i}", i, ((f"m{i}", i),))
        for i in range(1, n + 1)
    ]


def test_checker_counts_a_lost_a_duplicated_and_a_misordered_message() -> None:
    messages = sent(5)
    members = {"g:team": ("alice", "bob")}
    good = [entry(i) for i in range(1, 6)]
    # bob: seq 2 after seq 3, seq 4 twice, seq 5 missing
    bad = [entry(1), entry(3), entry(2), entry(4), entry(4)]
    result = check_views(
        messages, members, {("alice", "g:team"): good, ("bob", "g:team"): bad}
    )
    assert (result.lost, result.duplicated, result.misordered) == (1, 1, 1)
    assert result.unexpected == 0
    clean = check_views(
        messages, members, {("alice", "g:team"): good, ("bob", "g:team"): good}
    )
    assert not clean.problems


def test_checker_finds_what_the_server_got_wrong() -> None:
    members = {"g:team": ("alice", "bob", "carol")}
    messages = sent(3)
    # a retry answered with another message, and two sends given one seq
    messages[1] = SentMessage("g:team", "alice", "c2", 2, (("m2", 2), ("mX", 4)))
    messages[2] = SentMessage("g:team", "alice", "c3", 3, (("m3", 2),))
    views = {
        ("alice", "g:team"): [entry(1), entry(2)],
        # bob sees c3 under seq 3, which nobody was told
        ("bob", "g:team"): [entry(1), entry(2), ViewEntry(3, "m3", "alice", "c3")],
        # a phantom message nobody sent
        ("carol", "g:team"): [
            entry(1),
            entry(2),
            ViewEntry(3, "m9", "mallory", "c9"),
        ],
    }
    result = check_views(messages, members, views)
    assert result.duplicated >= 2
    assert result.misordered >= 1  # members (and the answer) disagree on c3's seq
    assert result.unexpected == 1
    assert result.lost == 2  # alice and carol miss c3
    # a member with no view at all lost everything
    missing = check_views(sent(2), members, {("alice", "g:team"): [entry(1), entry(2)]})
    assert missing.lost == 4


def test_checker_flags_a_message_shown_to_a_non_member() -> None:
    members = {"d:alice:bob": ("alice", "bob")}
    messages = sent(1, "d:alice:bob")
    views = {
        ("alice", "d:alice:bob"): [entry(1)],
        ("bob", "d:alice:bob"): [entry(1)],
        ("eve", "d:alice:bob"): [entry(1)],
    }
    assert check_views(messages, members, views).unexpected == 1


# -- runs against a real server -------------------------------------------------------


async def test_small_replay_through_the_embedded_server() -> None:
    report = await replay(None, messages=200, users=12, seed=7)
    assert report.sent == 200
    assert report.stored == report.sent
    assert (report.lost, report.duplicated, report.misordered) == (0, 0, 0)
    assert report.unexpected == 0 and report.ok
    assert report.pushed > 0
    assert report.synced > 0
    assert report.resent > 0
    assert report.p99_ms >= report.p50_ms > 0
    assert LINE.fullmatch(report.line())


@pytest.fixture
async def leaky_server() -> AsyncIterator[str]:
    """A server whose sync never returns seq 3 of any conversation to ``u001``."""
    from fleets_mailbox.server import BackgroundServer, create_app, open_demo_service

    service = await open_demo_service(None)
    real_sync = service.sync.sync

    async def leaky_sync(user_id: str, conversation_id: str, *args: int) -> Any:
        page = await real_sync(user_id, conversation_id, *args)
        if user_id == "t-u001":
            kept = tuple(m for m in page.messages if m.seq != 3)
            page = type(page)(
                page.conversation_id,
                page.from_seq,
                kept,
                page.holes,
                page.next_from_seq,
                page.has_more,
                page.last_seq,
            )
        return page

    service.sync.sync = leaky_sync  # type: ignore[method-assign,assignment]
    async with BackgroundServer(create_app(service, secret="test")) as server:
        yield server.url


async def test_replay_reports_what_a_faulty_server_loses(leaky_server: str) -> None:
    report = await replay(
        leaky_server, messages=120, users=4, seed=3, run_id="t-", offline_share=0.5
    )
    assert report.lost > 0
    assert not report.ok
    assert any("t-u001" in p for p in report.problems)


@pytest.fixture
async def dropping_server() -> AsyncIterator[str]:
    """A server that closes ``t-u000``'s WebSocket now and then, as on a timeout."""
    from fleets_mailbox.server import BackgroundServer, create_app, open_demo_service

    service = await open_demo_service(None)
    real_connections = service.presence.connections
    looked_up = 0

    async def connections(user_id: str) -> Any:
        nonlocal looked_up
        found = await real_connections(user_id)
        if user_id == "t-u000" and found:
            looked_up += 1
            if looked_up % 5 == 0:
                for connection in found:
                    await connection.close(1011, "test drop")  # type: ignore[attr-defined]
        return found

    service.presence.connections = connections  # type: ignore[method-assign]
    async with BackgroundServer(create_app(service, secret="test")) as server:
        yield server.url


async def test_replay_survives_dropped_sockets(dropping_server: str) -> None:
    report = await replay(
        dropping_server, messages=150, users=4, seed=3, run_id="t-", offline_share=0
    )
    assert report.drops > 0
    assert report.ok, report.problems
    assert report.stored == report.sent == 150


async def test_command_prints_exactly_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            *("--messages", "40", "--users", "5", "--store", "memory", "--quiet"),
            *("--languages", "english,chinese", "--seed", "2"),
        ]
    )
    assert await run(args) == 0
    out, _ = capsys.readouterr()
    assert LINE.fullmatch(out.removesuffix("\n"))
    assert out.count("\n") == 1
    assert "sent=40 stored=40" in out


async def test_command_refuses_an_unknown_language(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert await run(parser.parse_args(["--languages", "klingon", "--quiet"])) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "klingon" in err


@pytest.mark.slow
async def test_default_replay() -> None:
    report = await replay(None)
    assert report.sent >= 1000
    assert report.stored == report.sent
    assert (report.lost, report.duplicated, report.misordered) == (0, 0, 0)
    assert report.ok
    assert report.pushed > 0 and report.synced > 0


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"url": "localhost:8000"}, "starts with http"),
        ({"url": "http://127.0.0.1:1", "sql_url": "sqlite+aiosqlite:///x"}, "embedded"),
        ({"store": "memory", "sql_url": "sqlite+aiosqlite:///x"}, "exclude"),
    ],
)
async def test_conflicting_or_malformed_options_are_refused(
    options: dict[str, Any], said: str
) -> None:
    with pytest.raises(ValueError, match=said):
        await replay(**options)
