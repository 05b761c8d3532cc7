"""The API's job-status cache: finished jobs kept, unfinished ones briefly, one read at a time."""

from __future__ import annotations

import asyncio
import time

from service.context import StatusCache


def test_unfinished_documents_expire_and_finished_ones_stay():
    cache = StatusCache(fresh_s=0.05)
    cache.put("a", b"running", final=False)
    cache.put("b", b"succeeded", final=True)
    assert cache.get("a") == (b"running", False)
    time.sleep(0.06)
    assert cache.get("a") is None
    assert cache.get("b") == (b"succeeded", True)
    cache.forget("b")
    assert cache.get("b") is None


def test_capacity_evicts_the_least_recently_stored():
    cache = StatusCache(capacity=2)
    for name in "abc":
        cache.put(name, name.encode(), final=True)
    assert cache.get("a") is None and cache.get("c") == (b"c", True)


def test_concurrent_readers_of_one_job_share_one_read():
    cache = StatusCache()
    reads = []

    async def read() -> str:
        reads.append(1)
        await asyncio.sleep(0.05)
        return "document"

    async def many() -> list[str]:
        return await asyncio.gather(*(cache.read_once("job", read) for _ in range(50)))

    assert asyncio.run(many()) == ["document"] * 50
    assert len(reads) == 1
    asyncio.run(many())
    assert len(reads) == 2  # a later burst reads again
