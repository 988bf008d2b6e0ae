"""The one batcher of the three servers: concurrent requests collected into batch calls.

``Batcher(run_batch)`` (static batches: creative, predictor): the first queued item opens a window of
``window_ms``; what is queued before it closes (up to ``max_batch_size``, one ``group_key`` per batch)
goes into ONE call ``run_batch(items) -> results`` in a dedicated single-thread executor, so the event
loop keeps answering and batches never overlap.

``Batcher(stepper=...)`` (token-level scheduling: the LLM server): rows join and leave between
decoding steps. The worker calls ``stepper.step(new_items) -> [(item, result), ...]`` in the same
executor, once per decoding step, admitting queued items while fewer than ``max_batch_size`` rows
are active; a row's future is resolved as soon as its own row finishes.

Both modes: a bounded queue (``QueueFull`` -> the route answers 429 + Retry-After); an item whose
request went away (client disconnected, deadline passed: its future is cancelled) is dropped before
it is computed; a result that is an exception fails that item only, and when ``run_batch`` itself
raises, each item of the batch is retried alone so one bad row cannot fail its neighbours.
Pure asyncio; knows nothing about models.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from hllm_creator.serving.metrics import BATCH_SECONDS, BATCH_SIZE, DROPPED_ROWS

log = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """More items are waiting than ``max_queue``: the caller answers 429 (``retry_after`` seconds)."""

    def __init__(self, msg: str, retry_after: int = 1):
        super().__init__(msg)
        self.retry_after = retry_after


class Stepper(Protocol):
    """What the token-level mode drives (``serving.llm_server.LLMEngine``)."""

    def step(self, new_items: list) -> list[tuple[Any, Any]]: ...  # finished (item, result | exc)
    def active(self) -> int: ...  # rows currently decoding


class _Recent(list):
    """A list of the last ``maxlen`` observations (never grows without bound)."""

    def __init__(self, maxlen: int = 1024):
        super().__init__()
        self.maxlen = maxlen

    def append(self, x) -> None:
        super().append(x)
        if len(self) > self.maxlen:
            del self[: len(self) - self.maxlen]


class Batcher:
    def __init__(self, run_batch: Callable[[list[Any]], Sequence[Any]] | None = None, *,
                 stepper: Stepper | None = None, max_batch_size: int = 8, window_ms: float = 20.0,
                 max_queue: int = 256, name: str = "batcher", group_key: Callable[[Any], Any] | None = None,
                 metrics_name: str | None = None):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if window_ms < 0:
            raise ValueError(f"window_ms must be >= 0, got {window_ms}")
        if (run_batch is None) == (stepper is None):
            raise ValueError("give exactly one of run_batch or stepper")
        self.run_batch, self.stepper = run_batch, stepper
        self.max_batch_size = max_batch_size
        self.window_s = window_ms / 1000.0
        self.max_queue = max_queue
        self.name = name
        self.group_key = group_key or (lambda _: None)
        self.metrics_name = metrics_name
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._queue: asyncio.Queue | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: asyncio.Task | None = None
        self._pending: list = []  # collected but held back (another group)
        self.batch_sizes: list[int] = _Recent()  # recent batch sizes / admissions (tests, stats)
        self.batches = 0  # counters for the server's lifetime
        self.items_done = 0
        self.dropped = 0  # items dropped before computing (client gone, deadline)
        self._busy_s = 0.0

    # -- submitting ------------------------------------------------------------------------------
    def _ensure_started(self) -> asyncio.Queue:
        loop = asyncio.get_running_loop()
        if self._queue is None or self._loop is not loop or self._worker is None or self._worker.done():
            if self._loop is not loop:
                self._queue = asyncio.Queue()
                self._pending = []
            self._loop = loop
            self._worker = loop.create_task(self._run(), name=f"batcher-{self.name}")
        return self._queue

    @property
    def pending(self) -> int:
        return (self._queue.qsize() if self._queue is not None else 0) + len(self._pending)

    def retry_after(self) -> int:
        """Seconds a rejected client should wait: about the time to work off the queue."""
        per_item = self._busy_s / max(1, self.items_done) if self.items_done else 1.0
        return max(1, min(60, math.ceil(per_item * self.pending / max(1, self.max_batch_size) * 2)))

    def _check_room(self, n: int) -> asyncio.Queue:
        queue = self._ensure_started()
        if self.pending + n > self.max_queue:
            raise QueueFull(f"{self.pending} items are already waiting (limit {self.max_queue})",
                            retry_after=self.retry_after())
        return queue

    async def submit(self, item: Any) -> Any:
        """Queue one item and wait for its result (an exception result is raised here)."""
        queue = self._check_room(1)
        fut = asyncio.get_running_loop().create_future()
        queue.put_nowait((item, fut))
        return await fut

    async def submit_many(self, items: list) -> list:
        """Queue all items (all or none: QueueFull) and wait for every result."""
        queue = self._check_room(len(items))
        loop = asyncio.get_running_loop()
        futs = [loop.create_future() for _ in items]
        for it, f in zip(items, futs):
            queue.put_nowait((it, f))
        try:
            return list(await asyncio.gather(*futs))
        finally:
            for f in futs:  # one failed or the request went away: drop the rest too
                f.cancel()

    # -- the worker ------------------------------------------------------------------------------
    def _take_nowait(self, queue: asyncio.Queue, room: int) -> list:
        got = []
        while len(got) < room:
            try:
                got.append(queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        return got

    async def _collect(self, queue: asyncio.Queue, room: int, enough: int, wait_first: bool) -> list:
        """Up to ``room`` live items: held-back ones first (no new window for them), else the
        queue, waiting at most the window for ``enough`` items."""
        if self._pending:
            batch, self._pending = self._pending[:room], self._pending[room:]
            return self._live(batch + self._take_nowait(queue, room - len(batch)))
        if not wait_first:
            return self._live(self._take_nowait(queue, room))
        batch = [await queue.get()]
        deadline = time.monotonic() + self.window_s
        while True:
            batch += self._take_nowait(queue, room - len(batch))
            left = deadline - time.monotonic()
            if len(batch) >= enough or left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), left))
            except TimeoutError:
                break
        return self._live(batch)

    def _live(self, batch: list) -> list:
        live = [(it, f) for it, f in batch if not f.done()]
        self._count_dropped(len(batch) - len(live))
        return live

    def _count_dropped(self, n: int) -> None:
        if n <= 0:
            return
        self.dropped += n
        if self.metrics_name is not None:
            DROPPED_ROWS.labels(model=self.metrics_name).inc(n)

    def _resolve(self, fut: asyncio.Future, r: Any) -> None:
        self.items_done += 1
        if fut.done():
            return
        if isinstance(r, BaseException):
            fut.set_exception(r)
        else:
            fut.set_result(r)

    def _observe(self, n: int, seconds: float | None) -> None:
        if self.metrics_name is None:
            return

        BATCH_SIZE.labels(model=self.metrics_name).observe(n)
        if seconds is not None:
            BATCH_SECONDS.labels(model=self.metrics_name).observe(seconds)

    async def _run(self) -> None:
        if self.stepper is not None:
            return await self._run_steps()
        queue = self._queue
        loop = asyncio.get_running_loop()
        while True:
            got = await self._collect(queue, self.max_batch_size * 4, self.max_batch_size, wait_first=True)
            if not got:
                continue
            key = self.group_key(got[0][0])
            batch = [p for p in got if self.group_key(p[0]) == key][: self.max_batch_size]
            ids = {id(p) for p in batch}
            self._pending = [p for p in got if id(p) not in ids] + self._pending
            items = [it for it, _ in batch]
            self.batch_sizes.append(len(items))
            self.batches += 1
            t0 = time.perf_counter()
            results = await loop.run_in_executor(self.executor, self._call, items)
            dt = time.perf_counter() - t0
            self._busy_s += dt
            self._observe(len(items), dt)
            for (_, f), r in zip(batch, results):
                self._resolve(f, r)

    def _call(self, items: list) -> list:
        """``run_batch`` with isolation: a batch that raises is retried item by item."""
        try:
            results = list(self.run_batch(items))
            if len(results) != len(items):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(items)} items")
            return results
        except Exception as e:
            if len(items) == 1:
                log.exception("%s: an item failed", self.name)
                return [e]
            log.warning("%s: a batch of %d failed (%s: %s); retrying its items one by one", self.name,
                        len(items), type(e).__name__, e)
            return [r for it in items for r in self._call([it])]

    async def _run_steps(self) -> None:
        queue = self._queue
        loop = asyncio.get_running_loop()
        st = self.stepper
        futs: dict[int, asyncio.Future] = {}
        while True:
            room = self.max_batch_size - st.active()
            new = await self._collect(queue, room, room, wait_first=st.active() == 0) if room > 0 else []
            if new:
                self.batch_sizes.append(len(new))
                self.batches += 1
                self._observe(len(new), None)
            for it, f in new:
                futs[id(it)] = f
                it.future_done = f.done  # the engine drops a row whose request went away
            if not new and st.active() == 0:
                continue
            t0 = time.perf_counter()
            try:
                finished = await loop.run_in_executor(self.executor, st.step, [it for it, _ in new])
            except Exception as e:  # a bug in the step itself: every active row fails, the loop goes on
                log.exception("%s: decoding step failed", self.name)
                finished = [(it, e) for it in getattr(st, "abort_all", lambda: [])()]
            self._busy_s += time.perf_counter() - t0
            for it, r in finished:
                f = futs.pop(id(it), None)
                if isinstance(r, asyncio.CancelledError):
                    self._count_dropped(1)
                if f is not None:
                    self._resolve(f, r)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)


class DynamicBatcher(Batcher):
    """The LLM server's historical name for :class:`Batcher` (same arguments)."""


class MicroBatcher(Batcher):
    """:class:`Batcher` with the creative/predictor call shape: ``submit(list) -> list``."""

    def __init__(self, fn: Callable[[list], list], max_batch: int = 32, max_wait_s: float = 0.005,
                 name: str = "model", group_key: Callable[[Any], Any] | None = None, max_queue: int = 1024):
        super().__init__(fn, max_batch_size=max(1, max_batch), window_ms=max_wait_s * 1000.0,
                         max_queue=max_queue, name=name, group_key=group_key, metrics_name=name)

    async def submit(self, items: list) -> list:  # type: ignore[override]
        return await self.submit_many(items)
