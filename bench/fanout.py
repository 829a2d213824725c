"""Fan-out of one group message on MongoDB: pipeline vs raw driver vs naive.

``python -m bench fanout [--sizes 10,100,1000,5000] [--repeat 5]`` against the
server of ``FLEETS_TEST_MONGO_URI``. For each group size it prints::

    members=1000 pipeline_ms=.. raw_ms=.. naive_ms=.. ratio_raw=.. speedup_naive=..

* pipeline: `SendPipeline.send` of one message (content and mailboxes in
  MongoDB; conversation summaries in memory, so only the MongoDB side is
  measured);
* raw: the same writes issued by hand with pymongo into the same
  collections (so the same indexes): the message document, the seq
  increment and one ``insert_many`` of the entries;
* naive: the message, the seq increment, then one ``insert_one`` per member,
  as a literal loop would do.

Pipeline and raw figures are medians of ``--repeat`` sends, taken in turns;
naive is one send. All in one run on one server, in a database that is
dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from pymongo import ReturnDocument

from fleets_mailbox.adapters.memory import MemoryConversationStore, MemoryDirectory
from fleets_mailbox.adapters.mongo import open_mongo_stores
from fleets_mailbox.model import group_conversation, new_message_id, now_ms
from fleets_mailbox.pipeline import SendPipeline


async def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench fanout")
    parser.add_argument("--sizes", default="10,100,1000,5000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--naive-limit", type=int, default=5000)
    args = parser.parse_args(argv)
    uri = os.environ.get("FLEETS_TEST_MONGO_URI")
    if not uri:
        print("set FLEETS_TEST_MONGO_URI (scripts/services.sh up mongo prints it)")
        return 2

    database = f"fleets_bench_{uuid.uuid4().hex[:8]}"
    messages, mailboxes, client = await open_mongo_stores(uri, database)
    db = client[database]
    directory = MemoryDirectory()
    pipeline = SendPipeline(
        messages=messages,
        mailboxes=mailboxes,
        conversations=MemoryConversationStore(),
        directory=directory,
    )
    try:
        for size in [int(s) for s in args.sizes.split(",")]:
            members = [f"user{i:05d}" for i in range(size)]
            await directory.create_group(f"bench{size}", members[0], "bench", members)
            case = _Case(pipeline, db, members, group_conversation(f"bench{size}"))
            await case.pipeline_send()  # warm the group's log and the caches
            # Interleaved, so that a collection growing during the run slows
            # both alike.
            pipeline_times, raw_times = [], []
            for _ in range(args.repeat):
                pipeline_times.append(await _time_ms(case.pipeline_send))
                raw_times.append(await _time_ms(case.raw_send))
            pipeline_ms = statistics.median(pipeline_times)
            raw_ms = statistics.median(raw_times)
            naive_ms = float("nan")
            if size <= args.naive_limit:
                naive_ms = await _time_ms(case.naive_send)
            print(
                f"members={size} pipeline_ms={pipeline_ms:.1f} raw_ms={raw_ms:.1f} "
                f"naive_ms={naive_ms:.1f} ratio_raw={pipeline_ms / raw_ms:.2f} "
                f"speedup_naive={naive_ms / pipeline_ms:.1f}",
                flush=True,
            )
    finally:
        await client.drop_database(database)
        await client.close()
    return 0


class _Case:
    """One group size: the three ways of delivering one message to it."""

    def __init__(
        self, pipeline: SendPipeline, db: Any, members: list[str], conversation: str
    ) -> None:
        self.pipeline = pipeline
        self.db = db
        self.members = members
        self.conversation = conversation

    async def pipeline_send(self) -> None:
        await self.pipeline.send(
            self.members[0], self.conversation, "hello", uuid.uuid4().hex
        )

    async def raw_send(self) -> None:
        entries = await self._message_and_entries()
        await self.db["fleets_mailbox"].insert_many(entries, ordered=False)

    async def naive_send(self) -> None:
        for entry in await self._message_and_entries():
            await self.db["fleets_mailbox"].insert_one(entry)

    async def _message_and_entries(self) -> list[dict[str, Any]]:
        seq_doc = await self.db["raw_seq"].find_one_and_update(
            {"_id": f"raw/{self.conversation}"},
            {"$inc": {"last_seq": 1}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        message_id = new_message_id()
        await self.db["raw_messages"].insert_one(
            {"_id": message_id, "conversation_id": self.conversation, "body": "hello"}
        )
        return [
            {
                "user_id": user,
                "conversation_id": f"raw/{self.conversation}",
                "seq": seq_doc["last_seq"],
                "message_id": message_id,
                "sender_id": self.members[0],
                "created_at": now_ms(),
            }
            for user in self.members
        ]


async def _time_ms(call: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter()
    await call()
    return (time.perf_counter() - start) * 1000
