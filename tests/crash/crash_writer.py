"""Child process for the crash tests: commits numbered writes forever, acknowledging each on stdout.

Usage: python crash_writer.py STORAGE_URL WRITERS

Writer ``w`` commits item ``n`` as three keys in one transaction (the item, its twin, and the
writer's ``last`` marker), continuing after whatever the store already holds, and prints
``ack w n`` only once the commit has returned. The parent kills this process with SIGKILL.
"""

from __future__ import annotations

import asyncio
import sys

from kelpie.storage import Transaction, open_database, transactional

FILLER = b"x" * 2000


def item_key(writer: int, number: int) -> bytes:
    return b"crash/%02d/item/%08d" % (writer, number)


def twin_key(writer: int, number: int) -> bytes:
    return b"crash/%02d/twin/%08d" % (writer, number)


def last_key(writer: int) -> bytes:
    return b"crash/%02d/last" % writer


async def write_forever(url: str, writers: int) -> None:
    db = await open_database(url)

    async def writer_loop(writer: int) -> None:
        async def last(tr: Transaction) -> int:
            value = await tr.get(last_key(writer))
            return -1 if value is None else int(value)

        number = await transactional(db, last) + 1
        while True:

            async def commit_one(tr: Transaction, number: int = number) -> None:
                payload = b"%d:" % number + FILLER
                tr.set(item_key(writer, number), payload)
                tr.set(twin_key(writer, number), payload)
                tr.set(last_key(writer), b"%d" % number)

            await transactional(db, commit_one)
            sys.stdout.write(f"ack {writer} {number}\n")
            sys.stdout.flush()
            number += 1

    async with asyncio.TaskGroup() as group:
        for writer in range(writers):
            group.create_task(writer_loop(writer))


if __name__ == "__main__":
    asyncio.run(write_forever(sys.argv[1], int(sys.argv[2])))
