"""Child process: increments one shared counter COUNT times through transactional().

Usage: python increment_worker.py STORAGE_URL COUNT
"""

from __future__ import annotations

import asyncio
import sys

from kelpie.storage import Transaction, open_database, transactional


async def increment_many(url: str, count: int) -> None:
    db = await open_database(url)

    async def increment(tr: Transaction) -> None:
        current = int(await tr.get(b"counter") or b"0")
        tr.set(b"counter", b"%d" % (current + 1))

    try:
        # Four concurrent incrementers per process: conflicts inside and across processes.
        async with asyncio.TaskGroup() as group:
            for share in range(4):
                portion = count // 4 + (1 if share < count % 4 else 0)
                group.create_task(run_increments(db, increment, portion))
    finally:
        await db.close()


async def run_increments(db, increment, portion: int) -> None:  # type: ignore[no-untyped-def]
    for _ in range(portion):
        await transactional(db, increment, attempts_limit=1000)


if __name__ == "__main__":
    asyncio.run(increment_many(sys.argv[1], int(sys.argv[2])))
