"""Dynamic batching: concurrent requests collected for a short window into one batch call.

The first request that arrives opens a window of ``window_ms``; everything queued before the window
closes (up to ``max_batch_size``) goes into ONE call of ``run_batch(items) -> results``, which runs in
a dedicated single-thread executor so the event loop keeps answering (health checks, other requests)
and batches never overlap. Requests that arrive while a batch runs wait in the queue and form the next
batch. Pure asyncio; knows nothing about models.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """More requests are waiting than ``max_queue``: the caller should answer 429."""


class DynamicBatcher:
    def __init__(self, run_batch: Callable[[list[Any]], Sequence[Any]], *, max_batch_size: int = 8,
                 window_ms: float = 20.0, max_queue: int = 256, name: str = "batcher"):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if window_ms < 0:
            raise ValueError(f"window_ms must be >= 0, got {window_ms}")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.window_s = window_ms / 1000.0
        self.max_queue = max_queue
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._queue: asyncio.Queue | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: asyncio.Task | None = None
        self.batch_sizes: list[int] = []  # observed batch sizes (for stats and tests)

    def _ensure_started(self) -> asyncio.Queue:
        loop = asyncio.get_running_loop()
        if self._queue is None or self._loop is not loop or self._worker is None or self._worker.done():
            if self._loop is not loop:
                self._queue = asyncio.Queue()
            self._loop = loop
            self._worker = loop.create_task(self._run(), name="dynamic-batcher")
        return self._queue

    @property
    def pending(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    async def submit(self, item: Any) -> Any:
        """Queue one item and wait for its result (exceptions of the batch call are re-raised)."""
        queue = self._ensure_started()
        if queue.qsize() >= self.max_queue:
            raise QueueFull(f"{queue.qsize()} requests are already waiting (limit {self.max_queue})")
        fut = asyncio.get_running_loop().create_future()
        queue.put_nowait((item, fut))
        return await fut

    async def _collect(self, queue: asyncio.Queue) -> list[tuple[Any, asyncio.Future]]:
        batch = [await queue.get()]
        deadline = time.monotonic() + self.window_s
        while len(batch) < self.max_batch_size:
            try:  # take what is already queued without waiting
                batch.append(queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), left))
            except (asyncio.TimeoutError, TimeoutError):
                break
        return [(it, f) for it, f in batch if not f.done()]  # drop requests whose client went away

    async def _run(self) -> None:
        queue = self._queue
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect(queue)
            if not batch:
                continue
            items = [it for it, _ in batch]
            self.batch_sizes.append(len(items))
            try:
                results = await loop.run_in_executor(self.executor, self.run_batch, items)
                if len(results) != len(items):
                    raise RuntimeError(f"run_batch returned {len(results)} results for {len(items)} items")
            except Exception as e:  # the whole batch failed: every waiter gets the error
                log.exception("batch of %d failed", len(items))
                for _, f in batch:
                    if not f.done():
                        f.set_exception(e)
                continue
            for (_, f), r in zip(batch, results):
                if f.done():
                    continue
                if isinstance(r, BaseException):  # a per-row failure
                    f.set_exception(r)
                else:
                    f.set_result(r)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)
