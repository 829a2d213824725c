"""The checker: every user's view of every conversation against what was sent.

It is pure (no I/O) so that its verdicts can be unit-tested on hand-made
views. A finding is a `Problem`; the counts are numbers of distinct problems,
so one fault seen twice (say in the live view and in the final full sync)
counts once:

* **lost**: a sent message (matched by its sender and client message id) is
  missing from the view of a member of its conversation; one per (member,
  message).
* **duplicated**: a view holds a message twice, or another message than the
  one the server acknowledged for a send, or two messages under one seq; or
  the attempts of one retried send were answered with different messages.
* **misordered**: a view is not in strictly ascending seq; a message shows
  before one that was sent earlier into its conversation (sends into one
  conversation are sequential, so send order is the only right order); or
  two views, or a view and the acknowledgement, disagree on a message's seq.
* **unexpected**: a view holds a message that nobody sent into that
  conversation, or a user who is not a member sees the conversation.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence

from attrs import field, frozen

__all__ = [
    "DUPLICATED",
    "LOST",
    "MISORDERED",
    "UNEXPECTED",
    "CheckResult",
    "Problem",
    "SentMessage",
    "ViewEntry",
    "check_views",
]

LOST = "lost"
DUPLICATED = "duplicated"
MISORDERED = "misordered"
UNEXPECTED = "unexpected"

#: The user of a problem that is the server's, not one member's view.
SERVER = "*"


@frozen
class SentMessage:
    """One logical send and the server's answers to its attempts.

    ``index`` is the send's position among the sends into its conversation
    (1, 2, ...); ``acks`` holds ``(message_id, seq)`` of every attempt that
    was answered, empty when none was.
    """

    conversation_id: str
    sender_id: str
    client_msg_id: str
    index: int
    acks: tuple[tuple[str, int], ...] = ()

    @property
    def message_id(self) -> str | None:
        """The message id of the first answer, if any."""
        return self.acks[0][0] if self.acks else None

    @property
    def seq(self) -> int | None:
        """The seq of the first answer, if any."""
        return self.acks[0][1] if self.acks else None


@frozen
class ViewEntry:
    """One message as a user's client shows it."""

    seq: int
    message_id: str
    sender_id: str
    client_msg_id: str


@frozen
class Problem:
    """One finding; ``detail`` explains it and takes no part in equality."""

    kind: str
    user_id: str
    conversation_id: str
    subject: str
    detail: str = field(default="", eq=False)

    def __str__(self) -> str:
        who = "server" if self.user_id == SERVER else self.user_id
        text = f"{self.kind}: {who} in {self.conversation_id}: {self.subject}"
        return f"{text} ({self.detail})" if self.detail else text


@frozen
class CheckResult:
    """The distinct problems found."""

    problems: frozenset[Problem] = frozenset()

    def count(self, kind: str) -> int:
        """Returns the number of problems of one kind."""
        return sum(1 for p in self.problems if p.kind == kind)

    @property
    def lost(self) -> int:
        return self.count(LOST)

    @property
    def duplicated(self) -> int:
        return self.count(DUPLICATED)

    @property
    def misordered(self) -> int:
        return self.count(MISORDERED)

    @property
    def unexpected(self) -> int:
        return self.count(UNEXPECTED)

    def merge(self, other: CheckResult | Iterable[Problem]) -> CheckResult:
        """Returns the union of two results."""
        more = other.problems if isinstance(other, CheckResult) else other
        return CheckResult(self.problems | frozenset(more))

    def samples(self, limit: int = 20) -> list[str]:
        """Returns up to ``limit`` problems as text, in a stable order."""
        ordered = sorted(
            self.problems,
            key=lambda p: (p.kind, p.conversation_id, p.user_id, p.subject),
        )
        return [str(p) for p in ordered[:limit]]


