"""MicroBatcher: concurrent submits become one call; per-item errors stay per item; groups apart."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from hllm_creator.serving.batching import MicroBatcher


def test_concurrent_requests_share_one_call():
    calls: list[list] = []

    def fn(items):
        calls.append(list(items))
        time.sleep(0.05)
        return [x * 2 for x in items]

    b = MicroBatcher(fn, max_batch=64, max_wait_s=0.02, name="t-share")

    async def main():
        return await asyncio.gather(*(b.submit([i, i + 100]) for i in range(10)))

    res = asyncio.run(main())
    assert res == [[2 * i, 2 * (i + 100)] for i in range(10)]
    assert len(calls) < 10 and max(len(c) for c in calls) > 2  # combined, not one call per request
    assert sorted(x for c in calls for x in c) == sorted([i for i in range(10)] + [i + 100 for i in range(10)])


def test_max_batch_and_serial_model_calls():
    active, peak, sizes = [0], [0], []
    lock = threading.Lock()

    def fn(items):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        sizes.append(len(items))
        time.sleep(0.01)
        with lock:
            active[0] -= 1
        return items

    b = MicroBatcher(fn, max_batch=4, max_wait_s=0.01, name="t-max")

    async def main():
        return await asyncio.gather(*(b.submit([i]) for i in range(20)))

    assert asyncio.run(main()) == [[i] for i in range(20)]
    assert max(sizes) <= 4 and peak[0] == 1


def test_item_errors_and_groups():
    seen: list[list] = []

    def fn(items):
        seen.append(items)
        return [ValueError(f"bad {x}") if x < 0 else x for x in items]

    b = MicroBatcher(fn, max_batch=16, max_wait_s=0.02, name="t-err", group_key=lambda x: x % 2 == 0)

    async def main():
        ok = asyncio.gather(b.submit([2]), b.submit([3]), b.submit([4]))
        bad = b.submit([-1])
        r = await ok
        with pytest.raises(ValueError, match="bad -1"):
            await bad
        return r

    assert asyncio.run(main()) == [[2], [3], [4]]
    for call in seen:  # every call holds one group only
        assert len({x % 2 == 0 for x in call}) == 1