def check_views(
    sent: Iterable[SentMessage],
    members: Mapping[str, Collection[str]],
    views: Mapping[tuple[str, str], Sequence[ViewEntry]],
) -> CheckResult:
    """Checks ``views`` (keyed by ``(user_id, conversation_id)``) against ``sent``.

    ``members`` maps each conversation to the users who must see its
    messages; a member without a view has lost everything sent there.
    """
    problems: set[Problem] = set()
    by_conversation: dict[str, dict[str, SentMessage]] = defaultdict(dict)
    for message in sent:
        by_conversation[message.conversation_id][message.client_msg_id] = message
        if len(set(message.acks)) > 1:
            answers = ", ".join(f"{m}@{s}" for m, s in dict.fromkeys(message.acks))
            problems.add(
                Problem(
                    DUPLICATED,
                    SERVER,
                    message.conversation_id,
                    message.client_msg_id,
                    f"retries were answered with different messages: {answers}",
                )
            )
    for conversation_id, messages in by_conversation.items():
        problems.update(_check_acks(conversation_id, messages.values()))

    # every seq a message was given, by the sender's answer and by each view
    seqs: dict[tuple[str, str], dict[int, str]] = defaultdict(dict)
    for message in (m for ms in by_conversation.values() for m in ms.values()):
        if message.seq is not None:
            key = (message.conversation_id, message.client_msg_id)
            seqs[key][message.seq] = "the acknowledgement"
    for (user_id, conversation_id), entries in views.items():
        expected = by_conversation.get(conversation_id, {})
        problems.update(_check_view(user_id, conversation_id, entries, expected))
        for entry in entries:
            if entry.client_msg_id in expected:
                key = (conversation_id, entry.client_msg_id)
                seqs[key].setdefault(entry.seq, user_id)
        must_see = user_id in members.get(conversation_id, ())
        if not must_see:
            for entry in entries:
                problems.add(
                    Problem(
                        UNEXPECTED,
                        user_id,
                        conversation_id,
                        f"{entry.sender_id}/{entry.client_msg_id}",
                        "shown to a user who is not a member",
                    )
                )
        else:
            shown = {e.client_msg_id for e in entries}
            for client_msg_id in expected.keys() - shown:
                problems.add(
                    Problem(LOST, user_id, conversation_id, client_msg_id, "not shown")
                )
    for conversation_id, users in members.items():
        for user_id in users:
            if (user_id, conversation_id) in views:
                continue
            for client_msg_id in by_conversation.get(conversation_id, {}):
                problems.add(
                    Problem(LOST, user_id, conversation_id, client_msg_id, "no view")
                )
    for (conversation_id, client_msg_id), seen in seqs.items():
        if len(seen) > 1:
            detail = ", ".join(f"seq {s} by {who}" for s, who in sorted(seen.items()))
            problems.add(
                Problem(MISORDERED, SERVER, conversation_id, client_msg_id, detail)
            )
    return CheckResult(frozenset(problems))


def _check_acks(
    conversation_id: str, messages: Iterable[SentMessage]
) -> Iterator[Problem]:
    """Acknowledged seqs must rise with send order and never repeat."""
    previous: SentMessage | None = None
    for message in sorted(messages, key=lambda m: m.index):
        if message.seq is None:
            continue
        if previous is not None and previous.seq is not None:
            if message.seq == previous.seq:
                yield Problem(
                    DUPLICATED,
                    SERVER,
                    conversation_id,
                    message.client_msg_id,
                    f"acknowledged with seq {message.seq}, "
                    f"like {previous.client_msg_id}",
                )
            elif message.seq < previous.seq:
                yield Problem(
                    MISORDERED,
                    SERVER,
                    conversation_id,
                    message.client_msg_id,
                    f"acknowledged with seq {message.seq} after "
                    f"{previous.client_msg_id} got {previous.seq}",
                )
        previous = message


def _check_view(
    user_id: str,
    conversation_id: str,
    entries: Sequence[ViewEntry],
    expected: Mapping[str, SentMessage],
) -> Iterator[Problem]:
    seen_keys: set[str] = set()
    previous: ViewEntry | None = None
    latest: SentMessage | None = None
    for entry in entries:
        subject = entry.client_msg_id
        if previous is not None and entry.seq == previous.seq:
            yield Problem(
                DUPLICATED,
                user_id,
                conversation_id,
                subject,
                f"seq {entry.seq} shown twice",
            )
        elif previous is not None and entry.seq < previous.seq:
            yield Problem(
                MISORDERED,
                user_id,
                conversation_id,
                subject,
                f"seq {entry.seq} shown after seq {previous.seq}",
            )
        previous = entry
        sent = expected.get(entry.client_msg_id)
        if sent is None or sent.sender_id != entry.sender_id:
            yield Problem(
                UNEXPECTED,
                user_id,
                conversation_id,
                f"{entry.sender_id}/{entry.client_msg_id}",
                f"message {entry.message_id} at seq {entry.seq} was never sent here",
            )
            continue
        if subject in seen_keys:
            yield Problem(DUPLICATED, user_id, conversation_id, subject, "shown twice")
        elif sent.message_id is not None and entry.message_id != sent.message_id:
            yield Problem(
                DUPLICATED,
                user_id,
                conversation_id,
                subject,
                f"shown as {entry.message_id}, acknowledged as {sent.message_id}",
            )
        seen_keys.add(subject)
        if latest is not None and sent.index < latest.index:
            yield Problem(
                MISORDERED,
                user_id,
                conversation_id,
                subject,
                f"sent before {latest.client_msg_id} but shown after it",
            )
        if latest is None or sent.index > latest.index:
            latest = sent
